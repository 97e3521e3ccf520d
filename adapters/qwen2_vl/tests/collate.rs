//! The Qwen2-VL collator against transformers' `Qwen2VLProcessor`: `tests/fixtures/qwen2-vl-collate`
//! (`tools/fixtures/qwen2_vl_collate.py`) holds a processor directory in the hub's layout for the
//! tiny `qwen2-vl` model and what HF's processor returned for a batch of `samples.json` (default
//! pixel bounds, and overridden ones). Plus errors and a collated batch through the model.

use lmms_collators::dataset::{DatasetOptions, MediaCheck, load_samples};
use lmms_core::backend::Cpu;
use lmms_core::burn::tensor::Tensor;
use lmms_core::collator::{CollateOptions, Collator, OverLength};
use lmms_core::data::Sample;
use lmms_core::loader::DType;
use lmms_core::model_dir::ModelDir;
use lmms_core::nn::plan::PartPlan;
use lmms_core::runtime::{FamilyModel, Plans, build_model};
use lmms_core::tensor_file::TensorFile;
use lmms_qwen2_vl::QWEN2_VL_RUNTIME;
use lmms_qwen2_vl::collate::QwenVlCollator;
use lmms_qwen2_vl::model::QwenVlInputs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/qwen2-vl-collate")
}

fn samples() -> Vec<Sample> {
    let options = DatasetOptions {
        image_folder: Some(root()),
        media_check: MediaCheck::Exists,
        ..Default::default()
    };
    load_samples(fixtures().join("samples.json"), &options).unwrap()
}

fn collator(options: &CollateOptions) -> QwenVlCollator {
    let dir = ModelDir::open(fixtures().join("model")).unwrap();
    QWEN2_VL_RUNTIME.collator(&dir, options).unwrap()
}

fn collate(c: &QwenVlCollator, samples: &[Sample]) -> QwenVlInputs {
    let refs: Vec<&Sample> = samples.iter().collect();
    let (batch, skipped) = c.collate(&refs).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    batch.unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(batch: &QwenVlInputs, expected: &str) {
    let want = TensorFile::open(fixtures().join(expected)).unwrap();
    let t = &batch.tokens;
    for (name, got) in [
        ("input_ids", &t.input_ids),
        ("attention_mask", t.attention_mask.as_ref().unwrap()),
        ("labels", t.labels.as_ref().unwrap()),
        ("image_grid_thw", batch.image_grid_thw.as_ref().unwrap()),
    ] {
        let w = want.i64(name).unwrap();
        assert_eq!(got.shape, w.shape, "{expected}: {name} shape");
        assert_eq!(got.data, w.data, "{expected}: {name}");
    }
    let pv = want.f32("pixel_values").unwrap();
    let got = batch.pixel_values.as_ref().unwrap();
    assert_eq!(got.shape, pv.shape, "{expected}: pixel_values shape");
    assert_eq!(
        max_abs_diff(&got.data, &pv.data),
        0.0,
        "{expected}: pixel_values"
    );
}

#[test]
fn batches_match_the_hf_processor() {
    let batch = collate(&collator(&CollateOptions::default()), &samples());
    check(&batch, "expected.safetensors");
}

#[test]
fn pixel_bounds_override_the_processor_config() {
    let c = collator(&CollateOptions::default())
        .with_pixels(Some(4 * 64), Some(24 * 64))
        .unwrap();
    check(&collate(&c, &samples()), "expected_pixels.safetensors");
    let err = collator(&CollateOptions::default())
        .with_pixels(Some(100), Some(10))
        .unwrap_err();
    assert!(err.to_string().contains("min_pixels"), "{err}");
}

#[test]
fn one_sample_batches_match_the_full_batch() {
    let samples = samples();
    let c = collator(&CollateOptions::default());
    let full = collate(&c, &samples);
    let len = full.tokens.seq();
    for (i, s) in samples.iter().enumerate() {
        let one = collate(&c, std::slice::from_ref(s));
        let n = one.tokens.seq();
        assert_eq!(
            one.tokens.input_ids.data[..],
            full.tokens.input_ids.data[i * len..i * len + n]
        );
        assert_eq!(c.num_tokens(s).unwrap(), n);
    }
}

#[test]
fn over_length_samples_are_skipped_or_rejected() {
    let samples = samples();
    let refs: Vec<&Sample> = samples.iter().collect();
    let skip = CollateOptions {
        model_max_length: Some(100),
        ..Default::default()
    };
    let (batch, skipped) = collator(&skip).collate(&refs).unwrap();
    assert!(batch.is_some() && !skipped.is_empty());
    let reject = CollateOptions {
        model_max_length: Some(100),
        over_length: OverLength::Reject,
        ..Default::default()
    };
    let err = collator(&reject).collate(&refs).unwrap_err().to_string();
    assert!(
        err.contains("samples.json") && err.contains("over the limit"),
        "{err}"
    );
}

#[test]
fn collated_batches_run_through_the_model() {
    let batch = collate(&collator(&CollateOptions::default()), &samples());
    let dir = ModelDir::open(root().join("tests/fixtures/qwen2-vl")).unwrap();
    let frozen = Plans::uniform(PartPlan::FROZEN, None);
    let device = Default::default();
    let (m, _) =
        build_model::<Cpu, _>(&QWEN2_VL_RUNTIME, &dir, DType::F32, &frozen, &device).unwrap();
    let logits: Tensor<Cpu, 3> = QWEN2_VL_RUNTIME.forward(&m, &batch, &device).unwrap();
    assert_eq!(logits.dims()[..2], batch.tokens.input_ids.shape[..]);
    let values = logits.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}
