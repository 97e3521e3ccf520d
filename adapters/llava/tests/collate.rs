//! The LLaVA collator against the Hugging Face processors: `tests/fixtures/collate-llava/`
//! (`tools/fixtures/collate_llava.py`) holds, per variant, a processor directory for the tiny
//! model of `tests/fixtures/<variant>` and what HF's processor (`apply_chat_template` with the
//! images, `return_assistant_tokens_mask`) returned for a batch of the samples in
//! `samples.json`. Plus the errors, the length limit, and a collated batch through the model.

use lmms_collators::dataset::{DatasetOptions, MediaCheck, load_samples};
use lmms_collators::template::TemplateOrigin;
use lmms_core::backend::Cpu;
use lmms_core::burn::tensor::Tensor;
use lmms_core::collator::{CollateOptions, Collator, OverLength};
use lmms_core::data::{Role, Sample, SampleOrigin, Turn};
use lmms_core::loader::DType;
use lmms_core::model_dir::ModelDir;
use lmms_core::nn::plan::PartPlan;
use lmms_core::runtime::{FamilyModel, Plans, build_model};
use lmms_core::tensor_file::TensorFile;
use lmms_llava::LlavaFamily;
use lmms_llava::collate::LlavaCollator;
use lmms_llava::family::LlavaInputs;
use std::path::{Path, PathBuf};

const VARIANTS: [&str; 3] = ["llava-1.5", "llava-next", "llava-onevision"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/collate-llava")
}

fn samples() -> Vec<Sample> {
    let options = DatasetOptions {
        image_folder: Some(root()),
        media_check: MediaCheck::Exists,
        ..Default::default()
    };
    load_samples(fixtures().join("samples.json"), &options).unwrap()
}

fn collator_in(dir: &Path, options: &CollateOptions) -> LlavaCollator {
    LlavaCollator::new(&ModelDir::open(dir).unwrap(), options).unwrap()
}

fn collator(variant: &str) -> LlavaCollator {
    collator_in(&fixtures().join(variant), &CollateOptions::default())
}

fn collate(c: &LlavaCollator, samples: &[Sample]) -> LlavaInputs {
    let refs: Vec<&Sample> = samples.iter().collect();
    let (batch, skipped) = c.collate(&refs).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    batch.unwrap()
}

fn sample(turns: &[(Role, &str)], images: Vec<PathBuf>) -> Sample {
    Sample {
        origin: SampleOrigin {
            file: PathBuf::from("data/train.json"),
            index: 7,
        },
        system: None,
        turns: turns
            .iter()
            .map(|(role, content)| Turn {
                role: *role,
                content: content.to_string(),
            })
            .collect(),
        images,
        videos: vec![],
    }
}

fn image(name: &str) -> PathBuf {
    root().join("tests/fixtures/processors/images").join(name)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    let mut max = 0f32;
    let mut differ = 0;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        if x.to_bits() != y.to_bits() {
            differ += 1;
        }
        max = max.max(d);
    }
    (max, differ)
}

