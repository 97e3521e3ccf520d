//! End-to-end training with the real binary on `example_data/` and the tiny LLaVA in
//! `example_data/tiny-llava` (made by `tools/fixtures/example_model.py`).

use assert_cmd::Command;
use lmms_core::tensor_file::TensorFile;
use predicates::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::root;

fn lmms() -> Command {
    Command::cargo_bin("lmms").unwrap()
}

/// `lmms train` on the example data with the given extra flags.
fn train_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let r = root();
    let mut a: Vec<String> = vec![
        "train".into(),
        "--model".into(),
        r.join("example_data/tiny-llava").display().to_string(),
        "--data".into(),
        r.join("example_data/llava_dataset.json")
            .display()
            .to_string(),
        "--output-dir".into(),
        out.display().to_string(),
        "--batch-size".into(),
        "2".into(),
        "--seed".into(),
        "7".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn losses(out: &Path) -> Vec<f64> {
    metrics(out)
        .iter()
        .filter(|m| m["split"] == "train")
        .map(|m| m["loss"].as_f64().unwrap())
        .collect()
}

const LORA: &[&str] = &[
    "--use-lora",
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
    "8",
    "--warmup-ratio",
    "0",
];

#[test]
fn lora_run_reduces_loss_and_writes_a_peft_adapter() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut flags = LORA.to_vec();
    let i = flags.iter().position(|f| *f == "--max-steps").unwrap();
    flags[i + 1] = "30";
    lmms()
        .args(train_args(&out, &flags))
        .assert()
        .success()
        .stdout(predicate::str::contains("trained 30 steps"));
    let l = losses(&out);
    assert_eq!(l.len(), 30);
    // Ten epochs over the six samples: compare the first and the last epoch (3 steps each).
    let (first, last) = (l[..3].iter().sum::<f64>(), l[27..].iter().sum::<f64>());
    assert!(last < first * 0.8, "loss did not fall: {l:?}");
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "loss.svg",
        "lmms_train_config.toml",
        "tokenizer.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let m = &metrics(&out)[0];
    for k in [
        "step",
        "loss",
        "lr",
        "split",
        "grad_norm",
        "tokens_per_second",
    ] {
        assert!(!m[k].is_null(), "metrics lack {k}: {m}");
    }
    // `lmms merge` folds the adapter in: the merged model alone evaluates like base + adapter.
    let merged = d.path().join("merged");
    lmms()
        .args(["merge", "--base"])
        .arg(root().join("example_data/tiny-llava"))
        .arg("--adapter")
        .arg(&out)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    let eval = |extra: &[&Path]| -> f64 {
        let mut cmd = lmms();
        cmd.args(["eval", "--json", "--data"])
            .arg(root().join("example_data/llava_dataset.json"));
        cmd.arg("--model").arg(extra[0]);
        if let Some(a) = extra.get(1) {
            cmd.arg("--adapter").arg(a);
        }
        let o = cmd.assert().success();
        let v: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
        v["loss"].as_f64().unwrap()
    };
    let base = root().join("example_data/tiny-llava");
    let (with_adapter, merged_loss, base_loss) =
        (eval(&[&base, &out]), eval(&[&merged]), eval(&[&base]));
    assert!(
        (with_adapter - merged_loss).abs() < 1e-4,
        "{with_adapter} vs {merged_loss}"
    );
    assert!(
        with_adapter < base_loss,
        "{with_adapter} vs base {base_loss}"
    );

    // The same output dir is not overwritten without --resume.
    lmms()
        .args(train_args(&out, LORA))
        .assert()
        .failure()
        .stderr(predicate::str::contains("already holds a training run"));
}

