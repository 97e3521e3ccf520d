//! The Mllama collator against transformers' `MllamaProcessor`: `tests/fixtures/mllama-collate`
//! (`tools/fixtures/mllama_collate.py`) holds a processor directory in the hub's layout for the
//! tiny `mllama` model (the hub chat template, a Llama 3-style tokenizer) and what HF's processor
//! returned for a batch of `samples.json`: one image, two consecutive images, text only with a
//! system prompt, two images between text. Plus errors and a collated batch through the model.

use lmms_collators::dataset::{DatasetOptions, MediaCheck, load_samples};
use lmms_core::backend::Cpu;
use lmms_core::burn::tensor::Tensor;
use lmms_core::collator::{CollateOptions, Collator, OverLength};
use lmms_core::data::{Role, Sample, SampleOrigin, Turn};
use lmms_core::loader::DType;
use lmms_core::model_dir::ModelDir;
use lmms_core::nn::plan::PartPlan;
use lmms_core::runtime::{FamilyModel, Plans, build_model};
use lmms_core::tensor_file::TensorFile;
use lmms_mllama::MLLAMA_RUNTIME;
use lmms_mllama::collate::MllamaCollator;
use lmms_mllama::model::MllamaInputs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/mllama-collate")
}

fn samples() -> Vec<Sample> {
    let options = DatasetOptions {
        image_folder: Some(root()),
        media_check: MediaCheck::Exists,
        ..Default::default()
    };
    load_samples(fixtures().join("samples.json"), &options).unwrap()
}

fn collator(options: &CollateOptions) -> MllamaCollator {
    let dir = ModelDir::open(fixtures().join("model")).unwrap();
    MLLAMA_RUNTIME
        .collator(&dir, options)
        .unwrap()
        .with_template_variable("date_string", "26 Jul 2024".into())
}

fn collate(c: &MllamaCollator, samples: &[Sample]) -> MllamaInputs {
    let refs: Vec<&Sample> = samples.iter().collect();
    let (batch, skipped) = c.collate(&refs).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    batch.unwrap()
}

#[test]
fn batches_match_the_hf_processor() {
    let batch = collate(&collator(&CollateOptions::default()), &samples());
    let want = TensorFile::open(fixtures().join("expected.safetensors")).unwrap();
    let t = &batch.tokens;
    for (name, got) in [
        ("input_ids", &t.input_ids),
        ("attention_mask", t.attention_mask.as_ref().unwrap()),
        ("labels", t.labels.as_ref().unwrap()),
        ("aspect_ratio_ids", batch.aspect_ratio_ids.as_ref().unwrap()),
        (
            "aspect_ratio_mask",
            batch.aspect_ratio_mask.as_ref().unwrap(),
        ),
        (
            "cross_attention_mask",
            batch.cross_attention_mask.as_ref().unwrap(),
        ),
    ] {
        let w = want.i64(name).unwrap();
        assert_eq!(got.shape, w.shape, "{name} shape");
        assert_eq!(got.data, w.data, "{name}");
    }
    let pv = want.f32("pixel_values").unwrap();
    let got = batch.pixel_values.as_ref().unwrap();
    assert_eq!(got.shape, pv.shape, "pixel_values shape");
    // Pillow's resize reproduced exactly: bit-identical pixels.
    assert_eq!(got.data, pv.data, "pixel_values");
}

#[test]
fn single_samples_match_the_batch_and_text_only_batches_have_no_vision_tensors() {
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
        assert_eq!(one.pixel_values.is_some(), !s.images.is_empty());
        assert_eq!(one.cross_attention_mask.is_some(), !s.images.is_empty());
    }
}

#[test]
fn labels_are_the_replies_and_their_end_of_turn() {
    let c = collator(&CollateOptions::default());
    let samples = samples();
    let one = collate(&c, &samples[1..2]);
    let ids = &one.tokens.input_ids.data;
    let labels = one.tokens.labels.as_ref().unwrap();
    let trained: Vec<u32> = ids
        .iter()
        .zip(&labels.data)
        .filter(|(_, l)| **l != -100)
        .map(|(i, _)| *i as u32)
        .collect();
    // The reply, then <|eot_id|> (252).
    assert_eq!(trained.last(), Some(&252));
    assert_eq!(
        c.decode(&trained).unwrap(),
        "The left one is bright, the right one is dark."
    );
}

fn sample(system: Option<&str>, user: &str, images: Vec<PathBuf>) -> Sample {
    Sample {
        origin: SampleOrigin {
            file: "data.json".into(),
            index: 3,
        },
        system: system.map(str::to_string),
        turns: vec![
            Turn {
                role: Role::User,
                content: user.into(),
            },
            Turn {
                role: Role::Assistant,
                content: "Fine.".into(),
            },
        ],
        images,
        videos: vec![],
    }
}

#[test]
fn bad_samples_are_named_with_their_reason() {
    let c = collator(&CollateOptions::default());
    let image = root().join("tests/fixtures/processors/images/rgb_h17_w23.png");
    let cases = [
        (
            sample(Some("Be brief."), "<image> What?", vec![image.clone()]),
            "incompatible with system messages",
        ),
        (
            sample(None, "<image> What?", vec![root().join("missing.png")]),
            "missing.png",
        ),
        (
            sample(None, "What?", vec![image.clone()]),
            "0 `<|image|>` but the sample has 1 images",
        ),
    ];
    for (s, why) in cases {
        let err = c.collate(&[&s]).unwrap_err().to_string();
        assert!(
            err.contains("data.json") && err.contains('3') && err.contains(why),
            "{err}"
        );
    }
    let mut video = sample(None, "<video> What?", vec![]);
    video.videos.push("clip.mp4".into());
    let err = c.collate(&[&video]).unwrap_err().to_string();
    assert!(
        err.contains("clip.mp4") && err.contains("images only"),
        "{err}"
    );
}

#[test]
fn over_length_samples_are_skipped_or_rejected() {
    let samples = samples();
    let refs: Vec<&Sample> = samples.iter().collect();
    let skip = CollateOptions {
        model_max_length: Some(60),
        ..Default::default()
    };
    let (batch, skipped) = collator(&skip).collate(&refs).unwrap();
    assert!(batch.is_some() && !skipped.is_empty());
    let reject = CollateOptions {
        model_max_length: Some(60),
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
    let dir = ModelDir::open(root().join("tests/fixtures/mllama")).unwrap();
    let frozen = Plans::uniform(PartPlan::FROZEN, None);
    let device = Default::default();
    let (m, _) =
        build_model::<Cpu, _>(&MLLAMA_RUNTIME, &dir, DType::F32, &frozen, &device).unwrap();
    let logits: Tensor<Cpu, 3> = MLLAMA_RUNTIME.forward(&m, &batch, &device).unwrap();
    assert_eq!(logits.dims()[..2], batch.tokens.input_ids.shape[..]);
    let values = logits.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}