#[test]
fn batches_match_the_hf_processors() {
    let samples = samples();
    assert_eq!(samples.len(), 4);
    for variant in VARIANTS {
        let c = collator(variant);
        let batch = collate(&c, &samples);
        let expected =
            TensorFile::open(fixtures().join(variant).join("expected.safetensors")).unwrap();
        let t = &batch.tokens;
        for (name, got) in [
            ("input_ids", Some(&t.input_ids)),
            ("attention_mask", t.attention_mask.as_ref()),
            ("labels", t.labels.as_ref()),
        ] {
            let want = expected.i64(name).unwrap();
            let got = got.unwrap();
            assert_eq!(got.shape, want.shape, "{variant}: {name} shape");
            for row in 0..want.shape[0] {
                let n = want.shape[1];
                assert_eq!(
                    got.data[row * n..(row + 1) * n],
                    want.data[row * n..(row + 1) * n],
                    "{variant}: {name} row {row}"
                );
            }
        }
        let want = expected.f32("pixel_values").unwrap();
        let got = batch.pixel_values.as_ref().unwrap();
        assert_eq!(got.shape, want.shape, "{variant}: pixel_values shape");
        let (max, differ) = max_abs_diff(&got.data, &want.data);
        assert_eq!(
            differ, 0,
            "{variant}: {differ} pixel values differ from HF's (max abs diff {max})"
        );
        match (expected.contains("image_sizes"), &batch.image_sizes) {
            (true, Some(got)) => assert_eq!(*got, expected.i64("image_sizes").unwrap()),
            (false, None) => {}
            (want, got) => panic!("{variant}: image_sizes expected {want}, got {got:?}"),
        }
        assert!(batch.pixel_values_videos.is_none());

        // num_tokens: each sample's unpadded length.
        let mask = expected.i64("attention_mask").unwrap();
        for (i, s) in samples.iter().enumerate() {
            let n = mask.shape[1];
            let len = mask.data[i * n..(i + 1) * n]
                .iter()
                .filter(|&&m| m == 1)
                .count();
            assert_eq!(
                c.num_tokens(s).unwrap(),
                len,
                "{variant}: num_tokens of sample {i}"
            );
        }
    }
}

#[test]
fn one_sample_batches_match_the_full_batch() {
    // Each sample alone: the same row without padding, and its own images.
    let samples = samples();
    let c = collator("llava-next");
    let full = collate(&c, &samples);
    let n = full.tokens.seq();
    let mut image = 0;
    let pv = full.pixel_values.as_ref().unwrap();
    let per_image: usize = pv.shape[1..].iter().product();
    for (i, s) in samples.iter().enumerate() {
        let one = collate(&c, std::slice::from_ref(s));
        let len = one.tokens.seq();
        assert_eq!(
            one.tokens.input_ids.data,
            full.tokens.input_ids.data[i * n..i * n + len]
        );
        assert!(
            full.tokens.attention_mask.as_ref().unwrap().data[i * n + len..(i + 1) * n]
                .iter()
                .all(|&m| m == 0)
        );
        match &one.pixel_values {
            None => assert!(s.images.is_empty()),
            Some(p) => {
                let tiles = p.shape[1];
                let tile: usize = p.shape[2..].iter().product();
                for k in 0..p.shape[0] {
                    let from = (image + k) * per_image;
                    assert_eq!(
                        p.data[k * tiles * tile..(k + 1) * tiles * tile],
                        pv.data[from..from + tiles * tile]
                    );
                }
                image += p.shape[0];
            }
        }
    }
}

#[test]
fn collators_read_the_fixture_layouts() {
    // llava-1.5: hub layout (preprocessor_config.json, chat_template.json); the others:
    // transformers 5 (processor_config.json with image_processor, chat_template.jinja).
    let c = collator("llava-1.5");
    assert!(
        matches!(c.template().origin(), TemplateOrigin::File(p) if p.ends_with("chat_template.json"))
    );
    assert_eq!(
        (c.image_token_id(), c.pad_id(), c.max_length()),
        (250, 251, 256)
    );
    let c = collator("llava-onevision");
    assert!(
        matches!(c.template().origin(), TemplateOrigin::File(p) if p.ends_with("chat_template.jinja"))
    );
    assert_eq!((c.image_token_id(), c.pad_id()), (254, 253));
}

#[test]
fn train_on_everything_labels_every_text_token() {
    let samples = samples();
    for variant in VARIANTS {
        let options = CollateOptions {
            train_on_everything: true,
            ..Default::default()
        };
        let c = collator_in(&fixtures().join(variant), &options);
        let b = collate(&c, &samples);
        let t = &b.tokens;
        let mask = &t.attention_mask.as_ref().unwrap().data;
        let labels = &t.labels.as_ref().unwrap().data;
        for ((&id, &m), &l) in t.input_ids.data.iter().zip(mask).zip(labels) {
            let want = if m == 1 && id != i64::from(c.image_token_id()) {
                id
            } else {
                -100
            };
            assert_eq!(l, want, "{variant}");
        }
        // Same ids as with assistant-only labels.
        assert_eq!(
            t.input_ids,
            collate(&collator(variant), &samples).tokens.input_ids
        );
    }
}

