//! End-to-end tests of the `lmms` binary.

use assert_cmd::Command;
use predicates::prelude::*;

/// Every model id the issue tracker promises, from lmms-finetune's list plus InternLM.
const EXPECTED_IDS: &[&str] = &[
    "llava-1.5-7b",
    "llava-1.5-13b",
    "llava-1.6-vicuna-7b",
    "llava-1.6-vicuna-13b",
    "llava-next-video-7b",
    "llava-next-video-7b-32k",
    "llava-next-video-34b",
    "llava-interleave-qwen-0.5b",
    "llava-interleave-qwen-7b",
    "llava-onevision-0.5b-ov",
    "llava-onevision-7b-ov",
    "llava-onevision-72b-ov",
    "qwen-vl-chat",
    "phi3-v",
    "qwen2-vl-2b-instruct",
    "qwen2-vl-7b-instruct",
    "qwen2-vl-72b-instruct",
    "qwen2.5-vl-3b-instruct",
    "qwen2.5-vl-7b-instruct",
    "qwen2.5-vl-72b-instruct",
    "llama-3.2-11b-vision-instruct",
    "llama-3.2-90b-vision-instruct",
    "internlm-xcomposer2-vl-7b",
    "internlm2-chat-1_8b",
    "internlm2-chat-7b",
];

fn lmms() -> Command {
    let mut cmd = Command::cargo_bin("lmms").unwrap();
    // Keep the user's real HF cache out of the tests.
    cmd.env(
        "HF_HUB_CACHE",
        std::env::temp_dir().join("lmms-test-empty-hf-cache"),
    );
    cmd
}

#[test]
fn supported_models_table_lists_every_id() {
    let out = lmms().arg("supported-models").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for id in EXPECTED_IDS {
        assert!(text.contains(id), "missing {id} in:\n{text}");
    }
    assert!(text.contains("Qwen/Qwen2-VL-7B-Instruct"));
    assert!(text.contains("STATUS"));
}

#[test]
fn supported_models_json_parses() {
    let out = lmms()
        .args(["supported-models", "--json"])
        .assert()
        .success();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for id in EXPECTED_IDS {
        assert!(ids.contains(id), "missing {id}");
    }
    let qwen = rows
        .iter()
        .find(|r| r["id"] == "qwen2.5-vl-7b-instruct")
        .unwrap();
    assert_eq!(qwen["family"], "qwen2_5_vl");
    assert_eq!(qwen["hf_path"], "Qwen/Qwen2.5-VL-7B-Instruct");
    assert!(
        qwen["modalities"]
            .as_array()
            .unwrap()
            .contains(&"video".into())
    );
    for r in &rows {
        let status = r["status"].as_str().unwrap();
        assert!(
            ["implemented", "parity-only", "planned"].contains(&status),
            "{r}"
        );
        if status != "implemented" {
            assert!(r["status_note"].is_string(), "{r}");
        }
    }
}

#[test]
fn supported_models_filters_by_family() {
    let out = lmms()
        .args(["supported-models", "--json", "--family", "llava_onevision"])
        .assert()
        .success();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows.len(), 3);
    lmms()
        .args(["supported-models", "--family", "nope"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("unknown family `nope`")
                .and(predicate::str::contains("qwen2_vl")),
        );
}

/// A registered id with no local copy says where it looked and how to get one. (Planned
/// families are refused before that: `core/src/model_dir.rs`'s unit tests, since no built-in
/// family is planned any more.)
#[test]
fn training_a_registered_model_without_weights_says_how_to_get_them() {
    lmms()
        .args([
            "train",
            "--model",
            "llama-3.2-11b-vision-instruct",
            "--data",
            "train.json",
        ])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no local copy of meta-llama/Llama-3.2-11B-Vision-Instruct")
                .and(predicate::str::contains("--model-path")),
        );
}

#[test]
fn training_a_local_dir_without_a_tokenizer_names_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["MllamaForConditionalGeneration"], "model_type": "mllama"}"#,
    )
    .unwrap();
    let data = dir.path().join("train.json");
    std::fs::write(
        &data,
        r#"[{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}]"#,
    )
    .unwrap();
    lmms()
        .args(["train", "--data"])
        .arg(&data)
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .arg("--model")
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("no tokenizer.json"));
}

#[test]
fn unknown_models_get_a_suggestion() {
    lmms()
        .args([
            "train",
            "--model",
            "qwen2-vl-7b-instruc",
            "--data",
            "x.json",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "did you mean `qwen2-vl-7b-instruct`",
        ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    lmms()
        .args(["train", "--data", "x.json", "--model"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no registered family handles")
                .and(predicate::str::contains("bert")),
        );
}

#[test]
fn help_is_complete() {
    lmms().arg("--help").assert().success().stdout(
        predicate::str::contains("supported-models").and(predicate::str::contains("train")),
    );
    lmms().args(["train", "--help"]).assert().success().stdout(
        predicate::str::contains("--use-lora").and(predicate::str::contains("--model-path")),
    );
    lmms()
        .args(["supported-models", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--json"));
    lmms().arg("--version").assert().success();
}

#[test]
fn bad_flags_are_rejected_by_clap() {
    lmms()
        .args(["train", "--model", "x", "--data", "y", "--device", "tpu"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cpu, cuda or cuda:N"));
    lmms()
        .args([
            "train",
            "--model",
            "x",
            "--data",
            "y",
            "--use-lora",
            "--q-lora",
        ])
        .assert()
        .failure();
}

/// The README's supported-models table is what `lmms supported-models` says today.
#[test]
fn readme_table_matches_supported_models() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let out = lmms()
        .args(["supported-models", "--json"])
        .assert()
        .success();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    for r in &rows {
        let strs = |k: &str| -> String {
            r[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let line = format!(
            "| `{}` | {} | {} | {} | {} | {} |",
            r["id"].as_str().unwrap(),
            r["hf_path"].as_str().unwrap(),
            r["family"].as_str().unwrap(),
            strs("modalities"),
            strs("strategies"),
            r["status"].as_str().unwrap()
        );
        assert!(
            readme.contains(&line),
            "README.md lacks or differs on:\n{line}"
        );
    }
}