#[test]
fn full_run_trains_the_llm_and_keeps_the_frozen_vision_tower_bitwise() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("full");
    lmms()
        .args(train_args(
            &out,
            &[
                "--learning-rate",
                "1e-3",
                "--max-steps",
                "6",
                "--warmup-ratio",
                "0",
            ],
        ))
        .assert()
        .success();
    let l = losses(&out);
    assert!(l[l.len() - 1] < l[0], "loss did not fall: {l:?}");
    let base = TensorFile::open(root().join("example_data/tiny-llava/model.safetensors")).unwrap();
    let trained = TensorFile::open(out.join("model.safetensors")).unwrap();
    assert_eq!(
        base.names(),
        trained.names(),
        "the full checkpoint keeps the base's tensor names"
    );
    let (mut same, mut changed) = (0, 0);
    for name in base.names() {
        let (a, b) = (base.f32(&name).unwrap(), trained.f32(&name).unwrap());
        assert_eq!(a.shape, b.shape, "{name}");
        if name.starts_with("vision_tower") {
            assert_eq!(a.data, b.data, "{name} is frozen but changed");
            same += 1;
        } else if a.data != b.data {
            changed += 1;
        }
    }
    assert!(
        same > 10 && changed > 10,
        "{same} frozen, {changed} trained"
    );
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let flags: Vec<&str> = LORA
        .iter()
        .copied()
        .chain(["--save-steps", "4", "--save-total-limit", "5"])
        .collect();
    let straight = d.path().join("straight");
    lmms()
        .args(train_args(&straight, &flags))
        .assert()
        .success();

    // Kill a second run with SIGKILL once its step-4 checkpoint exists; whatever it wrote
    // after that checkpoint is what a later kill could have left, so drop it.
    let resumed = d.path().join("resumed");
    let bin = assert_cmd::cargo::cargo_bin("lmms");
    let mut child = std::process::Command::new(bin)
        .args(train_args(&resumed, &flags))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = resumed.join("checkpoint-4/trainer_state.json");
    let t0 = Instant::now();
    while !ckpt.is_file() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ckpt.is_file(), "no checkpoint-4 was written");
    let _ = std::fs::remove_dir_all(resumed.join("checkpoint-8"));
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "model.safetensors",
    ] {
        let _ = std::fs::remove_file(resumed.join(f));
    }

    let mut resume = flags.clone();
    resume.push("--resume");
    lmms()
        .args(train_args(&resumed, &resume))
        .assert()
        .success();
    assert_eq!(losses(&straight), losses(&resumed));
    let a = TensorFile::open(straight.join("adapter_model.safetensors")).unwrap();
    let b = TensorFile::open(resumed.join("adapter_model.safetensors")).unwrap();
    assert_eq!(a.names(), b.names());
    for n in a.names() {
        assert_eq!(
            a.f32(&n).unwrap().data,
            b.f32(&n).unwrap().data,
            "{n} differs after resume"
        );
    }
}

#[test]
fn bad_data_names_the_file_and_sample() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("bad.json");
    std::fs::write(
        &data,
        r#"[{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            {"image": "nope.png", "conversations": [{"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "x"}]}]"#,
    )
    .unwrap();
    let mut args = train_args(&d.path().join("out"), LORA);
    let i = args.iter().position(|a| a == "--data").unwrap();
    args[i + 1] = data.display().to_string();
    lmms().args(args).assert().failure().stderr(
        predicate::str::contains("bad.json")
            .and(predicate::str::contains("sample 1"))
            .and(predicate::str::contains("nope.png")),
    );
}

