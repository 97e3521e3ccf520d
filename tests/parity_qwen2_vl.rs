//! `lmms parity` on the Qwen2-VL / Qwen2.5-VL fixtures (`tools/fixtures/qwen2_vl.py`): images of
//! several sizes, two images in a row, videos, left and right padding, text only, LoRA on the
//! LLM and the vision blocks, the hub's older flat config, and 2.5's window attention.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn parity(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let out = Command::cargo_bin("lmms")
        .unwrap()
        .args(["-v", "parity"])
        .arg(dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("FAIL").not());
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

#[test]
fn qwen2_vl_images_text_only_and_vision_lora() {
    let text = parity("qwen2-vl");
    assert!(
        text.contains("visual.blocks.1.attn.qkv.lora_B.weight"),
        "{text}"
    );
    assert!(
        text.contains("lora.grad.") && text.contains("logits"),
        "{text}"
    );
}

#[test]
fn qwen2_vl_video_left_padding() {
    parity("qwen2-vl-video");
}

#[test]
fn qwen2_vl_text_only_batch() {
    parity("qwen2-vl-text");
}

#[test]
fn qwen2_vl_flat_hub_config_and_transformers5_keys() {
    parity("qwen2-vl-old-config");
}

#[test]
fn qwen2_5_vl_window_attention_and_timed_video() {
    let text = parity("qwen2.5-vl");
    assert!(text.contains("qwen2_5_vl"), "{text}");
}
