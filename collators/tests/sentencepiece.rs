//! `tokenizer.model` conversion against the sentencepiece library (`tests/fixtures/spm`, written
//! by `tools/fixtures/sentencepiece_fixture.py`): the same ids for plain text, spaces, newlines
//! (byte fallback), non-Latin text and chat markers, for BPE and unigram models.

use lmms_collators::sentencepiece::tokenizer_from_model;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/spm")
        .join(name)
}

#[test]
fn ids_match_sentencepiece() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cases.json")).unwrap()).unwrap();
    for kind in ["bpe", "unigram"] {
        let tok = tokenizer_from_model(&fixture(&format!("{kind}.model")), &[]).unwrap();
        for case in cases[kind].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got = tok.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(got, want, "{kind}: {text:?}");
            let decoded = tok.decode(&got, true).unwrap();
            let plain = case["decoded"].as_str().unwrap();
            if !text.contains('<') {
                assert_eq!(decoded, plain, "{kind}: decode {text:?}");
            }
        }
    }
}

#[test]
fn a_file_that_is_not_a_model_is_named() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("tokenizer.model");
    std::fs::write(&bad, b"\xff\xff\xff not protobuf").unwrap();
    let err = tokenizer_from_model(&bad, &[]).unwrap_err().to_string();
    assert!(err.contains("tokenizer.model"), "{err}");
}
