//! End-to-end InternLM-XComposer2-VL training on the tiny model in `example_data/tiny-xcomposer2`
//! (`tools/fixtures/xcomposer2_example.py`): the official LoRA recipe (r 64 on
//! wqkv/wo/w1/w2/w3, ViT and projector frozen, PLoRA part of the frozen base) on the `data.txt`
//! mixture of two JSON files. Each epoch draws the mixture's 10 + 2 samples (3 steps of 4), the
//! loss falls, and a PEFT adapter naming the five modules comes out.

use assert_cmd::Command;

mod common;
use common::root;

#[test]
fn lora_on_a_data_txt_mixture() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::cargo_bin("lmms")
        .unwrap()
        .arg("train")
        .arg("--model")
        .arg(root().join("example_data/tiny-xcomposer2"))
        .arg("--data")
        .arg(root().join("example_data/data.txt"))
        .arg("--output-dir")
        .arg(out.path())
        .args([
            "--use-lora",
            "--lora-rank",
            "64",
            "--lora-alpha",
            "64",
            "--lora-target-modules",
            "wqkv,wo,w1,w2,w3",
            "--train-vision-projector",
            "false",
            "--epochs",
            "4",
            "--batch-size",
            "4",
            "--learning-rate",
            "2e-3",
            "--lr-scheduler",
            "constant",
            "--logging-steps",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["split"] == "train")
        .collect();
    // 12 samples per epoch (10 from llava_dataset.json, 2 from xcomposer_dataset.json) in
    // batches of 4: 3 steps per epoch, 12 in 4 epochs.
    assert_eq!(rows.len(), 12, "{metrics}");
    assert_eq!(rows[2]["epoch"].as_f64(), Some(1.0), "{metrics}");
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    let first: f64 = rows[..3].iter().map(loss).sum::<f64>() / 3.0;
    let last: f64 = rows[9..].iter().map(loss).sum::<f64>() / 3.0;
    assert!(last < first - 0.5, "loss {first} -> {last}: {metrics}");
    let config = std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap();
    for m in [
        "attention\\\\.wqkv",
        "attention\\\\.wo",
        "feed_forward\\\\.w2",
    ] {
        assert!(config.contains(m), "{m} not in {config}");
    }
    assert!(out.path().join("adapter_model.safetensors").is_file());
}