#[test]
fn over_length_samples_are_skipped_or_rejected() {
    let samples = samples();
    let refs: Vec<&Sample> = samples.iter().collect();
    // llava-1.5 lengths: 95, 88, 74, 63.
    let options = CollateOptions {
        model_max_length: Some(80),
        ..Default::default()
    };
    let c = collator_in(&fixtures().join("llava-1.5"), &options);
    let (batch, skipped) = c.collate(&refs).unwrap();
    let batch = batch.unwrap();
    assert_eq!(skipped.len(), 2);
    assert_eq!(
        skipped.iter().map(|s| s.origin.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(
        skipped[0].reason.contains("95 tokens"),
        "{}",
        skipped[0].reason
    );
    assert!(skipped[0].reason.contains("80"), "{}", skipped[0].reason);
    assert_eq!(batch.tokens.input_ids.shape, [2, 74]);
    // Only sample 3's image is left.
    assert_eq!(batch.pixel_values.as_ref().unwrap().shape, [1, 3, 32, 32]);
    let full = collate(&collator("llava-1.5"), &samples);
    let n = full.tokens.seq();
    assert_eq!(
        batch.tokens.input_ids.data[74..74 + 63],
        full.tokens.input_ids.data[3 * n..3 * n + 63]
    );

    // Everything skipped: no batch.
    let (batch, skipped) = c.collate(&refs[..2]).unwrap();
    assert!(batch.is_none());
    assert_eq!(skipped.len(), 2);

    let options = CollateOptions {
        model_max_length: Some(80),
        over_length: OverLength::Reject,
        ..Default::default()
    };
    let c = collator_in(&fixtures().join("llava-1.5"), &options);
    let e = c.collate(&refs).unwrap_err().to_string();
    assert!(e.contains("samples.json: sample 0"), "{e}");
    assert!(e.contains("95 tokens"), "{e}");
    assert!(c.collate(&refs[2..]).is_ok());

    // The default limit is the LLM's max_position_embeddings (256 here): NeXT's two-image
    // sample (198) fits, a long text does not.
    let c = collator("llava-next");
    let long = "word ".repeat(300);
    let s = sample(&[(Role::User, &long), (Role::Assistant, "ok")], vec![]);
    let (batch, skipped) = c.collate(&[&s]).unwrap();
    assert!(batch.is_none());
    assert!(
        skipped[0].reason.contains("over the limit of 256"),
        "{}",
        skipped[0].reason
    );
}

#[test]
fn missing_image_names_the_file_and_the_sample() {
    let c = collator("llava-1.5");
    let missing = root().join("tests/fixtures/no-such-image.png");
    let s = sample(
        &[
            (Role::User, "<image>\nWhat is it?"),
            (Role::Assistant, "Nothing."),
        ],
        vec![missing.clone()],
    );
    let e = c.collate(&[&s]).unwrap_err().to_string();
    assert!(e.contains("data/train.json: sample 7"), "{e}");
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let e = collator("llava-next")
        .num_tokens(&s)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample 7") && e.contains("no-such-image.png"),
        "{e}"
    );

    // Not an image at all.
    let s = sample(
        &[
            (Role::User, "<image>\nWhat is it?"),
            (Role::Assistant, "Nothing."),
        ],
        vec![fixtures().join("samples.json")],
    );
    let e = c.collate(&[&s]).unwrap_err().to_string();
    assert!(
        e.contains("sample 7") && e.contains("samples.json") && e.contains("decodable"),
        "{e}"
    );
}

#[test]
fn placeholder_count_mismatch_is_an_error() {
    for variant in VARIANTS {
        let c = collator(variant);
        // Two placeholders, one image.
        let s = sample(
            &[
                (Role::User, "<image>\n<image>\nCompare."),
                (Role::Assistant, "Same."),
            ],
            vec![image("rgb_h17_w23.png")],
        );
        let e = c.collate(&[&s]).unwrap_err().to_string();
        assert!(
            e.contains("sample 7") && e.contains("2 `<image>`") && e.contains("1 images"),
            "{variant}: {e}"
        );
        // An image without a placeholder.
        let s = sample(
            &[(Role::User, "Compare."), (Role::Assistant, "Same.")],
            vec![image("rgb_h17_w23.png")],
        );
        let e = c.num_tokens(&s).unwrap_err().to_string();
        assert!(
            e.contains("sample 7") && e.contains("0 `<image>`"),
            "{variant}: {e}"
        );
    }
}

#[test]
fn videos_and_untrainable_samples_are_errors() {
    // A missing video is named with its sample; num_tokens needs no decoding.
    let c = collator("llava-onevision");
    let mut s = sample(
        &[
            (Role::User, "<video>\nWhat happens?"),
            (Role::Assistant, "A dog runs."),
        ],
        vec![],
    );
    s.videos = vec![PathBuf::from("clip.mp4")];
    let e = c.collate(&[&s]).unwrap_err().to_string();
    assert!(
        e.contains("sample 7") && e.contains("video clip.mp4") && e.contains("No such file"),
        "{e}"
    );
    assert!(c.num_tokens(&s).unwrap() > 37);
    // Models that take no videos say so.
    for variant in ["llava-1.5", "llava-next"] {
        let c = collator(variant);
        let e = c.collate(&[&s]).unwrap_err().to_string();
        assert!(
            e.contains("sample 7") && e.contains("takes no videos"),
            "{e}"
        );
        let e = c.num_tokens(&s).unwrap_err().to_string();
        assert!(e.contains("takes no videos"), "{e}");
        assert_eq!(c.video_token_id(), None);
    }

    let s = sample(&[(Role::User, "Hello?")], vec![]);
    let e = c.collate(&[&s]).unwrap_err().to_string();
    assert!(
        e.contains("sample 7") && e.contains("nothing would train"),
        "{e}"
    );
}

/// A copy of a fixture directory without some of its files.
fn copy_without(variant: &str, leave_out: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(variant)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !leave_out.contains(&name.as_str()) {
            std::fs::copy(&path, tmp.path().join(&name)).unwrap();
        }
    }
    tmp
}

