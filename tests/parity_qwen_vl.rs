//! `lmms parity` on the Qwen-VL-Chat fixtures (`QWenLMHeadModel`, the hub's remote code
//! `modeling_qwen.py` + `visual.py`, tiny random models): the shared fixture (`qwen-vl`: one
//! image span, a padded text-only row), and those `tools/fixtures/qwen_vl.py` writes.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn parity(name: &str, grads: Option<&str>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let mut stdout = predicate::str::contains("logits")
        .and(predicate::str::contains("loss"))
        .and(predicate::str::contains("FAIL").not())
        .boxed();
    if let Some(g) = grads {
        stdout = stdout.and(predicate::str::contains(g.to_string())).boxed();
    }
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("parity")
        .arg(dir)
        .assert()
        .success()
        .stdout(stdout);
}

#[test]
fn qwen_vl() {
    parity("qwen-vl", None);
}

/// `seq_length` 128 under a 275-token batch: dynamic NTK (`ntk_alpha` 3) and log-scaled queries
/// are active; LoRA on the LLM with its gradients.
#[test]
fn qwen_vl_past_seq_length_with_lora() {
    parity("qwen-vl-long", Some("lora.grad (20 tensors"));
}
