//! End-to-end LoRA training of the tiny Llama-3.2-Vision in `example_data/tiny-mllama`
//! (`tools/fixtures/mllama_example.py`) on `example_data/mllama_dataset.json` (one image, two
//! images, text only with a system prompt, an image after the text): the loss starts where an
//! untrained model's does (not 0: the label mask keeps the replies) and falls, the PEFT adapter
//! names the self- and cross-attention layers as transformers does, and `lmms eval` scores it.
//! (transformers + peft reproduce `lmms eval`'s per-sample losses of such an adapter to 1e-7:
//! `tools/fixtures/mllama_example.py --check ADAPTER`.)

use assert_cmd::Command;
use std::path::Path;

mod common;
use common::{root, train_losses};

fn train(out: &Path, extra: &[&str]) -> Vec<f64> {
    let r = root();
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("train")
        .arg("--model")
        .arg(r.join("example_data/tiny-mllama"))
        .arg("--data")
        .arg(r.join("example_data/mllama_dataset.json"))
        .arg("--output-dir")
        .arg(out)
        .args(["--batch-size", "2", "--seed", "7"])
        .args([
            "--lora-rank",
            "8",
            "--lora-alpha",
            "16",
            "--lora-dropout",
            "0",
        ])
        .args(["--learning-rate", "1e-2", "--lr-scheduler", "constant"])
        .args(["--max-steps", "20", "--warmup-ratio", "0"])
        .args(extra)
        .assert()
        .success();
    let l = train_losses(out);
    assert_eq!(l.len(), 20, "{l:?}");
    // Random weights over 511 tokens: about ln(511) = 6.2 at first, never 0.
    assert!(l[0] > 4.0, "step 1 loss {} (label mask?): {l:?}", l[0]);
    let first: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.85, "loss did not fall: {l:?}");
    l
}

fn adapter_keys(out: &Path) -> Vec<String> {
    lmms_core::tensor_file::TensorFile::open(out.join("adapter_model.safetensors"))
        .unwrap()
        .names()
}

fn eval(adapter: Option<&Path>) -> serde_json::Value {
    let r = root();
    let mut cmd = Command::cargo_bin("lmms").unwrap();
    cmd.arg("eval")
        .arg("--model")
        .arg(r.join("example_data/tiny-mllama"))
        .arg("--data")
        .arg(r.join("example_data/mllama_dataset.json"))
        .arg("--json");
    if let Some(a) = adapter {
        cmd.arg("--adapter").arg(a);
    }
    let out = cmd.assert().success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn mllama_lora_run_reduces_loss_and_eval_scores_the_adapter() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    train(&out, &["--use-lora"]);
    let keys = adapter_keys(&out);
    for want in [
        "base_model.model.model.language_model.layers.1.cross_attn.q_proj.lora_A.weight",
        "base_model.model.model.language_model.layers.0.self_attn.v_proj.lora_B.weight",
        "base_model.model.model.language_model.layers.3.mlp.down_proj.lora_A.weight",
        // The projector trains fully next to LoRA: PEFT's modules_to_save.
        "base_model.model.model.multi_modal_projector.weight",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} not in {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.contains("lm_head")), "{keys:?}");
    let base = eval(None);
    let tuned = eval(Some(&out));
    let samples = tuned["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 6);
    assert!(
        samples
            .iter()
            .all(|s| s["trained_tokens"].as_u64() > Some(0))
    );
    let (b, t) = (
        base["loss"].as_f64().unwrap(),
        tuned["loss"].as_f64().unwrap(),
    );
    assert!(t < b * 0.8, "eval loss base {b}, with the adapter {t}");
}

#[test]
fn mllama_vision_lora_targets_both_vision_encoders() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    train(
        &out,
        &["--use-lora", "--train-vision-encoder", "--use-vision-lora"],
    );
    let keys = adapter_keys(&out);
    for want in [
        "base_model.model.model.vision_model.transformer.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.vision_model.global_transformer.layers.0.mlp.fc2.lora_B.weight",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} not in {keys:?}");
    }
}

/// QLoRA: the LLM's frozen linears (self- and cross-attention, MLPs; not the head) in 4 bits.
#[test]
fn mllama_qlora_run_reduces_loss() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    train(&out, &["--q-lora"]);
    let keys = adapter_keys(&out);
    assert!(
        keys.iter()
            .any(|k| k.contains("layers.3.cross_attn.o_proj.lora_B")),
        "{keys:?}"
    );
}
