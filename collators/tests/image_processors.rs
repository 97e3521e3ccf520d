//! The image processors against Hugging Face's, on the reference outputs of
//! `tools/fixtures/processors.py` (transformers 5.23 `*ImageProcessorPil`, Pillow 13) in
//! `tests/fixtures/processors/`, and against the `pixel_values` of the model fixtures.
//!
//! Tolerance: one uint8 level after normalisation (`1 / 255 / min(std)`), at most 1% of the
//! values differing. Measured: every case is bit-identical (max abs diff 0, same checksum), which
//! `every_case_is_bit_identical` pins down; if a future Pillow changes its rounding, that test is
//! the one to revisit, the tolerance tests should still hold.

use lmms_collators::image::{
    AnyresBatch, ClipImageProcessor, FeatureSelect, ImageProcessor, ImageProcessorConfig,
    LlavaNextImageProcessor, LlavaOnevisionImageProcessor, NextTokens, OnevisionTokens, PixelBatch,
    ProcessorConfig, Resample, Size, load_image, select_best_resolution,
};
use lmms_core::tensor_file::TensorFile;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/processors")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `wsum64` of processors.py: sum_i bits(x_i) * (i * 0x9E3779B97F4A7C15 + 1) mod 2^64.
fn wsum64(data: &[f32]) -> String {
    let mut total = 0u64;
    for (i, x) in data.iter().enumerate() {
        let w = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(1);
        total = total.wrapping_add((x.to_bits() as u64).wrapping_mul(w));
    }
    format!("{total:016x}")
}

struct Outcome {
    name: String,
    shape: Vec<usize>,
    expected_shape: Vec<usize>,
    checksum_ok: bool,
    /// (max abs diff, differing values, compared values), against what the fixture stores.
    diff: (f32, usize, usize),
    tolerance: f32,
    mean_diff: f32,
    image_sizes: Option<Vec<(usize, usize)>>,
    expected_image_sizes: Option<Vec<(usize, usize)>>,
    tokens: Option<Vec<usize>>,
    expected_tokens: Option<Vec<usize>>,
}

