//! What several end-to-end tests share: the repository root and the training losses a run
//! wrote. (Each test binary uses part of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (the tests run from `cli/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `split: train` losses of `run/metrics.jsonl`, in step order.
pub fn train_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["split"] == "train")
        .map(|m| m["loss"].as_f64().unwrap())
        .collect()
}
