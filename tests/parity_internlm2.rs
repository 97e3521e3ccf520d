//! `lmms parity` on the InternLM2 fixture (`InternLM2ForCausalLM`, the hub's remote code, tiny
//! random model with grouped `wqkv` and dynamic NTK RoPE).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

#[test]
fn internlm2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/internlm2");
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("parity")
        .arg(dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("logits").and(predicate::str::contains("loss")))
        .stdout(predicate::str::contains("FAIL").not());
}
