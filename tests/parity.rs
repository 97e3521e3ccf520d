//! `lmms parity` on the committed fixtures (made by `tools/fixtures/generate.py` from HF
//! transformers + peft), and on broken copies of them, which must fail loudly.

use assert_cmd::Command;
use lmms_core::tensor_file::{HostTensor, TensorFile, write_f32};
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn lmms() -> Command {
    Command::cargo_bin("lmms").unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn passes(name: &str) {
    lmms()
        .arg("parity")
        .arg(fixture(name))
        .assert()
        .success()
        .stdout(predicate::str::contains("FAIL").not());
}

#[test]
fn llava_1_5() {
    passes("llava-1.5");
}

#[test]
fn llava_1_5_transformers5_layout_and_old_config_keys() {
    passes("llava-1.5-other-layout");
}

#[test]
fn llava_interleave_siglip_qwen2_vision_lora() {
    let out = lmms()
        .args(["-v", "parity"])
        .arg(fixture("llava-interleave"))
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("vision_tower.encoder.layers.1.self_attn.v_proj.lora_B.weight"),
        "{text}"
    );
    assert!(
        text.contains("lora.grad.") && !text.contains("FAIL"),
        "{text}"
    );
}

#[test]
fn llava_next_anyres_unpad_newline() {
    passes("llava-next");
}

#[test]
fn llava_onevision_anyres_max_and_video() {
    passes("llava-onevision");
}

#[test]
fn llava_next_video_pooled_video() {
    passes("llava-next-video");
}

#[test]
fn several_fixtures_in_one_call() {
    lmms()
        .arg("parity")
        .arg(fixture("llava-1.5"))
        .arg(fixture("llava-next"))
        .assert()
        .success()
        .stdout(predicate::str::contains("lora.grad (28 tensors, worst)"));
}

#[test]
fn a_wrong_rope_theta_fails_parity() {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llava-1.5"), d.path());
    let cfg = d.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("50000.0", "10000.0");
    std::fs::write(&cfg, text).unwrap();
    lmms()
        .arg("parity")
        .arg(d.path())
        .assert()
        .failure()
        .stdout(predicate::str::contains("FAIL"))
        .stderr(predicate::str::contains(
            "1 of 1 fixture directories failed",
        ));
}

/// Rewrites `model.safetensors` without `remove` and with `extra` added.
fn rewrite_weights(dir: &Path, remove: &str, extra: Option<&str>) {
    let path = dir.join("model.safetensors");
    let file = TensorFile::open(&path).unwrap();
    let mut tensors: Vec<(String, HostTensor<f32>)> = file
        .names()
        .into_iter()
        .filter(|n| n != remove)
        .map(|n| {
            let t = file.f32(&n).unwrap();
            (n, t)
        })
        .collect();
    if let Some(name) = extra {
        tensors.push((
            name.to_string(),
            HostTensor {
                shape: vec![2],
                data: vec![0.0; 2],
            },
        ));
    }
    drop(file); // unmap before the file is replaced
    write_f32(&path, &tensors).unwrap();
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llava-1.5"), d.path());
    rewrite_weights(
        d.path(),
        "language_model.model.layers.1.mlp.up_proj.weight",
        None,
    );
    lmms()
        .arg("parity")
        .arg(d.path())
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("language_model.model.layers.1.mlp.up_proj.weight")
                .and(predicate::str::contains("missing")),
        );
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llava-1.5"), d.path());
    rewrite_weights(
        d.path(),
        "",
        Some("language_model.model.layers.9.extra.weight"),
    );
    lmms()
        .arg("parity")
        .arg(d.path())
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("language_model.model.layers.9.extra.weight")
                .and(predicate::str::contains("not used by the model")),
        );
}

#[test]
fn sharded_checkpoints_load() {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llava-1.5"), d.path());
    let path = d.path().join("model.safetensors");
    let file = TensorFile::open(&path).unwrap();
    let names = file.names();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [first, second].iter().enumerate() {
        let shard = format!("model-{:05}-of-00002.safetensors", i + 1);
        let tensors: Vec<(String, HostTensor<f32>)> = part
            .iter()
            .map(|n| (n.clone(), file.f32(n).unwrap()))
            .collect();
        write_f32(&d.path().join(&shard), &tensors).unwrap();
        for n in part.iter() {
            map.insert(n.clone(), serde_json::Value::String(shard.clone()));
        }
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    lmms()
        .arg("parity")
        .arg(d.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("FAIL").not());
}
