//! Qwen's tiktoken vocabulary (`qwen.tiktoken`, read by `tokenization_qwen.py`'s
//! `QWenTokenizer`) as a fast byte-level BPE tokenizer, converted the way transformers'
//! `TikTokenConverter` does: every line is `base64(token bytes) rank`; the rank is the id and
//! the merge priority; each multi-byte token's merge is the last step of running BPE on its own
//! bytes with the ranks below it. The pre-tokenizer is Qwen's `PAT_STR` split, the text is NFC
//! normalised first (`unicodedata.normalize("NFC", text)`), and the special tokens follow the
//! ranks in `QWenTokenizer`'s order: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`,
//! `<|extra_0|>`..`<|extra_204|>`, `<ref>`, `</ref>`, `<box>`, `</box>`, `<quad>`, `</quad>`,
//! `<img>`, `</img>`, `<imgpad>`.

use base64::Engine;
use lmms_core::{Error, Result};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

/// `tokenization_qwen.py`'s `PAT_STR`.
pub const QWEN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The image and grounding tags, after the 208 text special tokens.
pub const QWEN_IMAGE_TAGS: [&str; 9] = [
    "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>",
];

/// `QWenTokenizer`'s special tokens in id order (they follow the mergeable ranks).
pub fn qwen_special_tokens() -> Vec<String> {
    let mut out: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    out.extend((0..205).map(|i| format!("<|extra_{i}|>")));
    out.extend(QWEN_IMAGE_TAGS.map(String::from));
    out
}

/// Reads `base64 rank` lines (blank lines skipped); ranks must be 0..n without gaps.
pub fn read_ranks(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut by_rank: Vec<Option<Vec<u8>>> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: String| Error::config(path, format!("line {}: {why}", n + 1));
        let mut parts = line.split_whitespace();
        let (Some(token), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected `base64-token rank`".into()));
        };
        let bytes = engine
            .decode(token)
            .map_err(|e| bad(format!("bad base64 `{token}`: {e}")))?;
        let rank: usize = rank
            .parse()
            .map_err(|_| bad(format!("bad rank `{rank}`")))?;
        if by_rank.len() <= rank {
            by_rank.resize(rank + 1, None);
        }
        if by_rank[rank].replace(bytes).is_some() {
            return Err(bad(format!("rank {rank} appears twice")));
        }
    }
    by_rank
        .into_iter()
        .enumerate()
        .map(|(r, t)| t.ok_or_else(|| Error::config(path, format!("rank {r} is missing"))))
        .collect()
}

/// GPT-2's byte -> printable character table of byte-level BPE.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("a code point above Latin-1")
        };
    }
    table
}

/// The parts BPE leaves of `token` when only merges ranked below `max_rank` are allowed.
fn bpe_parts<'a>(ranks: &HashMap<&[u8], usize>, token: &'a [u8], max_rank: usize) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(usize, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = ranks.get(&token[bounds[i]..bounds[i + 2]])
                && best.is_none_or(|(_, b)| r < b)
            {
                best = Some((i, r));
            }
        }
        match best {
            Some((i, r)) if r < max_rank => {
                bounds.remove(i + 1);
            }
            _ => break,
        }
    }
    bounds.windows(2).map(|w| &token[w[0]..w[1]]).collect()
}

/// The `tokenizer.json` document equivalent to `qwen.tiktoken` at `path`.
pub fn tokenizer_json(path: &Path) -> Result<Value> {
    let tokens = read_ranks(path)?;
    let chars = byte_chars();
    let show = |b: &[u8]| b.iter().map(|&c| chars[c as usize]).collect::<String>();
    let ranks: HashMap<&[u8], usize> = tokens
        .iter()
        .enumerate()
        .map(|(r, t)| (t.as_slice(), r))
        .collect();
    let mut vocab = serde_json::Map::new();
    let mut merges = Vec::new();
    for (rank, token) in tokens.iter().enumerate() {
        vocab.insert(show(token), json!(rank));
        if token.len() > 1 {
            let parts = bpe_parts(&ranks, token, rank);
            if parts.len() == 2 {
                merges.push(json!([show(parts[0]), show(parts[1])]));
            }
        }
    }
    let added: Vec<Value> = qwen_special_tokens()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": tokens.len() + i, "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated",
                "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                "use_regex": false},
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
            "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    }))
}