#[test]
fn data_inspect_shows_the_collated_sample() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("batch.safetensors");
    lmms()
        .args(["data", "inspect", "--index", "1", "--decode", "--model"])
        .arg(root().join("example_data/tiny-llava"))
        .arg("--data")
        .arg(root().join("example_data/llava_dataset.json"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("pixel_values         f32 [1, 3, 32, 32]")
                .and(predicate::str::contains("<image>×16"))
                .and(predicate::str::contains("«")),
        );
    let f = TensorFile::open(&out).unwrap();
    let ids = f.i64("input_ids").unwrap();
    let labels = f.i64("labels").unwrap();
    assert_eq!(ids.shape, labels.shape);
    assert_eq!(
        ids.data.iter().filter(|&&t| t == 4).count(),
        16,
        "16 image tokens"
    );
    assert!(labels.data.iter().any(|&l| l != -100));
    lmms()
        .args(["data", "inspect", "--index", "99", "--model"])
        .arg(root().join("example_data/tiny-llava"))
        .arg("--data")
        .arg(root().join("example_data/llava_dataset.json"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("has 6 samples, no sample 99"));
}

#[test]
fn every_ready_made_config_parses_and_one_trains() {
    let d = tempfile::tempdir().unwrap();
    let list = lmms().args(["configs", "list"]).assert().success();
    let names: Vec<String> = String::from_utf8(list.get_output().stdout.clone())
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"llava-1.5-7b_lora".to_string()),
        "{names:?}"
    );
    for name in &names {
        lmms()
            .args(["configs", "copy", name])
            .arg(d.path())
            .assert()
            .success();
        let text = std::fs::read_to_string(d.path().join(format!("{name}.toml"))).unwrap();
        // The file is a valid `lmms train --config`: point it at the tiny model and train.
        let cfg = d.path().join(format!("{name}.run.toml"));
        let text = text
            .replace("max_grad_norm", "max_steps = 1\nmax_grad_norm")
            .replace("output_dir = ", "# output_dir = ");
        std::fs::write(&cfg, text).unwrap();
        lmms()
            .args(["train", "--config"])
            .arg(&cfg)
            .arg("--model")
            .arg(root().join("example_data/tiny-llava"))
            .arg("--data")
            .arg(root().join("example_data/llava_dataset.json"))
            .arg("--output-dir")
            .arg(d.path().join(name))
            .assert()
            .success()
            .stdout(predicate::str::contains("trained 1 steps"));
    }
    lmms()
        .args(["configs", "copy", "llava-1.5-7b_lora"])
        .arg(d.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
}

#[test]
fn bf16_mixed_precision_lora_and_full_runs_train() {
    let d = tempfile::tempdir().unwrap();
    for (name, extra) in [("lora", &[][..]), ("full", &["--use-lora", "false"][..])] {
        let out = d.path().join(name);
        let mut args = vec!["train".to_string(), "--config".into()];
        args.push(
            root()
                .join("example_data/tiny-llava-lora.toml")
                .display()
                .to_string(),
        );
        for a in ["--bf16", "--max-steps", "30", "--output-dir"] {
            args.push(a.into());
        }
        args.push(out.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        lmms().current_dir(root()).args(&args).assert().success();
        let l = losses(&out);
        let (first, last) = (l[..3].iter().sum::<f64>(), l[27..].iter().sum::<f64>());
        assert!(last < first * 0.9, "{name}: loss did not fall: {l:?}");
    }
    // Trained weights are kept in f32: the adapter is f32 and loads back.
    let f = TensorFile::open(d.path().join("lora/adapter_model.safetensors")).unwrap();
    assert!(!f.names().is_empty());
}

#[cfg(unix)]
#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_continues() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut flags = LORA.to_vec();
    let i = flags.iter().position(|f| *f == "--max-steps").unwrap();
    flags[i + 1] = "100000";
    let bin = assert_cmd::cargo::cargo_bin("lmms");
    let child = std::process::Command::new(bin)
        .args(train_args(&out, &flags))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it train a little, then interrupt it as Ctrl-C does.
    let metrics = out.join("metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 3
        && t0.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("interrupted after step") && stderr.contains("--resume"),
        "{stderr}"
    );
    let ckpts: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .collect();
    assert_eq!(ckpts.len(), 1, "one checkpoint at the interruption");
    assert!(
        !out.join("adapter_model.safetensors").exists(),
        "no final adapter from an interrupted run"
    );
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("nan");
    let mut flags = LORA.to_vec();
    let i = flags.iter().position(|f| *f == "--learning-rate").unwrap();
    flags[i + 1] = "1e30";
    let j = flags.iter().position(|f| *f == "--max-steps").unwrap();
    flags[j + 1] = "20";
    flags.extend(["--max-grad-norm", "0"]);
    lmms()
        .args(train_args(&out, &flags))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("training stopped")
                .and(predicate::str::contains("the loss is")),
        );
    assert!(!out.join("adapter_model.safetensors").exists());
}
