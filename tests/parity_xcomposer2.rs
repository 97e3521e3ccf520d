//! `lmms parity` on the InternLM-XComposer2-VL fixtures (`InternLMXComposer2ForCausalLM`, the
//! hub's remote code with a tiny CLIP tower). The model runs from `images` and `im_mask`, so the
//! vision tower, projector and splicing are checked too.
//!
//! - `internlm-xcomposer2` (the shared fixture): a 490px image sample (1225 image rows, PLoRA on
//!   them) next to a right-padded text-only sample in one batch.
//! - `internlm-xcomposer2-ref` (`tools/fixtures/xcomposer2.py`): the batch made by the
//!   reference's own data code from `data.json` (two images in a multi-turn sample, a text-only
//!   sample), and the official finetune's LoRA (r 64 on wqkv/wo/w1/w2/w3 over the PLoRA linears,
//!   `lora_dropout` 0.05 off as in eval mode) with its gradients.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn parity(name: &str, lora: bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let mut expect = predicate::str::contains("logits")
        .and(predicate::str::contains("loss"))
        .and(predicate::str::contains("FAIL").not())
        .boxed();
    if lora {
        expect = expect
            .and(predicate::str::contains("lora.logits"))
            .and(predicate::str::contains("lora.grad"))
            .boxed();
    }
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("parity")
        .arg(dir)
        .assert()
        .success()
        .stdout(expect);
}

#[test]
fn xcomposer2() {
    parity("internlm-xcomposer2", false);
}

#[test]
fn xcomposer2_reference_data_and_official_lora() {
    parity("internlm-xcomposer2-ref", true);
}
