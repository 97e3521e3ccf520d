//! The XTuner personal-assistant tutorial with lmms commands only, on the tiny InternLM2 in
//! `example_data/tiny-internlm2`: make a self-cognition dataset, QLoRA-train, merge, chat. The
//! merged model's greedy answer to an identity question names the new assistant; the base's
//! does not.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

mod common;
use common::{root, train_losses};

fn tiny() -> PathBuf {
    root().join("example_data/tiny-internlm2")
}

fn lmms() -> Command {
    Command::cargo_bin("lmms").unwrap()
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The assistant's reply to one question (greedy).
fn answer(model: &Path, adapter: Option<&Path>, question: &str) -> String {
    let mut cmd = lmms();
    cmd.arg("chat").arg("--model").arg(model);
    if let Some(a) = adapter {
        cmd.arg("--adapter").arg(a);
    }
    cmd.args(["--max-new-tokens", "40", "-m", question]);
    let text = stdout(&mut cmd);
    text.lines()
        .find_map(|l| l.strip_prefix("assistant: "))
        .unwrap_or_else(|| panic!("no reply in {text:?}"))
        .to_string()
}

#[test]
fn identity_qlora_merge_and_chat() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("identity.json");
    let made = stdout(
        lmms()
            .args(["data", "make-identity", "--name", "Lumi"])
            .args([
                "--author",
                "the Acme lab",
                "-n",
                "60",
                "--language",
                "en",
                "--out",
                data.to_str().unwrap(),
            ]),
    );
    assert!(made.contains("wrote 60 identity conversations"), "{made}");
    let samples: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    assert_eq!(samples.len(), 60);
    assert!(samples.iter().all(|s| {
        s["conversations"][1]["value"]
            .as_str()
            .unwrap()
            .contains("Lumi")
    }));
    // The file is not replaced without --force.
    let again = lmms()
        .args([
            "data",
            "make-identity",
            "--name",
            "X",
            "--author",
            "Y",
            "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let question = "Who are you?";
    let before = answer(&tiny(), None, question);
    assert!(!before.contains("Lumi"), "{before}");

    let run = d.path().join("run");
    let trained = stdout(
        lmms()
            .arg("train")
            .arg("--model")
            .arg(tiny())
            .arg("--data")
            .arg(&data)
            .arg("--output-dir")
            .arg(&run)
            .args([
                "--q-lora",
                "--lora-rank",
                "16",
                "--lora-alpha",
                "32",
                "--lora-dropout",
                "0",
                "--learning-rate",
                "2e-2",
                "--epochs",
                "8",
                "--batch-size",
                "4",
            ]),
    );
    assert!(trained.contains("trained 120 steps"), "{trained}");
    let l = train_losses(&run);
    let (first, last) = (l[0], l[l.len() - 1]);
    // The answers vary (several templates per question), so the loss settles well above 0.
    assert!(last < first * 0.3, "loss {first} -> {last}");
    // The adapter is PEFT's, on InternLM2's fused attention and MLP linears.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("adapter_config.json")).unwrap())
            .unwrap();
    let targets = config["target_modules"].to_string();
    for m in ["wqkv", "wo", "w1", "w2", "w3"] {
        assert!(targets.contains(m), "{targets}");
    }
    // `all-linear` leaves the LM head (InternLM2's `output`) alone, as PEFT does.
    assert!(!targets.contains("output"), "{targets}");

    // The adapter on the base answers with the new identity, and so does the merged model.
    let with_adapter = answer(&tiny(), Some(&run), question);
    assert!(with_adapter.contains("Lumi"), "{with_adapter}");
    let merged = d.path().join("merged");
    stdout(
        lmms()
            .arg("merge")
            .arg("--base")
            .arg(tiny())
            .arg("--adapter")
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    let after = answer(&merged, None, question);
    assert!(after.contains("Lumi"), "{after}");
    assert_eq!(after, with_adapter);
}

#[test]
fn alpaca_and_openai_data_train_a_chat_llm() {
    for data in ["alpaca_dataset.json", "openai_messages.jsonl"] {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let out = stdout(
            lmms()
                .arg("train")
                .arg("--model")
                .arg(tiny())
                .arg("--data")
                .arg(root().join("example_data").join(data))
                .arg("--output-dir")
                .arg(&run)
                .args([
                    "--use-lora",
                    "--lora-dropout",
                    "0",
                    "--learning-rate",
                    "1e-2",
                    "--max-steps",
                    "12",
                    "--batch-size",
                    "3",
                ]),
        );
        assert!(out.contains("trained 12 steps"), "{data}: {out}");
        let l = train_losses(&run);
        assert!(l[l.len() - 1] < l[0], "{data}: {l:?}");
    }
}

#[test]
fn chat_refuses_bad_sampling_options() {
    let out = lmms()
        .arg("chat")
        .arg("--model")
        .arg(tiny())
        .args(["--top-p", "0", "-m", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--top-p"));
}