#[test]
fn built_in_templates_stand_in_for_a_missing_one() {
    let samples = samples();
    // llava-1.5 has its template in chat_template.json, OneVision in chat_template.jinja.
    for (variant, file, builtin) in [
        ("llava-1.5", "chat_template.json", "llava-1.5"),
        ("llava-onevision", "chat_template.jinja", "chatml"),
    ] {
        let dir = copy_without(variant, &[file]);
        let c = collator_in(dir.path(), &CollateOptions::default());
        assert_eq!(c.template().origin(), &TemplateOrigin::BuiltIn(builtin));
        let b = collate(&c, &samples);
        let hf = collate(&collator(variant), &samples);
        // Same images, same number of image tokens, some labels on every row.
        assert_eq!(b.pixel_values, hf.pixel_values);
        let id = i64::from(c.image_token_id());
        let count = |x: &LlavaInputs| x.tokens.input_ids.data.iter().filter(|&&i| i == id).count();
        assert_eq!(count(&b), count(&hf));
        let t = &b.tokens;
        for row in t.labels.as_ref().unwrap().data.chunks(t.seq()) {
            assert!(row.iter().any(|&l| l != -100), "{variant}");
        }
    }
    // The built-in llava-1.5 template renders the fixture's layout, so the ids are HF's, except
    // where a sample's text comes before its image: the built-in keeps the order, HF's
    // templates put images first.
    let dir = copy_without("llava-1.5", &["chat_template.json"]);
    let c = collator_in(dir.path(), &CollateOptions::default());
    let ours = collate(&c, &samples).tokens.input_ids;
    let theirs = collate(&collator("llava-1.5"), &samples).tokens.input_ids;
    let n = theirs.shape[1];
    assert_eq!(ours.data[..3 * n], theirs.data[..3 * n]);
    assert_ne!(ours.data[3 * n..], theirs.data[3 * n..]);
}

