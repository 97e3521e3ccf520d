//! The InternLM2 collator on a small ChatML tokenizer with the built-in `internlm2` template.

use lmms_collators::text::{IGNORE_INDEX, TextTokenizer};
use lmms_core::collator::{CollateOptions, Collator, OverLength};
use lmms_core::data::{Role, Sample, SampleOrigin, Turn};
use lmms_core::model_dir::ModelDir;
use lmms_internlm2::InternLm2Collator;
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

/// A model directory: the parity fixture's config, a ChatML tokenizer, no chat template.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("tests/fixtures/internlm2/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        repo("tests/fixtures/collate/chatml/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    dir
}

fn sample(index: usize, turns: &[(Role, &str)]) -> Sample {
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
        images: vec![],
        videos: vec![],
    }
}

#[test]
fn labels_assistant_replies_with_im_end_and_pads_right() {
    let dir = model_dir();
    let model = ModelDir::open(dir.path()).unwrap();
    let collator = InternLm2Collator::new(&model, &CollateOptions::default()).unwrap();
    let tok = TextTokenizer::from_dir(dir.path()).unwrap();
    let (bos, im_end) = (
        tok.token_id("<|endoftext|>").unwrap() as i64,
        tok.token_id("<|im_end|>").unwrap() as i64,
    );
    assert_eq!(collator.pad_id() as i64, bos);
    let short = sample(0, &[(Role::User, "hi"), (Role::Assistant, "ok")]);
    let long = sample(
        1,
        &[
            (Role::User, "who are you"),
            (Role::Assistant, "an assistant"),
            (Role::User, "thanks"),
            (Role::Assistant, "bye"),
        ],
    );
    let (batch, skipped) = collator.collate(&[&short, &long]).unwrap();
    assert!(skipped.is_empty());
    let t = batch.unwrap();
    let (b, len) = (t.batch(), t.seq());
    assert_eq!(b, 2);
    let mask = t.attention_mask.as_ref().unwrap();
    let labels = t.labels.as_ref().unwrap();
    for row in 0..b {
        let ids = &t.input_ids.data[row * len..(row + 1) * len];
        let m = &mask.data[row * len..(row + 1) * len];
        let l = &labels.data[row * len..(row + 1) * len];
        let n = m.iter().filter(|&&x| x == 1).count();
        // BOS first (the template writes it), right padding with pad id, mask 0, label -100.
        assert_eq!(ids[0], bos);
        assert!(m[..n].iter().all(|&x| x == 1) && m[n..].iter().all(|&x| x == 0));
        assert!(ids[n..].iter().all(|&i| i == bos));
        assert!(l[n..].iter().all(|&x| x == IGNORE_INDEX));
        // Labels are the ids where set; the prompt's first tokens never train.
        for i in 0..n {
            assert!(l[i] == IGNORE_INDEX || l[i] == ids[i]);
        }
        assert_eq!(l[0], IGNORE_INDEX);
        // Every reply's <|im_end|> trains; the user turns' do not.
        let ends: Vec<usize> = (0..n).filter(|&i| ids[i] == im_end).collect();
        let trained: Vec<bool> = ends.iter().map(|&i| l[i] != IGNORE_INDEX).collect();
        let expected: Vec<bool> = (0..ends.len()).map(|k| k % 2 == 1).collect();
        assert_eq!(trained, expected, "row {row}");
        // The trained text is the replies.
        let trained_ids: Vec<u32> = l[..n]
            .iter()
            .filter(|&&x| x != IGNORE_INDEX)
            .map(|&x| x as u32)
            .collect();
        let text = tok.tokenizer.decode(&trained_ids, false).unwrap();
        let reply = if row == 0 { "ok" } else { "an assistant" };
        assert!(text.contains(reply), "{text:?}");
        assert!(!text.contains("hi") && !text.contains("thanks"), "{text:?}");
    }
    assert_eq!(collator.num_tokens(&long).unwrap(), len);
}

#[test]
fn skips_or_rejects_long_samples_and_rejects_images() {
    let dir = model_dir();
    let model = ModelDir::open(dir.path()).unwrap();
    let long = sample(
        3,
        &[(Role::User, &"word ".repeat(20)), (Role::Assistant, "ok")],
    );
    let short = sample(4, &[(Role::User, "hi"), (Role::Assistant, "ok")]);
    let options = CollateOptions {
        model_max_length: Some(16),
        ..Default::default()
    };
    let collator = InternLm2Collator::new(&model, &options).unwrap();
    let (batch, skipped) = collator.collate(&[&long, &short]).unwrap();
    assert_eq!(batch.unwrap().batch(), 1);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].origin.index, 3);
    assert!(collator.num_tokens(&long).unwrap() > 16);

    let reject = CollateOptions {
        over_length: OverLength::Reject,
        ..options
    };
    let collator = InternLm2Collator::new(&model, &reject).unwrap();
    let err = collator.collate(&[&long]).unwrap_err().to_string();
    assert!(err.contains("data.json") && err.contains('3'), "{err}");

    let mut with_image = short.clone();
    with_image.images.push("a.png".into());
    with_image.turns[0].content = "<image>hi".into();
    let err = collator.collate(&[&with_image]).unwrap_err().to_string();
    assert!(err.contains("text-only"), "{err}");
}

/// A directory as the hub's InternLM2 has it: only the sentencepiece `tokenizer.model`, the chat
/// markers as special added tokens in `tokenizer_config.json`. It converts as transformers'
/// fast tokenizer would, and collates with the markers as single tokens.
#[test]
fn sentencepiece_tokenizer_model_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("tests/fixtures/internlm2/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        repo("tests/fixtures/spm/bpe.model"),
        dir.path().join("tokenizer.model"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
            "added_tokens_decoder": {
              "3": {"content": "<|im_start|>", "special": true},
              "4": {"content": "<|im_end|>", "special": true}
            }}"#,
    )
    .unwrap();
    let model = ModelDir::open(dir.path()).unwrap();
    let collator = InternLm2Collator::new(&model, &CollateOptions::default()).unwrap();
    let s = sample(
        0,
        &[
            (Role::User, "who are you"),
            (Role::Assistant, "an assistant"),
        ],
    );
    let (batch, _) = collator.collate(&[&s]).unwrap();
    let t = batch.unwrap();
    let ids = &t.input_ids.data;
    // BOS, then <|im_start|> as one token (id 3), and two <|im_end|> (id 4).
    assert_eq!(ids[0], 1);
    assert_eq!(ids[1], 3);
    assert_eq!(ids.iter().filter(|&&i| i == 4).count(), 2);
    let labels = t.labels.as_ref().unwrap();
    let last_end = ids.iter().rposition(|&i| i == 4).unwrap();
    assert_eq!(labels.data[last_end], 4);
    let tok = TextTokenizer::from_dir(dir.path()).unwrap();
    let trained: Vec<u32> = labels
        .data
        .iter()
        .filter(|&&x| x != IGNORE_INDEX)
        .map(|&x| x as u32)
        .collect();
    // The reply, its <|im_end|> (skipped in decoding) and the template's newline after it.
    assert_eq!(tok.decode(&trained).unwrap().trim_end(), "an assistant");
}
