//! End-to-end LoRA training of the tiny Qwen2-VL in `example_data/tiny-qwen2-vl`
//! (`tools/fixtures/qwen2_vl.py --example`) on the example LLaVA-format data: the loss falls and
//! a PEFT adapter is written under transformers' runtime module names.

use assert_cmd::Command;

mod common;
use common::{root, train_losses};

#[test]
fn qwen2_vl_lora_run_reduces_loss_and_writes_a_peft_adapter() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let r = root();
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("train")
        .arg("--model")
        .arg(r.join("example_data/tiny-qwen2-vl"))
        .arg("--data")
        .arg(r.join("example_data/llava_dataset.json"))
        .arg("--output-dir")
        .arg(&out)
        .args([
            "--batch-size",
            "2",
            "--seed",
            "7",
            "--use-lora",
            "--lora-rank",
            "8",
        ])
        .args([
            "--lora-alpha",
            "16",
            "--lora-dropout",
            "0",
            "--learning-rate",
            "3e-2",
        ])
        .args([
            "--lr-scheduler",
            "constant",
            "--max-steps",
            "20",
            "--warmup-ratio",
            "0",
        ])
        .assert()
        .success();
    let l = train_losses(&out);
    assert_eq!(l.len(), 20, "{l:?}");
    let first: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.85, "loss did not fall: {l:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    let targets = config["target_modules"].as_str().unwrap();
    assert!(
        targets.contains("model\\.language_model\\.layers"),
        "{targets}"
    );
    let weights =
        lmms_core::tensor_file::TensorFile::open(out.join("adapter_model.safetensors")).unwrap();
    assert!(
        weights.names().iter().any(|n| n
            .starts_with("base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A")),
        "{:?}",
        weights.names()
    );
}

/// Videos (`example_data/llava_video_dataset.json`: one video, two videos, a text-only sample)
/// with the pixel bounds from a TOML config: the loss falls.
#[test]
fn qwen2_vl_video_run_with_pixel_bounds_reduces_loss() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let config = d.path().join("run.toml");
    std::fs::write(&config, "max_pixels = 1024\nvideo_max_pixels = 1024\n").unwrap();
    let r = root();
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("train")
        .arg("--model")
        .arg(r.join("example_data/tiny-qwen2-vl"))
        .arg("--data")
        .arg(r.join("example_data/llava_video_dataset.json"))
        .arg("--output-dir")
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .args(["--batch-size", "2", "--seed", "7", "--use-lora"])
        .args(["--learning-rate", "3e-2", "--lr-scheduler", "constant"])
        .args([
            "--max-steps",
            "20",
            "--warmup-ratio",
            "0",
            "--min-pixels",
            "256",
        ])
        .assert()
        .success();
    let l = train_losses(&out);
    assert_eq!(l.len(), 20, "{l:?}");
    let first: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.85, "loss did not fall: {l:?}");
}