#[test]
fn missing_files_are_named() {
    let err = |variant: &str, leave_out: &[&str]| {
        let dir = copy_without(variant, leave_out);
        let e = LlavaCollator::new(
            &ModelDir::open(dir.path()).unwrap(),
            &CollateOptions::default(),
        )
        .unwrap_err()
        .to_string();
        (e, dir)
    };
    let (e, dir) = err("llava-1.5", &["tokenizer.json"]);
    assert!(
        e.contains(&dir.path().display().to_string()) && e.contains("tokenizer.json"),
        "{e}"
    );
    let (e, _) = err("llava-1.5", &["preprocessor_config.json"]);
    assert!(e.contains("preprocessor_config.json"), "{e}");
    let (e, _) = err("llava-next", &["processor_config.json"]);
    assert!(e.contains("no image processor config"), "{e}");
}

#[test]
fn image_processor_must_fit_the_model() {
    // A NeXT model with the llava-1.5 (CLIP) processor; a tile size the tower does not take.
    let dir = copy_without("llava-1.5", &["config.json"]);
    std::fs::copy(
        fixtures().join("llava-next/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = LlavaCollator::new(
        &ModelDir::open(dir.path()).unwrap(),
        &CollateOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("CLIPImageProcessor") && e.contains("LlavaNextImageProcessor"),
        "{e}"
    );

    let dir = copy_without("llava-1.5", &[]);
    let path = dir.path().join("preprocessor_config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("32", "48");
    std::fs::write(&path, text).unwrap();
    let e = LlavaCollator::new(
        &ModelDir::open(dir.path()).unwrap(),
        &CollateOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("48x48") && e.contains("32x32"), "{e}");
}

/// `batch` through the tiny model of `tests/fixtures/<model>`: finite logits `[B, T, V]`.
fn forward(model: &str, batch: &LlavaInputs) -> [usize; 3] {
    let dir = ModelDir::open(root().join("tests/fixtures").join(model)).unwrap();
    let frozen = Plans::uniform(PartPlan::FROZEN, None);
    let device = Default::default();
    let (m, _) = build_model::<Cpu, _>(&LlavaFamily, &dir, DType::F32, &frozen, &device).unwrap();
    let logits: Tensor<Cpu, 3> = LlavaFamily.forward(&m, batch, &device).unwrap();
    let dims = logits.dims();
    let values = logits.into_data().to_vec::<f32>().unwrap();
    assert!(
        values.iter().all(|v| v.is_finite()),
        "{model}: non-finite logits"
    );
    assert_eq!(dims[..2], batch.tokens.input_ids.shape[..], "{model}");
    dims
}

#[test]
fn collated_batches_run_through_the_models() {
    let samples = samples();
    // LLaVA-1.5 and NeXT (the processor directories share the models' config.json): the whole
    // batch, two-image sample and text-only sample included.
    for variant in ["llava-1.5", "llava-next"] {
        let batch = collate(&collator(variant), &samples);
        assert_eq!(forward(variant, &batch)[2], 256);
    }
    // OneVision: single-image samples, one of them big enough for the anyres_max reduction
    // (a 2x2 grid of 5x5 features = 100 > 2 tiles' worth). A multi-image sample needs the
    // model to know `batch_num_images`, which LlavaInputs does not carry yet.
    let big = sample(
        &[
            (Role::User, "<image>\nDescribe."),
            (Role::Assistant, "Noise."),
        ],
        vec![image("rgb_h90_w50.png")],
    );
    let ov = [
        samples[0].clone(),
        samples[2].clone(),
        samples[3].clone(),
        big,
    ];
    let batch = collate(&collator("llava-onevision"), &ov);
    assert_eq!(batch.pixel_values.as_ref().unwrap().shape[..2], [3, 7]);
    assert_eq!(forward("llava-onevision", &batch)[2], 256);
}

#[test]
fn interleave_batches_run_through_the_model() {
    // LLaVA-Interleave (Qwen2 + SigLIP, strategy `full`): the OneVision directory's tokenizer
    // and template (`<image>` = 254, pad 253, as the interleave fixture's config), a SigLIP
    // processor, the interleave model's config.
    let dir = copy_without(
        "llava-onevision",
        &[
            "config.json",
            "processor_config.json",
            "expected.safetensors",
        ],
    );
    std::fs::copy(
        root().join("tests/fixtures/llava-interleave/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        root().join("tests/fixtures/processors/configs/siglip-tiny/preprocessor_config.json"),
        dir.path().join("preprocessor_config.json"),
    )
    .unwrap();
    let c = collator_in(dir.path(), &CollateOptions::default());
    let samples = samples();
    let batch = collate(&c, &samples);
    assert_eq!(batch.pixel_values.as_ref().unwrap().shape, [4, 3, 32, 32]);
    assert!(batch.image_sizes.is_none());
    // 16 tokens per image: 4x4 patches, no class token, nothing dropped.
    let per_row: Vec<usize> = batch
        .tokens
        .input_ids
        .data
        .chunks(batch.tokens.seq())
        .map(|r| r.iter().filter(|&&i| i == 254).count())
        .collect();
    assert_eq!(per_row, [16, 32, 0, 16]);
    assert_eq!(forward("llava-interleave", &batch)[2], 256);
}

/// Collation throughput (decode + resize + normalize + render + tokenize + pad) on 640x480 PNG
/// photos through LLaVA-1.5-7B's processor (CLIP 336): a benchmark, run by hand with
/// `cargo test --release -p lmms-llava --test collate -- --ignored --nocapture throughput`.
/// `tools/fixtures/collate_llava.py --bench` times HF's processor on the same samples.
#[test]
#[ignore = "benchmark"]
fn collate_throughput() {
    let dir = copy_without("llava-1.5", &["config.json", "preprocessor_config.json"]);
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("llava-1.5/config.json")).unwrap(),
    )
    .unwrap();
    config["vision_config"]["image_size"] = 336.into();
    config["vision_config"]["patch_size"] = 14.into();
    config["text_config"]["max_position_embeddings"] = 4096.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/processors/configs/clip-336/preprocessor_config.json"),
        dir.path().join("preprocessor_config.json"),
    )
    .unwrap();
    let c = collator_in(dir.path(), &CollateOptions::default());
    let photo = image("photo_h480_w640.png");
    let s = sample(
        &[
            (Role::User, "<image>\nDescribe the image."),
            (
                Role::Assistant,
                "It shows some noise on a green background.",
            ),
        ],
        vec![photo],
    );
    let batch: Vec<&Sample> = vec![&s; 8];
    let b = collate(&c, std::slice::from_ref(&s));
    let image_tokens = b
        .tokens
        .input_ids
        .data
        .iter()
        .filter(|&&i| i == 250)
        .count();
    assert_eq!(image_tokens, 576);
    assert_eq!(b.pixel_values.unwrap().shape, [1, 3, 336, 336]);
    c.collate(&batch).unwrap();
    let rounds = 24;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        c.collate(&batch).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "LlavaCollator, CLIP-336, 640x480 PNG, batches of 8: {:.1} samples/s",
        (rounds * batch.len()) as f64 / secs
    );
}

