//! `lmms bench`: the training step of a preset's config with random weights runs on a
//! synthetic batch (LLaVA and Qwen2-VL), reports its figures, and keeps the batch for the
//! Python baseline; bad requests are refused with a message.

use assert_cmd::Command;
use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("lmms")
        .unwrap()
        .args(["-q", "bench", "--steps", "2", "--warmup", "1"])
        .args(args)
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let out = bench(&[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tiny_llava_lora_step() {
    let v = json(&["--model", "tiny", "--seq-len", "32", "--batch", "2"]);
    assert_eq!(v["family"], "llava");
    assert_eq!(v["tokens_per_step"], 64);
    assert_eq!(v["step_seconds"].as_array().unwrap().len(), 2);
    assert!(v["median_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 0);
    // LoRA r 8 on 7 linears x 2 layers plus the projector: a small part trains.
    let (total, trained) = (
        v["params_total"].as_u64().unwrap(),
        v["params_trainable"].as_u64().unwrap(),
    );
    assert!(trained > 0 && trained < total / 2, "{trained} of {total}");
    assert!(v["first_loss"].as_f64().unwrap().is_finite());
    assert!(v["flops_per_step"].as_f64().unwrap() > 0.0);
}

#[test]
fn full_and_checkpointed_and_text_only() {
    let full = json(&["--model", "tiny", "--strategy", "full", "--seq-len", "24"]);
    let lora = json(&["--model", "tiny", "--seq-len", "24"]);
    assert!(full["params_trainable"].as_u64() > lora["params_trainable"].as_u64());
    let ckpt = json(&[
        "--model",
        "tiny",
        "--seq-len",
        "24",
        "--gradient-checkpointing",
    ]);
    assert_eq!(ckpt["gradient_checkpointing"], true);
    // Same weights and batch (same seed): the same loss, checkpointed or not.
    let (a, b) = (
        lora["first_loss"].as_f64().unwrap(),
        ckpt["first_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    let text = json(&["--model", "tiny", "--seq-len", "16", "--images", "0"]);
    assert_eq!(text["media_tokens"], 0);
}

#[test]
fn qwen2_vl_from_a_model_dir_keeps_the_batch() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("example_data/tiny-qwen2-vl");
    let keep = tempfile::tempdir().unwrap();
    let v = json(&[
        "--model",
        model.to_str().unwrap(),
        "--seq-len",
        "40",
        "--image-size",
        "16",
        "--save-dir",
        keep.path().to_str().unwrap(),
    ]);
    assert_eq!(v["family"], "qwen2_vl");
    // 16 px / (4 px patches x 2 merge) = 2 cells a side: a 4x4 patch grid, 4 image tokens.
    assert_eq!(v["vision_patches"], 16);
    assert_eq!(v["media_tokens"], 6);
    assert!(keep.path().join("config.json").is_file());
    assert!(keep.path().join("inputs.safetensors").is_file());
}

#[test]
fn refuses_what_it_cannot_run() {
    let out = bench(&["--model", "tiny", "--seq-len", "10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--seq-len 10"), "{err}");
    let out = bench(&["--model", "no-such-model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a preset"), "{err}");
}
