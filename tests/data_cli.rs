//! End-to-end tests of `lmms data check`.

use assert_cmd::Command;
use predicates::prelude::*;

mod common;
use common::root;

fn lmms() -> Command {
    let mut cmd = Command::cargo_bin("lmms").unwrap();
    cmd.env(
        "HF_HUB_CACHE",
        std::env::temp_dir().join("lmms-test-empty-hf-cache"),
    );
    cmd
}

fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

#[test]
fn example_data_checks_clean() {
    for name in [
        "llava_dataset.json",
        "llava_dataset.jsonl",
        "xcomposer_dataset.json",
    ] {
        let out = lmms()
            .current_dir(root())
            .args(["data", "check", "--data"])
            .arg(format!("example_data/{name}"))
            .assert()
            .success();
        let text = stdout_of(&out);
        assert!(text.contains("no problems"), "{name}:\n{text}");
    }
    let out = lmms()
        .current_dir(root())
        .args(["data", "check", "--data", "example_data/llava_dataset.json"])
        .assert()
        .success();
    let text = stdout_of(&out);
    for want in [
        "samples:   6 valid, 0 broken, 6 in total",
        "images:    6",
        "videos:    0",
        "text-only: 1",
        "turns:     16",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
}

#[test]
fn mixture_with_token_statistics() {
    let out = lmms()
        .current_dir(root())
        .args([
            "data",
            "check",
            "--data",
            "example_data/data.txt",
            "--tokenizer",
            "tests/fixtures/collate/chatml",
            "--max-length",
            "100",
        ])
        .assert()
        .success();
    let text = stdout_of(&out);
    for want in [
        "example_data/llava_dataset.json: 6 samples (6 valid, 10 per epoch)",
        "example_data/xcomposer_dataset.json: 3 samples (3 valid, 2 per epoch)",
        "per epoch: 12",
        "tokens:    p50 ",
        "over --max-length 100: ",
        "example_data/xcomposer_dataset.json: sample 1: 145 tokens",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    // A built-in template instead of the directory's.
    lmms()
        .current_dir(root())
        .args([
            "data",
            "check",
            "--data",
            "example_data/llava_dataset.json",
            "--tokenizer",
            "tests/fixtures/collate/llava",
            "--template",
            "vicuna",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("built-in template `vicuna`"));
    lmms()
        .current_dir(root())
        .args([
            "data",
            "check",
            "--data",
            "example_data/llava_dataset.json",
            "--tokenizer",
            "tests/fixtures/collate/llava",
            "--template",
            "nope",
        ])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no built-in template `nope`")
                .and(predicate::str::contains("llava-1.5, vicuna, chatml")),
        );
}

#[test]
fn broken_data_fails_naming_file_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("example_data/images/cat.png"),
        dir.path().join("cat.png"),
    )
    .unwrap();
    let data = dir.path().join("train.json");
    std::fs::write(
        &data,
        r#"[
  {"image": "cat.png", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "ok"}]},
  {"image": "missing.png", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "ok"}]},
  {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "ok"}]},
  {"image": ["cat.png", "cat.png"], "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": ""}]},
  {"conversations": [{"from": "human", "value": "hi"}]}
]"#,
    )
    .unwrap();
    let out = lmms()
        .args(["data", "check", "--data"])
        .arg(&data)
        .assert()
        .failure();
    let text = stdout_of(&out);
    let file = data.display().to_string();
    for want in [
        format!("{file}: sample 1: image file"),
        "missing.png not found".to_string(),
        format!("{file}: sample 2: turn 1: unknown role `bot`"),
        format!("{file}: sample 3: turn 1: empty assistant turn"),
        format!(
            "{file}: sample 3: 1 `<image>` or `<ImageHere>` placeholder in the text but 2 images"
        ),
        format!("{file}: sample 4: turn 0: the conversation ends with a user turn"),
        "samples:   1 valid, 4 broken, 5 in total".to_string(),
        "5 problems".to_string(),
    ] {
        assert!(text.contains(&want), "no `{want}` in:\n{text}");
    }

    // Invalid JSON: line and column.
    std::fs::write(&data, "[\n{\"conversations\": }\n]").unwrap();
    lmms()
        .args(["data", "check", "--data"])
        .arg(&data)
        .assert()
        .failure()
        .stdout(predicate::str::contains(format!(
            "{file}: sample 0: invalid JSON at line 2, column"
        )));

    // A missing file.
    lmms()
        .args(["data", "check", "--data"])
        .arg(dir.path().join("nope.json"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("nope.json: no such file"));
}

#[test]
fn registered_models_without_weights_are_refused_but_a_tokenizer_dir_works() {
    lmms()
        .current_dir(root())
        .args([
            "data",
            "check",
            "--data",
            "example_data/llava_dataset.json",
            "--model",
            "llama-3.2-11b-vision-instruct",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no local copy"));
    lmms()
        .args(["data", "check", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--tokenizer")
                .and(predicate::str::contains("--max-length"))
                .and(predicate::str::contains("data.txt")),
        );
}