/// Converts `qwen.tiktoken` at `path` into a fast tokenizer.
pub fn tokenizer_from_file(path: &Path) -> Result<tokenizers::Tokenizer> {
    let json = tokenizer_json(path)?;
    tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes())
        .map_err(|e| Error::config(path, format!("cannot build a tokenizer from it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_chars();
        assert_eq!(
            (t[b'!' as usize], t[b' ' as usize], t[b'\n' as usize]),
            ('!', 'Ġ', 'Ċ')
        );
        assert_eq!(qwen_special_tokens().len(), 217);
        assert_eq!(qwen_special_tokens()[214], "<img>");
    }
}

/// `QWenTokenizer`'s ids for `text` (`tokenize` with every special token allowed, then
/// `convert_tokens_to_ids`): the text is NFC-normalised, special tokens are split out, and each
/// `<img>path</img>` span becomes `<img>`, the path's UTF-8 bytes as ids 0..255, `<imgpad>` up
/// to 256 ids, `</img>` — the span the model overwrites with image features. `tokenizer` is
/// [`tokenizer_from_file`]'s. A path over 256 bytes or an unclosed `<img>` is an error.
pub fn encode_qwen(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    use tokenizers::normalizers::unicode::NFC;
    use tokenizers::{NormalizedString, Normalizer};
    let mut normalized = NormalizedString::from(text);
    NFC.normalize(&mut normalized)
        .map_err(|e| Error::Batch(format!("cannot normalise text: {e}")))?;
    let text = normalized.get();
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| Error::Batch(format!("the tokenizer has no `{t}` token")))
    };
    let (start, end, pad) = (id("<img>")?, id("</img>")?, id("<imgpad>")?);
    let encode = |s: &str| -> Result<Vec<u32>> {
        if s.is_empty() {
            return Ok(Vec::new());
        }
        Ok(tokenizer
            .encode(s, false)
            .map_err(|e| Error::Batch(format!("cannot tokenize `{s}`: {e}")))?
            .get_ids()
            .to_vec())
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("<img>") {
        out.extend(encode(&rest[..at])?);
        let inner = &rest[at + "<img>".len()..];
        let Some(close) = inner.find("</img>") else {
            return Err(Error::Batch(format!("unclosed <img> in `{text}`")));
        };
        let path = &inner.as_bytes()[..close];
        if path.len() > IMAGE_SPAN {
            return Err(Error::Batch(format!(
                "the content of <img>..</img> is {} bytes, more than {IMAGE_SPAN}: `{}`",
                path.len(),
                &inner[..close]
            )));
        }
        out.push(start);
        out.extend(path.iter().map(|&b| u32::from(b)));
        out.extend(std::iter::repeat_n(pad, IMAGE_SPAN - path.len()));
        out.push(end);
        rest = &inner[close + "</img>".len()..];
    }
    out.extend(encode(rest)?);
    Ok(out)
}

/// Ids between `<img>` and `</img>` (`IMG_TOKEN_SPAN`).
pub const IMAGE_SPAN: usize = 256;

#[cfg(test)]
mod reference_tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen-vl-tokenizer")
    }

    /// Ids equal `QWenTokenizer`'s (`tools/fixtures/qwen_vl_tokenizer.py`) on the small
    /// vocabulary; with `QWEN_TIKTOKEN` naming the hub's full `qwen.tiktoken`, on it too.
    #[test]
    fn ids_match_qwen_tokenizer() {
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap())
                .unwrap();
        let mut vocabs = vec![("small", fixture().join("qwen.tiktoken"))];
        if let Ok(full) = std::env::var("QWEN_TIKTOKEN") {
            vocabs.push(("full", PathBuf::from(full)));
        }
        for (name, path) in vocabs {
            let tok = tokenizer_from_file(&path).unwrap();
            let mut n = 0;
            for case in cases["cases"].as_array().unwrap() {
                if case["vocab"] != name {
                    continue;
                }
                let text = case["text"].as_str().unwrap();
                let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
                assert_eq!(encode_qwen(&tok, text).unwrap(), want, "{name}: {text:?}");
                n += 1;
            }
            assert!(n >= 10, "{name}: {n} cases");
        }
    }
}