// ---------------------------------------------------------------------------------------------
// Videos: `tests/fixtures/video/` (`tools/fixtures/video.py`) holds a processor directory for the
// tiny NeXT-Video model (hub layout: `video_preprocessor_config.json`) and one for OneVision
// (transformers 5 layout: `video_processor` in `processor_config.json`), and what HF's
// processors returned for `samples.json` with `num_frames=4` (HF's video processors stood in for
// by the Pillow image processors with their settings, on PyAV-decoded frames: torchvision is not
// in the reference environment).

const VIDEO_VARIANTS: [&str; 2] = ["llava-next-video", "llava-onevision"];

fn video_fixtures() -> PathBuf {
    root().join("tests/fixtures/video")
}

fn video_samples() -> Vec<Sample> {
    let options = DatasetOptions {
        media_check: MediaCheck::Exists,
        ..Default::default()
    };
    load_samples(video_fixtures().join("samples.json"), &options).unwrap()
}

fn video_collator(variant: &str, num_frames: usize) -> LlavaCollator {
    let options = CollateOptions {
        num_frames,
        ..Default::default()
    };
    collator_in(&video_fixtures().join(variant), &options)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn video_batches_match_the_hf_processors() {
    let samples = video_samples();
    assert_eq!(samples.len(), 4);
    for variant in VIDEO_VARIANTS {
        let c = video_collator(variant, 4);
        let info = read_json(&video_fixtures().join(variant).join("expected.json"));
        let per_video = info["video_tokens_per_video"].as_u64().unwrap() as usize;
        assert_eq!(c.video_tokens(), Ok(per_video), "{variant}");
        let video_id = info["video_token_id"].as_i64().unwrap();
        assert_eq!(c.video_token_id().map(i64::from), Some(video_id));

        let batch = collate(&c, &samples);
        let expected =
            TensorFile::open(video_fixtures().join(variant).join("expected.safetensors")).unwrap();
        let t = &batch.tokens;
        for (name, got) in [
            ("input_ids", Some(&t.input_ids)),
            ("attention_mask", t.attention_mask.as_ref()),
            ("labels", t.labels.as_ref()),
        ] {
            let want = expected.i64(name).unwrap();
            let got = got.unwrap();
            assert_eq!(got.shape, want.shape, "{variant}: {name} shape");
            let n = want.shape[1];
            for row in 0..want.shape[0] {
                assert_eq!(
                    got.data[row * n..(row + 1) * n],
                    want.data[row * n..(row + 1) * n],
                    "{variant}: {name} row {row}"
                );
            }
        }
        // Exact token counts per sample.
        let counts: Vec<usize> = t
            .input_ids
            .data
            .chunks(t.seq())
            .map(|r| r.iter().filter(|&&i| i == video_id).count())
            .collect();
        let want: Vec<usize> =
            serde_json::from_value(info["video_tokens_per_sample"].clone()).unwrap();
        assert_eq!(counts, want, "{variant}");
        // Videos: [V, F, 3, H, W]; decoded frames are bit-identical to PyAV's, so the pixels
        // are HF's; the assert allows one level (1 / 255 / std) on each value.
        let want = expected.f32("pixel_values_videos").unwrap();
        let got = batch.pixel_values_videos.as_ref().unwrap();
        assert_eq!(
            got.shape, want.shape,
            "{variant}: pixel_values_videos shape"
        );
        let (max, differ) = max_abs_diff(&got.data, &want.data);
        assert!(
            max <= 1.0 / 255.0 / 0.26 + 1e-6,
            "{variant}: max abs diff {max}"
        );
        assert_eq!(
            differ, 0,
            "{variant}: {differ} video pixel values differ (max {max})"
        );
        // Images: shape and sizes (their values are checked by the collate-llava fixtures).
        let shape: Vec<usize> = serde_json::from_value(info["pixel_values_shape"].clone()).unwrap();
        assert_eq!(batch.pixel_values.as_ref().unwrap().shape, shape);
        assert_eq!(
            *batch.image_sizes.as_ref().unwrap(),
            expected.i64("image_sizes").unwrap()
        );
        assert_eq!(batch.batch_num_images.as_deref(), Some(&[0, 0, 1, 0][..]));

        let lengths: Vec<usize> = serde_json::from_value(info["lengths"].clone()).unwrap();
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(
                c.num_tokens(s).unwrap(),
                lengths[i],
                "{variant}: num_tokens {i}"
            );
        }
    }
}

