//! `lmms train --q-lora` end to end with the real binary on the tiny LLaVA in
//! `example_data/tiny-llava`: the LLM's frozen linear weights held in 4 bits, LoRA on top.

use assert_cmd::Command;
use lmms_core::tensor_file::TensorFile;

mod common;
use common::{root, train_losses};

fn lmms() -> Command {
    Command::cargo_bin("lmms").unwrap()
}

#[test]
fn qlora_run_reduces_loss_and_writes_a_peft_adapter() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let r = root();
    lmms()
        .arg("train")
        .arg("--model")
        .arg(r.join("example_data/tiny-llava"))
        .arg("--data")
        .arg(r.join("example_data/llava_dataset.json"))
        .args([
            "--q-lora",
            "--lora-rank",
            "8",
            "--lora-alpha",
            "16",
            "--lora-dropout",
            "0",
            "--learning-rate",
            "3e-2",
            "--lr-scheduler",
            "constant",
            "--max-steps",
            "30",
            "--batch-size",
            "2",
            "--output-dir",
        ])
        .arg(&out)
        .assert()
        .success();
    let losses = train_losses(&out);
    assert_eq!(losses.len(), 30);
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let (first, last) = (mean(&losses[..3]), mean(&losses[27..]));
    assert!(last < first * 0.8, "loss did not fall: {losses:?}");

    // A PEFT adapter, as for LoRA: LoRA tensors of the LLM (and the trained projector).
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 8);
    let names = TensorFile::open(out.join("adapter_model.safetensors"))
        .unwrap()
        .names();
    let lora_b = names
        .iter()
        .filter(|n| n.ends_with(".lora_B.weight"))
        .count();
    assert!(lora_b >= 14, "{names:?}");
    assert!(
        names.iter().all(|n| !n.contains("q4")),
        "quantized tensors leaked into the adapter: {names:?}"
    );
}
