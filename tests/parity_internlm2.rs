//! `lmms parity` on the InternLM2 fixtures (`InternLM2ForCausalLM`, the hub's remote code, tiny
//! random models with grouped `wqkv`): the shared fixture (`internlm2`, forward only) and the ones
//! `tools/fixtures/internlm2.py` writes with a PEFT LoRA adapter and its gradients (`-lora`;
//! `-ntk`: longer than `max_position_embeddings`, so dynamic NTK rescales, with biases; `-linear`:
//! linear RoPE scaling).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn parity(name: &str, lora: bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let mut stdout = predicate::str::contains("logits")
        .and(predicate::str::contains("loss"))
        .and(predicate::str::contains("FAIL").not())
        .boxed();
    if lora {
        stdout = stdout
            .and(predicate::str::contains("lora.grad (20 tensors"))
            .boxed();
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
fn internlm2() {
    parity("internlm2", false);
}

#[test]
fn internlm2_lora() {
    parity("internlm2-lora", true);
}

#[test]
fn internlm2_dynamic_ntk_with_bias() {
    parity("internlm2-ntk", true);
}

#[test]
fn internlm2_linear_rope() {
    parity("internlm2-linear", true);
}
