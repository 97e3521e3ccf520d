//! The Qwen2-VL collator's videos against `tests/fixtures/qwen2-vl-video-collate`
//! (`tools/fixtures/qwen2_vl_video_collate.py`: transformers' sampling, Pillow per-frame
//! pipeline and the video processor's patch layout, on PyAV frames) for the samples of
//! `example_data/llava_video_dataset.json` and the processor directory of
//! `tests/fixtures/qwen2-vl-collate/model`.

use lmms_collators::dataset::{DatasetOptions, MediaCheck, load_samples};
use lmms_collators::image::qwen2_vl_video::RgbImage;
use lmms_core::collator::{CollateOptions, Collator};
use lmms_core::data::Sample;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::FamilyModel;
use lmms_core::tensor_file::TensorFile;
use lmms_qwen2_vl::QWEN2_VL_RUNTIME;
use lmms_qwen2_vl::collate::QwenVlCollator;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/qwen2-vl-video-collate")
}

fn samples() -> Vec<Sample> {
    let options = DatasetOptions {
        image_folder: Some(root().join("example_data")),
        video_folder: Some(root().join("example_data")),
        media_check: MediaCheck::Exists,
        ..Default::default()
    };
    load_samples(
        root().join("example_data/llava_video_dataset.json"),
        &options,
    )
    .unwrap()
}

fn collator(options: &CollateOptions) -> QwenVlCollator {
    let dir = ModelDir::open(root().join("tests/fixtures/qwen2-vl-collate/model")).unwrap();
    QWEN2_VL_RUNTIME.collator(&dir, options).unwrap()
}

fn expected_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn token_ids_and_grids_match_hf() {
    let want = TensorFile::open(fixture().join("expected.safetensors")).unwrap();
    let ids = want.i64("input_ids").unwrap().data;
    let json = expected_json();
    let c = collator(&CollateOptions::default());
    let samples = samples();
    let mut offset = 0;
    for (i, s) in samples.iter().enumerate() {
        let n = json["samples"][i]["length"].as_u64().unwrap() as usize;
        let (batch, _) = c.collate(&[s]).unwrap();
        let batch = batch.unwrap();
        assert_eq!(
            batch.tokens.input_ids.data,
            ids[offset..offset + n],
            "sample {i}"
        );
        assert_eq!(c.num_tokens(s).unwrap(), n, "sample {i}");
        offset += n;
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let batch = c.collate(&refs).unwrap().0.unwrap();
    let grids = want.i64("video_grid_thw").unwrap();
    assert_eq!(batch.video_grid_thw.as_ref().unwrap().data, grids.data);
    // Qwen2-VL's processor has no second_per_grid_ts.
    assert!(batch.second_per_grid_ts.is_none());
    // FFmpeg 5.1's YUV -> RGB rounding differs from PyAV's FFmpeg 8 by a level or so; the
    // processor itself is checked bit-exact on PyAV's frames below.
    let pv = want.f32("pixel_values_videos").unwrap();
    let got = batch.pixel_values_videos.as_ref().unwrap();
    assert_eq!(got.shape, pv.shape);
    let diff = max_abs_diff(&got.data, &pv.data);
    eprintln!("pixel_values_videos max |diff| vs HF (different FFmpeg builds): {diff}");
    assert!(diff < 0.1, "{diff}");
}

#[test]
fn the_processor_is_exact_on_the_same_frames() {
    let want = TensorFile::open(fixture().join("expected.safetensors")).unwrap();
    let json = expected_json();
    let c = collator(&CollateOptions::default());
    let pv = want.f32("pixel_values_videos").unwrap();
    let k = pv.shape[1];
    // The first two videos of the batch are red_ball then growing_square.
    let mut row = 0;
    for stem in ["red_ball", "growing_square"] {
        let frames = want.f32(&format!("frames_{stem}")).unwrap();
        let [f, h, w, _] = frames.shape[..] else {
            panic!()
        };
        let images: Vec<RgbImage> = (0..f)
            .map(|i| {
                let px = &frames.data[i * h * w * 3..(i + 1) * h * w * 3];
                RgbImage::from_raw(w as u32, h as u32, px.iter().map(|&v| v as u8).collect())
                    .unwrap()
            })
            .collect();
        let out = c.videos.process(&images).unwrap();
        let info = &json[stem];
        let grid: Vec<usize> = serde_json::from_value(info["grid"].clone()).unwrap();
        assert_eq!(out.grid[..], grid[..], "{stem}");
        let n = out.data.len() / k;
        assert_eq!(
            max_abs_diff(&out.data, &pv.data[row * k..(row + n) * k]),
            0.0,
            "{stem}"
        );
        row += n;
        let total = info["total"].as_u64().unwrap() as usize;
        let fps = info["fps"].as_f64();
        let idx: Vec<usize> = serde_json::from_value(info["indices"].clone()).unwrap();
        let got = c
            .videos
            .sample_indices(
                total,
                fps,
                lmms_collators::image::qwen2_vl_video::FrameSampling::NumFrames(8),
            )
            .unwrap();
        assert_eq!(got, idx, "{stem}");
        let spg = c.videos.second_per_grid(idx.len(), total, fps);
        assert!(
            (spg - info["second_per_grid"].as_f64().unwrap()).abs() < 1e-12,
            "{stem}"
        );
    }
}

#[test]
fn video_pixel_bounds_and_errors() {
    let options = CollateOptions {
        video_max_pixels: Some(1024),
        ..Default::default()
    };
    let c = collator(&options);
    let s = &samples()[0];
    // 120x160 within 1024 px: 24x32 -> grid 6x8 -> 4 slices of 12 tokens.
    let batch = c.collate(&[s]).unwrap().0.unwrap();
    assert_eq!(batch.video_grid_thw.unwrap().data, [4, 6, 8]);
    let too_many = CollateOptions {
        num_frames: 100,
        ..Default::default()
    };
    let err = collator(&too_many).collate(&[s]).unwrap_err().to_string();
    assert!(
        err.contains("red_ball.mp4") && err.contains("48 frames"),
        "{err}"
    );
    let dir = ModelDir::open(root().join("tests/fixtures/qwen2-vl-collate/model")).unwrap();
    let bad = CollateOptions {
        min_pixels: Some(10_000),
        max_pixels: Some(100),
        ..Default::default()
    };
    let err = QWEN2_VL_RUNTIME
        .collator(&dir, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_pixels"), "{err}");
}
