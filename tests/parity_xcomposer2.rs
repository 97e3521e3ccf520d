//! `lmms parity` on the InternLM-XComposer2-VL fixture (`InternLMXComposer2ForCausalLM`, the hub's
//! remote code with a tiny CLIP tower): a 490px image sample (1225 image rows, PLoRA on them)
//! next to a right-padded text-only sample in one batch. The model runs from `images` and
//! `im_mask`, so the vision tower, projector and splicing are checked too.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

#[test]
fn xcomposer2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/internlm-xcomposer2");
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("parity")
        .arg(dir)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("logits")
                .and(predicate::str::contains("loss"))
                .and(predicate::str::contains("FAIL").not()),
        );
}
