//! Weights held in bf16 (`DType::Bf16`) give the f32 logits within bf16 precision.

use lmms_core::backend::Cpu;
use lmms_core::loader::DType;
use lmms_core::model_dir::ModelDir;
use lmms_core::nn::plan::PartPlan;
use lmms_core::runtime::{FamilyModel, Plans, build_model};
use lmms_core::tensor_file::TensorFile;
use lmms_llava::LlavaFamily;
use std::path::Path;

#[test]
fn bf16_forward_tracks_f32() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/llava-1.5"
    ));
    let family = LlavaFamily;
    let model_dir = ModelDir::open(dir).unwrap();
    let inputs = family
        .read_inputs(&TensorFile::open(dir.join("inputs.safetensors")).unwrap())
        .unwrap();
    let plans = Plans::uniform(PartPlan::FROZEN, None);
    let device = Default::default();
    let run = |dtype| {
        let (m, _) = build_model::<Cpu, _>(&family, &model_dir, dtype, &plans, &device).unwrap();
        let logits = family.forward(&m, &inputs, &device).unwrap();
        logits
            .cast(lmms_core::burn::tensor::DType::F32)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let (f32s, bf16s) = (run(DType::F32), run(DType::Bf16));
    let scale = f32s.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = f32s
        .iter()
        .zip(&bf16s)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("bf16 vs f32 logits: max rel error {:.2e}", err / scale);
    assert!(bf16s.iter().all(|v| v.is_finite()));
    assert!(err / scale < 5e-2, "bf16 relative error {}", err / scale);
}