#[test]
fn video_batches_run_through_the_models() {
    // The collated video batches (videos, an image with a video, text only) through the tiny
    // NeXT-Video and OneVision models: finite logits for every position.
    let samples = video_samples();
    for variant in VIDEO_VARIANTS {
        let batch = collate(&video_collator(variant, 4), &samples);
        assert_eq!(
            batch.pixel_values_videos.as_ref().unwrap().shape[..2],
            [4, 4]
        );
        assert_eq!(forward(variant, &batch), [4, batch.tokens.seq(), 256]);
    }
    // Another frame count: the model takes any.
    let batch = collate(&video_collator("llava-next-video", 8), &samples[..1]);
    assert_eq!(
        batch.pixel_values_videos.as_ref().unwrap().shape,
        [1, 8, 3, 32, 32]
    );
    forward("llava-next-video", &batch);
}

#[test]
fn num_frames_sets_the_video_tokens() {
    // NeXT-Video: 4x4 patches pooled to 2x2 per frame; OneVision: 5x5 -> 3x3 per frame + 1.
    for (frames, next, ov) in [(1, 4, 10), (8, 32, 73), (24, 96, 217)] {
        assert_eq!(
            video_collator("llava-next-video", frames).video_tokens(),
            Ok(next)
        );
        assert_eq!(
            video_collator("llava-onevision", frames).video_tokens(),
            Ok(ov)
        );
    }
    // More frames than the clip has: an error naming the sample and the clip (the length limit
    // is raised: an over-long sample is skipped before its videos are decoded).
    let samples = video_samples();
    let options = CollateOptions {
        num_frames: 25,
        model_max_length: Some(4096),
        ..Default::default()
    };
    let c = collator_in(&video_fixtures().join("llava-onevision"), &options);
    let e = c.collate(&[&samples[0]]).unwrap_err().to_string();
    assert!(
        e.contains("sample 0") && e.contains("clip.mp4") && e.contains("fewer than the 25 asked"),
        "{e}"
    );
}