fn compare(got: &[f32], want: &[f32]) -> (f32, usize, usize) {
    assert_eq!(got.len(), want.len());
    let mut max = 0f32;
    let mut n = 0;
    for (a, b) in got.iter().zip(want) {
        let d = (a - b).abs();
        if d > 0.0 {
            n += 1;
        }
        max = max.max(d);
    }
    (max, n, got.len())
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

type Sizes = Vec<(usize, usize)>;

fn run_case(case: &Value) -> Outcome {
    let dir = fixtures();
    let name = case["name"].as_str().unwrap().to_string();
    let cfg_dir = dir.join(case["config"].as_str().unwrap());
    let cfg = ImageProcessorConfig::from_model_dir(&cfg_dir).unwrap();
    let proc = ImageProcessor::from_config(&cfg).unwrap();
    let nested = case["nested"].as_bool().unwrap();
    let load = |v: &Value| load_image(dir.join(v.as_str().unwrap())).unwrap();

    let (pixels, sizes, tokens): (PixelBatch, Option<Sizes>, Option<Vec<usize>>) =
        match (case["processor"].as_str().unwrap(), &proc) {
            ("clip", ImageProcessor::Clip(p)) => {
                let imgs: Vec<_> = case["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(load)
                    .collect();
                (p.preprocess(&imgs).unwrap(), None, None)
            }
            ("siglip", ImageProcessor::Siglip(p)) => {
                let imgs: Vec<_> = case["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(load)
                    .collect();
                (p.preprocess(&imgs).unwrap(), None, None)
            }
            ("next", ImageProcessor::LlavaNext(p)) => {
                let imgs: Vec<_> = case["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(load)
                    .collect();
                let b = p.preprocess(&imgs).unwrap();
                let pc = ProcessorConfig::from_model_dir(&cfg_dir).unwrap().unwrap();
                let t = NextTokens::from_processor_config(&pc).unwrap();
                let counts = b
                    .image_sizes
                    .iter()
                    .map(|&s| p.num_image_tokens(s, &t).unwrap())
                    .collect();
                check_tiles(&b, |s| p.num_tiles(s));
                (b.pixel_values, Some(b.image_sizes), Some(counts))
            }
            ("onevision", ImageProcessor::LlavaOnevision(p)) => {
                let pc = ProcessorConfig::from_model_dir(&cfg_dir).unwrap().unwrap();
                let t = OnevisionTokens::from_processor_config(&pc).unwrap();
                let (b, counts) = if nested {
                    let samples: Vec<Vec<_>> = case["images"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_array().unwrap().iter().map(load).collect())
                        .collect();
                    let b = p.preprocess_samples(&samples).unwrap();
                    let mut counts = Vec::new();
                    let mut k = 0;
                    for s in &samples {
                        for _ in s {
                            counts.push(if s.len() == 1 {
                                p.num_image_tokens(b.image_sizes[k], &t).unwrap()
                            } else {
                                t.count_multi_image()
                            });
                            k += 1;
                        }
                    }
                    (b, counts)
                } else {
                    let imgs: Vec<_> = case["images"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(load)
                        .collect();
                    let b = p.preprocess(&imgs).unwrap();
                    check_tiles(&b, |s| p.num_tiles(s));
                    let counts = b
                        .image_sizes
                        .iter()
                        .map(|&s| p.num_image_tokens(s, &t).unwrap())
                        .collect();
                    (b, counts)
                };
                (b.pixel_values, Some(b.image_sizes), Some(counts))
            }
            (kind, p) => panic!("{name}: config {cfg_dir:?} gave {p:?} for a `{kind}` case"),
        };

    let std = proc.base().normalize.std;
    let min_std = if proc.base().normalize.do_normalize {
        std.iter().cloned().fold(f64::INFINITY, f64::min)
    } else {
        1.0
    };
    let level = if proc.base().normalize.do_rescale {
        1.0 / 255.0
    } else {
        1.0
    };
    let tolerance = (level / min_std) as f32 * 1.0001;

    let expected_shape: Vec<usize> = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let checksum_ok = wsum64(&pixels.data) == case["checksum_wsum64"].as_str().unwrap();
    let mut mean_diff = 0f32;
    let diff = if pixels.shape != expected_shape {
        (f32::INFINITY, 0, 0)
    } else {
        match case["storage"].as_str().unwrap() {
            "full" => {
                let f = TensorFile::open(dir.join(case["output"].as_str().unwrap())).unwrap();
                compare(&pixels.data, &f.f32("pixel_values").unwrap().data)
            }
            "strided" => {
                let f = TensorFile::open(dir.join(case["output"].as_str().unwrap())).unwrap();
                let stride = case["stride"].as_u64().unwrap() as usize;
                let got: Vec<f32> = pixels.data.iter().step_by(stride).copied().collect();
                let means = f.f32("tile_channel_means").unwrap().data;
                let plane = pixels.shape[pixels.shape.len() - 2..]
                    .iter()
                    .product::<usize>();
                for (i, m) in means.iter().enumerate() {
                    let s: f64 = pixels.data[i * plane..(i + 1) * plane]
                        .iter()
                        .map(|&v| v as f64)
                        .sum();
                    mean_diff = mean_diff.max(((s / plane as f64) as f32 - m).abs());
                }
                compare(&got, &f.f32("pixel_values_strided").unwrap().data)
            }
            "model_fixture" => {
                let mf = &case["model_fixture"];
                let path = root()
                    .join(mf["dir"].as_str().unwrap())
                    .join("inputs.safetensors");
                let t = TensorFile::open(&path)
                    .unwrap()
                    .f32(mf["tensor"].as_str().unwrap())
                    .unwrap();
                // pixel_values_videos carries a leading batch dimension of 1.
                let skip = t.shape.len() - pixels.shape.len();
                assert_eq!(
                    &t.shape[skip..],
                    &pixels.shape[..],
                    "{name}: model fixture shape"
                );
                compare(&pixels.data, &t.data)
            }
            other => panic!("unknown storage {other}"),
        }
    };
    Outcome {
        name,
        shape: pixels.shape,
        expected_shape,
        checksum_ok,
        diff,
        tolerance,
        mean_diff,
        image_sizes: sizes,
        expected_image_sizes: case.get("image_sizes").map(pairs),
        tokens,
        expected_tokens: case.get("num_image_tokens").map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        }),
    }
}

fn check_tiles(b: &AnyresBatch, num_tiles: impl Fn((usize, usize)) -> usize) {
    for (s, n) in b.image_sizes.iter().zip(&b.num_tiles) {
        assert_eq!(num_tiles(*s), *n, "num_tiles for {s:?}");
    }
}

/// Every case of cases.json, run once and shared by the tests below.
fn outcomes() -> &'static [Outcome] {
    static CELL: OnceLock<Vec<Outcome>> = OnceLock::new();
    CELL.get_or_init(|| {
        let meta = read_json(&fixtures().join("cases.json"));
        let out: Vec<Outcome> = meta["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(run_case)
            .collect();
        for o in &out {
            eprintln!(
                "{:32} {:?} max|diff| {:.3e} ({} of {} differ, tolerance {:.3e}) checksum {}",
                o.name,
                o.shape,
                o.diff.0,
                o.diff.1,
                o.diff.2,
                o.tolerance,
                if o.checksum_ok { "equal" } else { "DIFFERENT" }
            );
        }
        out
    })
}

#[test]
fn pixel_values_within_one_uint8_level() {
    for o in outcomes() {
        assert_eq!(o.shape, o.expected_shape, "{}: shape", o.name);
        assert!(
            o.diff.0 <= o.tolerance,
            "{}: max abs diff {} > one uint8 level {}",
            o.name,
            o.diff.0,
            o.tolerance
        );
        assert!(
            o.diff.1 * 100 <= o.diff.2,
            "{}: {} of {} values differ",
            o.name,
            o.diff.1,
            o.diff.2
        );
        assert!(
            o.mean_diff <= 1e-4,
            "{}: tile/channel means differ by {}",
            o.name,
            o.mean_diff
        );
    }
}

#[test]
fn every_case_is_bit_identical() {
    let bad: Vec<&str> = outcomes()
        .iter()
        .filter(|o| !o.checksum_ok || o.diff.1 != 0)
        .map(|o| o.name.as_str())
        .collect();
    assert!(bad.is_empty(), "not bit-identical to HF: {bad:?}");
}

#[test]
fn image_sizes_and_token_counts_match_hf() {
    for o in outcomes() {
        assert_eq!(
            o.image_sizes, o.expected_image_sizes,
            "{}: image_sizes",
            o.name
        );
        if o.expected_tokens.is_some() {
            assert_eq!(
                o.tokens, o.expected_tokens,
                "{}: image token counts",
                o.name
            );
        }
    }
}

/// tokens.json: HF's `_get_num_multimodal_tokens` over ~200 original sizes (1x1, 1x1000,
/// 4000x300, random ones) for the tiny and the real NeXT / OneVision settings.
#[test]
fn token_tables_match_hf() {
    let meta = read_json(&fixtures().join("tokens.json"));
    for table in meta["tables"].as_array().unwrap() {
        let dir = fixtures().join(table["config"].as_str().unwrap());
        let pc = ProcessorConfig::from_model_dir(&dir).unwrap().unwrap();
        let sizes = pairs(&table["image_sizes"]);
        let want: Vec<usize> = table["num_image_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let got: Vec<usize> = match table["processor"].as_str().unwrap() {
            "next" => {
                let p = LlavaNextImageProcessor::from_model_dir(&dir).unwrap();
                let t = NextTokens::from_processor_config(&pc).unwrap();
                sizes
                    .iter()
                    .map(|&s| p.num_image_tokens(s, &t).unwrap())
                    .collect()
            }
            _ => {
                let p = LlavaOnevisionImageProcessor::from_model_dir(&dir).unwrap();
                let t = OnevisionTokens::from_processor_config(&pc).unwrap();
                let frames = table["video_frames"].as_array().unwrap();
                for (f, n) in frames
                    .iter()
                    .zip(table["num_video_tokens"].as_array().unwrap())
                {
                    assert_eq!(
                        t.count_video(f.as_u64().unwrap() as usize) as u64,
                        n.as_u64().unwrap()
                    );
                }
                assert_eq!(
                    t.count_multi_image() as u64,
                    table["multi_image_tokens"].as_u64().unwrap()
                );
                sizes
                    .iter()
                    .map(|&s| p.num_image_tokens(s, &t).unwrap())
                    .collect()
            }
        };
        for ((s, g), w) in sizes.iter().zip(&got).zip(&want) {
            assert_eq!(g, w, "{dir:?}: image of {s:?}");
        }
    }
}

#[test]
fn model_fixture_token_counts() {
    // The counts the model fixtures' meta.json state (the model's own feature lengths).
    let next = NextTokens::from_vision(8, true, FeatureSelect::Default);
    let p = LlavaNextImageProcessor::from_model_dir(fixtures().join("configs/next-tiny")).unwrap();
    assert_eq!(p.num_image_tokens((30, 70), &next).unwrap(), 52);
    assert_eq!(p.num_image_tokens((90, 50), &next).unwrap(), 56);
    let ov = OnevisionTokens::from_vision(40, 8, FeatureSelect::Full, "anyres_max_2").unwrap();
    let p = LlavaOnevisionImageProcessor::from_model_dir(fixtures().join("configs/onevision-tiny"))
        .unwrap();
    assert_eq!(p.num_image_tokens((50, 110), &ov).unwrap(), 73);
    assert_eq!(ov.count_video(3), 28);
}

#[test]
fn select_best_resolution_edge_cases() {
    let pins = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];
    assert_eq!(select_best_resolution((480, 640), &pins), Some((672, 672)));
    assert_eq!(
        select_best_resolution((100, 1000), &pins),
        Some((336, 1008))
    );
    assert_eq!(
        select_best_resolution((1000, 100), &pins),
        Some((1008, 336))
    );
    // Tiny images: every pinpoint keeps the whole image; the least waste wins, the first on ties.
    assert_eq!(select_best_resolution((2, 2), &pins), Some((336, 672)));
    assert_eq!(
        select_best_resolution((2, 2), &[[64, 64], [32, 64], [64, 32]]),
        Some((32, 64))
    );
    // An image too thin for any pinpoint (effective resolution 0): still the least waste.
    assert_eq!(
        select_best_resolution((1, 100_000), &[[64, 64], [32, 64]]),
        Some((32, 64))
    );
    assert_eq!(select_best_resolution((5, 5), &[]), None);
}

#[test]
fn token_count_edge_cases() {
    let pins = [[32, 64], [64, 32], [64, 64]];
    let t = NextTokens::from_vision(8, true, FeatureSelect::Default);
    // A 1-pixel-high strip: the unpadded grid keeps no row at all.
    assert_eq!(t.count((1, 1000), (32, 32), &pins).unwrap(), 16);
    // Square image in a square pinpoint: nothing is unpadded, 8x8 grid + 8 newlines + 16.
    assert_eq!(t.count((64, 64), (32, 32), &pins).unwrap(), 64 + 8 + 16);
    let full = NextTokens::from_vision(8, true, FeatureSelect::Full);
    assert_eq!(full.count((64, 64), (32, 32), &pins).unwrap(), 64 + 8 + 17);
    assert!(t.count((0, 10), (32, 32), &pins).is_err());
    assert!(t.count((10, 10), (32, 32), &[]).is_err());
    // OneVision, real settings: anyres_max_9 caps a 6x6-tile grid.
    let ov = OnevisionTokens::new(729, FeatureSelect::Full, "anyres_max_9").unwrap();
    let pins: Vec<[usize; 2]> = (1..=6)
        .flat_map(|i| (1..=6).map(move |j| [384 * i, 384 * j]))
        .collect();
    let n = ov.count((2304, 2304), (384, 384), &pins).unwrap();
    // 162x162 grid, ratio 2 -> 81x81 + 81 newlines + 729.
    assert_eq!(n, 81 * 81 + 81 + 729);
    assert_eq!(ov.count_video(8), 8 * 14 * 14 + 1);
}

#[test]
fn configs_are_read_in_both_styles() {
    let clip = ImageProcessorConfig::from_model_dir(fixtures().join("configs/clip-336")).unwrap();
    assert!(clip.source.ends_with("preprocessor_config.json"));
    let next = ImageProcessorConfig::from_model_dir(fixtures().join("configs/next-336")).unwrap();
    assert!(next.source.ends_with("processor_config.json"));
    let p = LlavaNextImageProcessor::from_config(&next).unwrap();
    assert_eq!(p.base.size, Size::ShortestEdge(336));
    assert_eq!(p.base.crop_size, Some((336, 336)));
    assert_eq!(p.base.resample, Resample::Bicubic);
    assert_eq!(p.image_grid_pinpoints.len(), 5);
    assert_eq!(p.tile_size(), (336, 336));
    // Older hub files: int sizes, no image_processor_type.
    let legacy = ImageProcessor::from_model_dir(fixtures().join("configs/legacy-clip")).unwrap();
    let ImageProcessor::Clip(legacy) = legacy else {
        panic!("legacy config is CLIP")
    };
    assert_eq!(legacy.base.size, Size::ShortestEdge(32));
    assert_eq!(legacy.base.crop_size, Some((32, 32)));

    // processor_config.json's image_processor wins over preprocessor_config.json, as in HF.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("preprocessor_config.json"),
        r#"{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 10}}"#,
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("processor_config.json"),
        r#"{"image_processor": {"image_processor_type": "SiglipImageProcessorPil", "size": {"height": 12, "width": 14}}}"#,
    )
    .unwrap();
    let p = ImageProcessor::from_model_dir(tmp.path()).unwrap();
    let ImageProcessor::Siglip(p) = p else {
        panic!("{p:?}")
    };
    assert_eq!(
        p.base.size,
        Size::HeightWidth {
            height: 12,
            width: 14
        }
    );
    // A processor_config.json without image_processor falls back to preprocessor_config.json.
    std::fs::write(
        tmp.path().join("processor_config.json"),
        r#"{"patch_size": 14}"#,
    )
    .unwrap();
    assert!(matches!(
        ImageProcessor::from_model_dir(tmp.path()).unwrap(),
        ImageProcessor::Clip(_)
    ));
}

fn err_text(e: lmms_core::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s += &format!(": {x}");
        src = x.source();
    }
    s
}

