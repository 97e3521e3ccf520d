//! Each family refuses the other generation's checkpoint (lmms-finetune loaded 2.5 with the 2.0
//! class), and both read the committed fixtures' configs.

use lmms_core::model_dir::ModelDir;
use lmms_qwen2_vl::{QWEN2_5_VL_RUNTIME, QWEN2_VL_RUNTIME};
use std::path::Path;

fn dir(name: &str) -> ModelDir {
    ModelDir::open(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn generations_are_not_interchangeable() {
    let v2 = dir("qwen2-vl");
    let v25 = dir("qwen2.5-vl");
    assert!(QWEN2_VL_RUNTIME.config(&v2).is_ok());
    assert!(QWEN2_5_VL_RUNTIME.config(&v25).is_ok());
    let err = QWEN2_VL_RUNTIME.config(&v25).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("qwen2_5_vl"),
        "{err}"
    );
    assert!(QWEN2_5_VL_RUNTIME.config(&v2).is_err());
}

#[test]
fn old_flat_config_reads_like_the_nested_one() {
    let a = QWEN2_VL_RUNTIME.config(&dir("qwen2-vl")).unwrap();
    let b = QWEN2_VL_RUNTIME
        .config(&dir("qwen2-vl-old-config"))
        .unwrap();
    assert_eq!(a.mrope_section, vec![4, 2, 2]);
    assert_eq!(a.mrope_section, b.mrope_section);
    assert_eq!(a.text.rope(), b.text.rope());
    assert_eq!(a.vision.patch_values(), b.vision.patch_values());
    assert_eq!(a.vision.intermediate_size, b.vision.intermediate_size);
}
