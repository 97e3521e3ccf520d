//! The XComposer2 collator against the reference's own data code on
//! `tests/fixtures/internlm-xcomposer2-ref` (`tools/fixtures/xcomposer2.py`): `data.json` in the
//! official finetune format went through the finetune's `conv2text`, the remote code's
//! `interleav_wrap` / `text2emb` (the reference `InternLMXComposer2Tokenizer` on the fixture's
//! sentencepiece `tokenizer.model`, parts split at `<ImageHere>`, BOS on the first) and
//! `mask_human_targets`. `collate_expected.safetensors` holds each sample's ids, labels and image
//! rows; `inputs.safetensors` the right-padded batch of the first two samples with their images
//! (torchvision's Resize/ToTensor/Normalize restated in PIL + numpy).

use lmms_collators::dataset::{DatasetOptions, load_samples};
use lmms_core::collator::{CollateOptions, Collator};
use lmms_core::model_dir::ModelDir;
use lmms_core::tensor_file::TensorFile;
use lmms_internlm_xcomposer2::XComposer2Collator;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/internlm-xcomposer2-ref")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn setup() -> (
    XComposer2Collator,
    Vec<lmms_core::data::Sample>,
    TensorFile,
    TensorFile,
) {
    let dir = fixture();
    let model = ModelDir::open(&dir).unwrap();
    let collator = XComposer2Collator::new(&model, &CollateOptions::default()).unwrap();
    let samples = load_samples(dir.join("data.json"), &DatasetOptions::default()).unwrap();
    let expected = TensorFile::open(dir.join("collate_expected.safetensors")).unwrap();
    let inputs = TensorFile::open(dir.join("inputs.safetensors")).unwrap();
    (collator, samples, expected, inputs)
}

#[test]
fn every_sample_tokenizes_and_masks_as_the_reference() {
    let (collator, samples, expected, _) = setup();
    assert_eq!(samples.len(), 4);
    for (i, sample) in samples.iter().enumerate() {
        let ours = collator.encode(sample).unwrap();
        let ids = expected.i64(&format!("input_ids.{i}")).unwrap().data;
        let labels = expected.i64(&format!("labels.{i}")).unwrap().data;
        let im_mask = expected.i64(&format!("im_mask.{i}")).unwrap().data;
        assert_eq!(ours.input_ids, ids, "sample {i}: input_ids");
        assert_eq!(ours.labels, labels, "sample {i}: labels");
        assert_eq!(ours.im_mask, im_mask, "sample {i}: im_mask");
        assert_eq!(collator.num_tokens(sample).unwrap(), ids.len());
    }
}

#[test]
fn the_batch_equals_the_fixture_inputs() {
    let (collator, samples, expected, inputs) = setup();
    let (batch, skipped) = collator.collate(&[&samples[0], &samples[1]]).unwrap();
    assert!(skipped.is_empty());
    let batch = batch.unwrap();
    let t = &batch.tokens;
    assert_eq!(t.input_ids.shape, inputs.i64("input_ids").unwrap().shape);
    assert_eq!(t.input_ids.data, inputs.i64("input_ids").unwrap().data);
    assert_eq!(
        t.attention_mask.as_ref().unwrap().data,
        inputs.i64("attention_mask").unwrap().data
    );
    assert_eq!(
        t.labels.as_ref().unwrap().data,
        inputs.i64("labels").unwrap().data
    );
    assert_eq!(
        batch.im_mask.as_ref().unwrap().data,
        inputs.i64("im_mask").unwrap().data
    );
    let images = batch.images.as_ref().unwrap();
    let want = inputs.f32("images").unwrap();
    assert_eq!(images.shape, want.shape);
    let d = max_abs_diff(&images.data, &want.data);
    println!("batch images (cat.png 112x84 down, dark.png 32x48 up to 56x56): max abs diff {d:e}");
    assert!(d < 1e-5, "images differ by {d}");

    // The samples past the batch: their images alone.
    for (i, sample) in samples.iter().enumerate().skip(2) {
        let (b, _) = collator.collate(&[sample]).unwrap();
        let b = b.unwrap();
        let want = expected.f32(&format!("images.{i}")).unwrap();
        let got = b.images.as_ref().unwrap();
        assert_eq!(got.shape, want.shape);
        let d = max_abs_diff(&got.data, &want.data);
        println!("sample {i} images: max abs diff {d:e}");
        assert!(d < 1e-5, "sample {i}: images differ by {d}");
    }
}
