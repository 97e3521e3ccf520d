//! End-to-end LoRA training of the tiny Qwen-VL-Chat in `example_data/tiny-qwen-vl`
//! (`tools/fixtures/qwen_vl_example.py`, tokenizer `qwen.tiktoken`) on the example LLaVA-format
//! data (images, two images, text-only, a system prompt): the loss falls and a PEFT adapter is
//! written under the remote code's module names (`transformer.h.N.attn.c_attn`).

use assert_cmd::Command;

mod common;
use common::{root, train_losses};

#[test]
fn qwen_vl_lora_run_reduces_loss_and_writes_a_peft_adapter() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let r = root();
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("train")
        .arg("--model")
        .arg(r.join("example_data/tiny-qwen-vl"))
        .arg("--data")
        .arg(r.join("example_data/llava_dataset.json"))
        .arg("--output-dir")
        .arg(&out)
        .args(["--batch-size", "2", "--seed", "7", "--use-lora"])
        .args([
            "--lora-rank",
            "8",
            "--lora-alpha",
            "16",
            "--lora-dropout",
            "0",
        ])
        .args(["--learning-rate", "3e-2", "--lr-scheduler", "constant"])
        .args(["--max-steps", "20", "--warmup-ratio", "0"])
        .assert()
        .success();
    let l = train_losses(&out);
    assert_eq!(l.len(), 20, "{l:?}");
    let first: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.9, "loss did not fall: {l:?}");
    let weights =
        lmms_core::tensor_file::TensorFile::open(out.join("adapter_model.safetensors")).unwrap();
    assert!(
        weights
            .names()
            .iter()
            .any(|n| n.starts_with("base_model.model.transformer.h.0.attn.c_attn.lora_A")),
        "{:?}",
        weights.names()
    );
}
