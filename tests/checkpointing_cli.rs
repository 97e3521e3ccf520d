//! `lmms train --gradient-checkpointing` on every family's tiny model: the same seed gives the
//! same run as without it — the same loss and gradient norm at every step and the same adapter
//! — with LoRA dropout on (the reruns must draw the masks of the first forward), the projector
//! training (its gradient comes out of the bottom of the layer stack), full fine-tuning of the
//! LLM (embeddings and tied heads get gradients from two passes), QLoRA (its custom autodiff
//! matmul), and a trained vision tower (a second checkpointed stack under the LLM's).

use assert_cmd::Command;
use std::path::Path;

mod common;
use common::root;

/// `(loss, grad_norm)` of each training step.
fn steps(run: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["split"] == "train")
        .map(|m| {
            (
                m["loss"].as_f64().unwrap(),
                m["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn train(out: &Path, model: &str, data: &str, extra: &[&str]) -> Vec<(f64, f64)> {
    let r = root();
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("-q")
        .arg("train")
        .arg("--model")
        .arg(r.join("example_data").join(model))
        .arg("--data")
        .arg(r.join("example_data").join(data))
        .arg("--output-dir")
        .arg(out)
        .args(["--batch-size", "2", "--seed", "3", "--max-steps", "4"])
        .args(["--lr-scheduler", "constant"])
        .args(["--warmup-ratio", "0", "--logging-steps", "1"])
        .args(extra)
        .assert()
        .success();
    steps(out)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
}

/// Trains `model` twice, without and with checkpointing, and compares the runs.
fn same_run(model: &str, data: &str, extra: &[&str]) {
    let (plain, ckpt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = train(plain.path(), model, data, extra);
    let mut with = extra.to_vec();
    with.push("--gradient-checkpointing");
    let b = train(ckpt.path(), model, data, &with);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a.len(), b.len());
    for (i, ((la, ga), (lb, gb))) in a.iter().zip(&b).enumerate() {
        assert!(
            close(*la, *lb) && close(*ga, *gb),
            "{model} {extra:?}: step {} differs: loss {la} vs {lb}, grad norm {ga} vs {gb}",
            i + 1
        );
    }
    // The training moved (a step with no gradient would also compare equal).
    assert!(a.iter().all(|(_, g)| *g > 0.0), "{a:?}");
    let adapter = |d: &Path| {
        let f = d.join("adapter_model.safetensors");
        f.exists()
            .then(|| lmms_core::tensor_file::TensorFile::open(f).unwrap())
    };
    if let (Some(x), Some(y)) = (adapter(plain.path()), adapter(ckpt.path())) {
        for name in x.names() {
            let (u, v) = (x.f32(&name).unwrap(), y.f32(&name).unwrap());
            let worst = u
                .data
                .iter()
                .zip(&v.data)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{model}: {name} differs by {worst}");
        }
    }
}

const LORA: [&str; 8] = [
    "--lora-rank",
    "8",
    "--lora-alpha",
    "16",
    "--lora-dropout",
    "0.1",
    "--learning-rate",
    "1e-2",
];

#[test]
fn llava_lora_with_dropout_and_the_projector() {
    same_run("tiny-llava", "llava_dataset.json", &LORA);
}

#[test]
fn llava_full_fine_tuning() {
    same_run(
        "tiny-llava",
        "llava_dataset.json",
        &["--use-lora", "false", "--learning-rate", "1e-3"],
    );
}

#[test]
fn qwen2_vl_lora() {
    same_run("tiny-qwen2-vl", "llava_dataset.json", &LORA);
}

#[test]
fn mllama_lora_through_cross_attention() {
    same_run("tiny-mllama", "mllama_dataset.json", &LORA);
}

#[test]
fn internlm2_lora() {
    same_run("tiny-internlm2", "alpaca_dataset.json", &LORA);
}

#[test]
fn xcomposer2_partial_lora() {
    same_run("tiny-xcomposer2", "data.txt", &LORA);
}

#[test]
fn qwen_vl_lora() {
    same_run("tiny-qwen-vl", "llava_dataset.json", &LORA);
}

#[test]
fn llava_vision_tower_lora() {
    let mut args = LORA.to_vec();
    args.extend([
        "--train-vision-encoder",
        "true",
        "--use-vision-lora",
        "true",
    ]);
    same_run("tiny-llava", "llava_dataset.json", &args);
}

#[test]
fn qwen2_vl_vision_tower_full() {
    let mut args = LORA.to_vec();
    args.extend(["--train-vision-encoder", "true"]);
    same_run("tiny-qwen2-vl", "llava_dataset.json", &args);
}

#[test]
fn llava_qlora() {
    let mut args = LORA.to_vec();
    args.push("--q-lora");
    same_run("tiny-llava", "llava_dataset.json", &args);
}
