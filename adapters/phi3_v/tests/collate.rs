//! The Phi-3-V collator against the reference processor's way of building `input_ids`
//! (`processing_phi3_v.py`: the prompt split at `<|image_N|>`, every piece tokenized with BOS,
//! `-N` x `num_img_tokens` between pieces), on the real Phi-3-vision tokenizer; batches with
//! several images per sample and text-only samples.

use lmms_collators::image::phi3_v::Phi3VImageProcessor;
use lmms_collators::text::TextTokenizer;
use lmms_core::collator::{CollateOptions, Collator};
use lmms_core::data::{Role, Sample, SampleOrigin, Turn};
use lmms_core::model_dir::ModelDir;
use lmms_phi3_v::Phi3VCollator;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/phi3-v")
}

fn sample(index: usize, turns: &[(Role, &str)], images: Vec<PathBuf>) -> Sample {
    Sample {
        origin: SampleOrigin {
            file: "data.json".into(),
            index,
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

/// What `Phi3VProcessor(prompt, images)` gives for the conversation rendered with the Phi-3
/// template, `<image>` replaced by `<|image_k|>` in order.
fn processor_ids(dir: &Path, s: &Sample, counts: &[usize]) -> Vec<i64> {
    let tok = TextTokenizer::from_dir(dir).unwrap();
    let mut prompt = String::new();
    let mut k = 0;
    for t in &s.turns {
        let role = match t.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        let mut content = String::new();
        for (i, piece) in t.content.split("<image>").enumerate() {
            if i > 0 {
                k += 1;
                content.push_str(&format!("<|image_{k}|>"));
            }
            content.push_str(piece);
        }
        prompt.push_str(&format!("<|{role}|>\n{content}<|end|>\n"));
    }
    let mut ids = Vec::new();
    let mut rest = prompt.as_str();
    let mut image = 0;
    loop {
        let next = rest.find("<|image_");
        let piece = &rest[..next.unwrap_or(rest.len())];
        let enc = tok.tokenizer.encode(piece, true).unwrap();
        ids.extend(enc.get_ids().iter().map(|&i| i64::from(i)));
        let Some(at) = next else { break };
        let end = at + rest[at..].find("|>").unwrap() + 2;
        image += 1;
        ids.extend(std::iter::repeat_n(-(image as i64), counts[image - 1]));
        rest = &rest[end..];
    }
    ids
}

fn portrait(dir: &Path) -> PathBuf {
    let img = image::RgbImage::from_fn(200, 700, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let path = dir.join("portrait.png");
    img.save(&path).unwrap();
    path
}

#[test]
fn ids_match_the_processor_and_batches_mix_images_and_text() {
    let dir = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let collator =
        Phi3VCollator::new(&ModelDir::open(&dir).unwrap(), &CollateOptions::default()).unwrap();
    let landscape = dir.join("image.png");
    let tall = portrait(tmp.path());
    let samples = [
        sample(
            0,
            &[
                (Role::User, "<image>\nWhat is shown?"),
                (Role::Assistant, "A picture."),
            ],
            vec![landscape.clone()],
        ),
        sample(
            1,
            &[
                (Role::User, "Compare <image> and<image>x. Then say"),
                (Role::Assistant, "Same."),
                (Role::User, "hello <image>  world\n\n"),
                (Role::Assistant, " ok"),
            ],
            vec![landscape.clone(), tall.clone(), landscape.clone()],
        ),
        sample(
            2,
            &[(Role::User, "No image here."), (Role::Assistant, "Fine.")],
            vec![],
        ),
    ];
    let refs: Vec<&Sample> = samples.iter().collect();
    let (batch, skipped) = collator.collate(&refs).unwrap();
    assert!(skipped.is_empty());
    let batch = batch.unwrap();
    let t = &batch.tokens;
    let len = t.seq();
    assert_eq!(t.batch(), 3);
    let p = collator.processor();
    let count = |w: usize, h: usize| Phi3VImageProcessor::num_img_tokens(p.hd_size(w, h));
    let (land, port) = (count(700, 500), count(200, 700));
    assert_eq!(land, 757);
    let per_sample: [Vec<usize>; 3] = [vec![land], vec![land, port, land], vec![]];
    for (row, (s, counts)) in samples.iter().zip(&per_sample).enumerate() {
        let expected = processor_ids(&dir, s, counts);
        let got = &t.input_ids.data[row * len..row * len + expected.len()];
        assert_eq!(got, expected.as_slice(), "sample {row}");
        assert_eq!(collator.num_tokens(s).unwrap(), expected.len());
        let mask = &t.attention_mask.as_ref().unwrap().data[row * len..(row + 1) * len];
        assert_eq!(mask.iter().filter(|&&m| m == 1).count(), expected.len());
        // Only assistant text and its <|end|> train.
        let labels = &t.labels.as_ref().unwrap().data[row * len..(row + 1) * len];
        for (i, &l) in labels.iter().enumerate() {
            if l != -100 {
                assert_eq!(l, got.get(i).copied().unwrap_or(-1));
                assert!(l >= 0);
            }
        }
        assert!(labels.contains(&32007), "sample {row}: <|end|> trains");
    }
    // The first sample's trained tokens are "A picture.<|end|>" and the newline after it.
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let trained: Vec<u32> = t.labels.as_ref().unwrap().data[..len]
        .iter()
        .filter(|&&l| l >= 0)
        .map(|&l| l as u32)
        .collect();
    let text = tok.tokenizer.decode(&trained, false).unwrap();
    assert!(text.starts_with("A picture.<|end|>"), "{text:?}");
    // Pixels: the four images in sample order, 5 crop slots each.
    let pv = batch.pixel_values.as_ref().unwrap();
    assert_eq!(pv.shape, vec![4, 5, 3, 336, 336]);
    let sizes = batch.image_sizes.as_ref().unwrap();
    assert_eq!(sizes.data, vec![672, 672, 672, 672, 1008, 336, 672, 672]);
    // The same image gives the same pixels wherever it is.
    let slot = 5 * 3 * 336 * 336;
    assert!(pv.data[..slot] == pv.data[slot..2 * slot]);
}

#[test]
fn a_video_or_a_missing_image_is_an_error_naming_the_sample() {
    let dir = fixture();
    let collator =
        Phi3VCollator::new(&ModelDir::open(&dir).unwrap(), &CollateOptions::default()).unwrap();
    let mut s = sample(
        7,
        &[(Role::User, "<video> what?"), (Role::Assistant, "x")],
        vec![],
    );
    s.videos = vec!["v.mp4".into()];
    let err = collator.collate(&[&s]).unwrap_err().to_string();
    assert!(
        err.contains("data.json") && err.contains("7") && err.contains("video"),
        "{err}"
    );
    let s = sample(
        3,
        &[(Role::User, "<image> what?"), (Role::Assistant, "x")],
        vec![dir.join("missing.png")],
    );
    let err = collator.collate(&[&s]).unwrap_err().to_string();
    assert!(err.contains("missing.png"), "{err}");
}
