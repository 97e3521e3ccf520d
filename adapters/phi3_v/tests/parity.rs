//! HF parity on the project's copy of the Phi-3-V reference fixture (`tests/fixtures/phi3-v`,
//! made from the hub's remote code on a tiny model: 2-layer Phi-3 with su RoPE, 2-layer CLIP,
//! one 700x500 image in 2x2 crops = 757 image tokens), and on `tests/fixtures/phi3-v-batch`
//! (its `generate.py`: a text-only row next to a row with 2x1 and 1x2 crop images, padding, a
//! LoRA adapter on the LLM and CLIP with the loss gradients).

use lmms_core::backend::DeviceSpec;
use lmms_core::runtime::DynFamily;
use lmms_phi3_v::Phi3VFamily;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

#[test]
fn logits_and_loss_match_the_remote_code() {
    check(&fixture("phi3-v"), &["logits", "loss"]);
}

#[test]
fn batches_with_padding_several_images_and_lora_gradients_match() {
    check(
        &fixture("phi3-v-batch"),
        &["logits", "loss", "lora.logits", "lora.loss"],
    );
}

fn check(dir: &std::path::Path, names: &[&str]) {
    let report = Phi3VFamily.parity(dir, DeviceSpec::Cpu).unwrap();
    for c in &report.checks {
        println!(
            "{}: max abs {:.3e}, max rel {:.3e} (tolerance {:.0e})",
            c.name, c.max_abs_err, c.max_rel_err, c.tolerance
        );
    }
    for name in names {
        assert!(
            report.checks.iter().any(|c| c.name == *name),
            "no {name} check"
        );
    }
    for c in &report.checks {
        assert!(c.passed(), "{} off by {:e}", c.name, c.max_rel_err);
    }
}

/// A fixture saved after the remote code's in-place clamp (image ids turned to 0) still runs:
/// the image positions are recovered, padding zeros of a text-only row are never taken.
#[test]
fn image_ids_clamped_to_zero_are_recovered() {
    use lmms_core::tensor_file::{AnyTensor, TensorFile, write_any};
    let src = fixture("phi3-v-batch");
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "expected.safetensors",
        "meta.json",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let inputs = TensorFile::open(src.join("inputs.safetensors")).unwrap();
    let mut ids = inputs.i64("input_ids").unwrap();
    assert!(ids.data.iter().any(|&i| i < 0));
    ids.data.iter_mut().for_each(|i| *i = (*i).max(0));
    let tensors = vec![
        ("input_ids".to_string(), AnyTensor::I64(ids)),
        (
            "attention_mask".to_string(),
            AnyTensor::I64(inputs.i64("attention_mask").unwrap()),
        ),
        (
            "labels".to_string(),
            AnyTensor::I64(inputs.i64("labels").unwrap()),
        ),
        (
            "pixel_values".to_string(),
            AnyTensor::F32(inputs.f32("pixel_values").unwrap()),
        ),
        (
            "image_sizes".to_string(),
            AnyTensor::I64(inputs.i64("image_sizes").unwrap()),
        ),
    ];
    write_any(&tmp.path().join("inputs.safetensors"), &tensors).unwrap();
    check(tmp.path(), &["logits", "loss"]);
}
