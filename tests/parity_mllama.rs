//! `lmms parity` on the Llama-3.2-Vision (Mllama) fixtures (`tools/fixtures/mllama.py`): one
//! image of two tiles with LoRA on the LLM's self- and cross-attention and the vision tower's
//! attention; and a batch of a two-image row next to a padded text-only row (empty image slots,
//! HF's full-text-row masking) with LoRA on all of the LLM's linears; and the first one with the
//! hub's older config keys and transformers 5's in-memory weight names.

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
fn mllama_single_image_with_cross_and_vision_lora() {
    let text = parity("mllama");
    for name in [
        "language_model.layers.1.cross_attn.k_proj.lora_B.weight",
        "language_model.layers.0.self_attn.q_proj.lora_A.weight",
        "vision_model.global_transformer.layers.1.self_attn.o_proj.lora_B.weight",
        "vision_model.transformer.layers.0.self_attn.v_proj.lora_A.weight",
    ] {
        assert!(text.contains(name), "{name} not checked:\n{text}");
    }
}

#[test]
fn mllama_two_images_and_a_text_only_row() {
    let text = parity("mllama-batch");
    assert!(
        text.contains("language_model.layers.3.mlp.down_proj.lora_B.weight"),
        "{text}"
    );
}

#[test]
fn mllama_hub_rope_keys_and_transformers5_weight_names() {
    parity("mllama-old-config");
}