#[test]
fn bad_files_give_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let missing = dir.join("missing.png");
    let e = err_text(load_image(&missing).unwrap_err());
    assert!(e.contains("missing.png"), "{e}");

    let corrupt = dir.join("corrupt.png");
    let mut bytes = std::fs::read(fixtures().join("images/rgb_h40_w70.png")).unwrap();
    bytes.truncate(60);
    std::fs::write(&corrupt, &bytes).unwrap();
    let e = err_text(load_image(&corrupt).unwrap_err());
    assert!(
        e.contains("corrupt.png") && e.contains("not a decodable image"),
        "{e}"
    );

    let text = dir.join("notes.png");
    std::fs::write(&text, "hello").unwrap();
    let e = err_text(load_image(&text).unwrap_err());
    assert!(e.contains("notes.png"), "{e}");

    // No config at all: the error names the directory and both files.
    let e = err_text(ImageProcessorConfig::from_model_dir(dir).unwrap_err());
    assert!(
        e.contains(dir.to_str().unwrap()) && e.contains("preprocessor_config.json"),
        "{e}"
    );

    let cases: &[(&str, &str)] = &[
        ("{ not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        (
            r#"{"image_processor_type": "CLIPImageProcessor", "size": {"longest_edge": 3}}"#,
            "size",
        ),
        (
            r#"{"image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.5]}"#,
            "image_mean",
        ),
        (
            r#"{"image_processor_type": "CLIPImageProcessor", "image_std": 0}"#,
            "image_std",
        ),
        (
            r#"{"image_processor_type": "CLIPImageProcessor", "resample": 9}"#,
            "resample",
        ),
        (
            r#"{"image_processor_type": "CLIPImageProcessor", "do_resize": "yes"}"#,
            "invalid",
        ),
        (
            r#"{"image_processor_type": "LlavaNextImageProcessor", "image_grid_pinpoints": []}"#,
            "pinpoints",
        ),
        (
            r#"{"image_processor_type": "LlavaNextImageProcessor", "image_grid_pinpoints": [[3]]}"#,
            "pinpoints",
        ),
        (
            r#"{"image_processor_type": "Qwen2VLImageProcessor"}"#,
            "not supported",
        ),
        (r#"{"size": 3}"#, "image_processor_type"),
        (
            r#"{"image_processor_type": "SiglipImageProcessor", "do_center_crop": true}"#,
            "crop_size",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let sub = dir.join(format!("m{i}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("preprocessor_config.json"), text).unwrap();
        let e = ImageProcessor::from_model_dir(&sub).expect_err(text);
        let e = err_text(e);
        assert!(
            e.contains(&format!("m{i}/preprocessor_config.json")),
            "{text}: {e}"
        );
        assert!(e.contains(needle), "{text}: `{needle}` not in: {e}");
    }

    // processor_config.json problems name that file.
    let sub = dir.join("proc");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("processor_config.json"),
        r#"{"image_processor": {"size": "big"}}"#,
    )
    .unwrap();
    let e = err_text(ImageProcessorConfig::from_model_dir(&sub).unwrap_err());
    assert!(e.contains("proc/processor_config.json"), "{e}");
    std::fs::write(
        sub.join("processor_config.json"),
        r#"{"vision_feature_select_strategy": "cls", "patch_size": 14}"#,
    )
    .unwrap();
    let pc = ProcessorConfig::from_model_dir(&sub).unwrap().unwrap();
    let e = err_text(NextTokens::from_processor_config(&pc).unwrap_err());
    assert!(
        e.contains("proc/processor_config.json") && e.contains("cls"),
        "{e}"
    );
    std::fs::write(
        sub.join("processor_config.json"),
        r#"{"num_image_tokens": 729, "vision_aspect_ratio": "anyres"}"#,
    )
    .unwrap();
    let pc = ProcessorConfig::from_model_dir(&sub).unwrap().unwrap();
    let e = err_text(OnevisionTokens::from_processor_config(&pc).unwrap_err());
    assert!(
        e.contains("proc/processor_config.json") && e.contains("anyres_max_N"),
        "{e}"
    );
}

#[test]
fn empty_and_mismatched_inputs_are_errors_not_panics() {
    let cfg = ImageProcessorConfig::from_model_dir(fixtures().join("configs/clip-tiny")).unwrap();
    let clip = ClipImageProcessor::from_config(&cfg).unwrap();
    assert!(clip.process(&image::RgbImage::new(0, 5)).is_err());
    let b = clip.preprocess(&[]).unwrap();
    assert_eq!(b.shape, vec![0, 3, 32, 32]);
    // Without a crop, shortest-edge outputs of different aspect ratios do not stack.
    let mut no_crop = clip.clone();
    no_crop.base.do_center_crop = false;
    let imgs = [image::RgbImage::new(10, 20), image::RgbImage::new(20, 10)];
    assert!(no_crop.preprocess(&imgs).is_err());
}