/// A copy of a video fixture directory.
fn video_dir_copy(variant: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(video_fixtures().join(variant)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

#[test]
fn video_token_must_match_the_config() {
    // config.json's video_token_index is not the tokenizer's `<video>`: image and text samples
    // still collate, a video sample gets the reason.
    let tmp = video_dir_copy("llava-next-video");
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"video_token_index\": 250", "\"video_token_index\": 5");
    std::fs::write(&config, text).unwrap();
    let c = collator_in(tmp.path(), &CollateOptions::default());
    assert_eq!(c.video_token_id(), None);
    let samples = video_samples();
    collate(&c, &samples[3..]);
    let e = c.collate(&[&samples[0]]).unwrap_err().to_string();
    assert!(
        e.contains("sample 0") && e.contains("`<video>` is id 250") && e.contains("is 5"),
        "{e}"
    );
}

#[test]
fn video_processor_must_fit_the_model() {
    // A video processor making 48x48 frames for a 32x32 tower: image-only samples still collate,
    // a video sample gets the reason.
    let tmp = video_dir_copy("llava-next-video");
    let vp = tmp.path().join("video_preprocessor_config.json");
    let text = std::fs::read_to_string(&vp)
        .unwrap()
        .replace("\"height\": 32", "\"height\": 48")
        .replace("\"width\": 32", "\"width\": 48")
        .replace("\"shortest_edge\": 32", "\"shortest_edge\": 48");
    std::fs::write(&vp, text).unwrap();
    let c = collator_in(tmp.path(), &CollateOptions::default());
    let samples = video_samples();
    collate(&c, &samples[3..]);
    let e = c.collate(&[&samples[0]]).unwrap_err().to_string();
    assert!(
        e.contains("sample 0") && e.contains("48x48") && e.contains("32x32"),
        "{e}"
    );
}
