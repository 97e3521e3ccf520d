//! A sentencepiece `tokenizer.model` as a fast tokenizer, converted the way transformers'
//! `convert_slow_tokenizer` does for Llama-style models (`LlamaConverter`, legacy mode, which
//! InternLM2's `InternLM2Converter` repeats): the pieces and scores become a BPE model with merges
//! ranked by the merged piece's score (or a unigram model with its scores), byte fallback as the
//! model has it, `▁` for spaces plus the dummy prefix as a normalizer, and control and
//! user-defined pieces as special tokens, so text is split at them first, as the slow tokenizer
//! does. Models that ship only `tokenizer.model` (InternLM2, older Llama) load without a Python
//! conversion step.

use lmms_core::{Error, Result};
use prost::Message;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// `sentencepiece_model.proto`, the fields the conversion needs.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<Piece>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct Piece {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    unk_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
}

// Piece types and model types of the proto.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNIGRAM: i32 = 1;
const BPE: i32 = 2;

/// A token of `tokenizer_config.json`'s `added_tokens_decoder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    pub special: bool,
}

/// The `added_tokens_decoder` of the `tokenizer_config.json` in `dir` (none when absent).
pub fn added_tokens(dir: &Path) -> Result<Vec<AddedToken>> {
    let path = dir.join("tokenizer_config.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(vec![]);
    };
    let config: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::config(&path, format!("invalid JSON: {e}")))?;
    let mut out = vec![];
    if let Some(map) = config
        .get("added_tokens_decoder")
        .and_then(Value::as_object)
    {
        for (id, token) in map {
            let (Ok(id), Some(content)) =
                (id.parse(), token.get("content").and_then(Value::as_str))
            else {
                return Err(Error::config(
                    &path,
                    format!("added_tokens_decoder entry `{id}` needs a numeric id and a content"),
                ));
            };
            out.push(AddedToken {
                id,
                content: content.to_string(),
                special: token
                    .get("special")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
    }
    out.sort_by_key(|t| t.id);
    Ok(out)
}

/// Converts `path` (a `tokenizer.model`) into a fast tokenizer. `extra` are the tokens of
/// `tokenizer_config.json`: pieces it marks special split the text too, and tokens past the
/// model's pieces are added with their ids.
pub fn tokenizer_from_model(path: &Path, extra: &[AddedToken]) -> Result<tokenizers::Tokenizer> {
    let json = tokenizer_json(path, extra)?;
    tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes())
        .map_err(|e| Error::config(path, format!("cannot build a tokenizer from it: {e}")))
}

/// The `tokenizer.json` document equivalent to `path`.
pub fn tokenizer_json(path: &Path, extra: &[AddedToken]) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let proto = ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::config(path, format!("not a sentencepiece model (protobuf): {e}")))?;
    let trainer = proto.trainer_spec.clone().unwrap_or_default();
    let norm = proto.normalizer_spec.clone().unwrap_or_default();
    if norm
        .precompiled_charsmap
        .as_ref()
        .is_some_and(|m| !m.is_empty())
        && norm.name.as_deref() != Some("identity")
    {
        return Err(Error::config(
            path,
            format!(
                "its normalizer `{}` rewrites text before tokenizing; only models without one \
                 (Llama, InternLM2, Mistral) are converted here: save a tokenizer.json with \
                 transformers instead",
                norm.name.as_deref().unwrap_or("?")
            ),
        ));
    }
    let pieces: Vec<(String, f32, i32)> = proto
        .pieces
        .iter()
        .map(|p| {
            (
                p.piece.clone().unwrap_or_default(),
                p.score.unwrap_or(0.0),
                p.kind.unwrap_or(NORMAL),
            )
        })
        .collect();
    if pieces.is_empty() {
        return Err(Error::config(path, "the sentencepiece model has no pieces"));
    }
    let unk_id = trainer.unk_id.unwrap_or(0).max(0) as usize;
    let unk = pieces
        .get(unk_id)
        .map(|p| p.0.clone())
        .unwrap_or_else(|| "<unk>".into());
    let byte_fallback = trainer.byte_fallback.unwrap_or(false);
    let model = match trainer.model_type.unwrap_or(UNIGRAM) {
        BPE => bpe_model(&pieces, &unk, byte_fallback),
        UNIGRAM => json!({
            "type": "Unigram",
            "unk_id": unk_id,
            "vocab": pieces.iter().map(|(p, s, _)| json!([p, s])).collect::<Vec<_>>(),
            "byte_fallback": byte_fallback,
        }),
        other => {
            return Err(Error::config(
                path,
                format!("sentencepiece model type {other} (word/char) is not supported"),
            ));
        }
    };
    let special: HashSet<&str> = extra
        .iter()
        .filter(|t| t.special)
        .map(|t| t.content.as_str())
        .collect();
    let token = |id: usize, content: &str, special: bool| {
        json!({
            "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        })
    };
    let mut added: Vec<Value> = pieces
        .iter()
        .enumerate()
        .filter(|(_, (p, _, kind))| {
            matches!(*kind, UNKNOWN | CONTROL | USER_DEFINED) || special.contains(p.as_str())
        })
        .map(|(id, (p, _, _))| token(id, p, true))
        .collect();
    for t in extra.iter().filter(|t| t.id as usize >= pieces.len()) {
        added.push(token(t.id as usize, &t.content, t.special));
    }
    let dummy_prefix = norm.add_dummy_prefix.unwrap_or(true);
    let mut normalizers = vec![];
    if dummy_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if dummy_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": model,
    }))
}

/// A BPE model from sentencepiece pieces: every split of a piece into two pieces is a merge,
/// ranked by the merged piece's score (higher first), ties by the halves' ids.
fn bpe_model(pieces: &[(String, f32, i32)], unk: &str, byte_fallback: bool) -> Value {
    let vocab: HashMap<&str, usize> = pieces
        .iter()
        .enumerate()
        .map(|(i, (p, _, _))| (p.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize, &str, &str)> = vec![];
    for (piece, score, _) in pieces {
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                merges.push((*score, li, ri, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let vocab_json: serde_json::Map<String, Value> = pieces
        .iter()
        .enumerate()
        .map(|(i, (p, _, _))| (p.clone(), json!(i)))
        .collect();
    json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": true,
        "byte_fallback": byte_fallback,
        "ignore_merges": false,
        "vocab": vocab_json,
        "merges": merges.iter().map(|m| json!([m.3, m.4])).collect::<Vec<_>>(),
    })
}
