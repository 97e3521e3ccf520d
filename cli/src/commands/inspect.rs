//! `lmms data inspect`: one sample collated exactly as training collates it.

use crate::args::DataInspectArgs;
use anyhow::bail;
use lmms_collators::text::TextTokenizer;
use lmms_core::tensor_file::{AnyTensor, write_any};
use std::process::ExitCode;

pub fn run(args: &DataInspectArgs) -> anyhow::Result<ExitCode> {
    let (model, data) = args.common.load()?;
    let (runtime, dir) = (model.runtime, &model.dir);
    let samples: Vec<_> = data.samples().collect();
    let Some(sample) = samples.get(args.index) else {
        bail!(
            "{}: has {} samples, no sample {}",
            args.common.data.display(),
            samples.len(),
            args.index
        );
    };
    let collate = args.common.collate_options();
    let (tensors, skipped) = runtime.inspect(dir, &[*sample], &collate)?;
    for s in &skipped {
        println!(
            "sample {} is left out of training: {}",
            s.origin.index, s.reason
        );
    }
    if tensors.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    for (name, t) in &tensors {
        let (dtype, shape) = match t {
            AnyTensor::F32(t) => ("f32", &t.shape),
            AnyTensor::I64(t) => ("i64", &t.shape),
        };
        println!("{name:<20} {dtype} {shape:?}");
    }
    let ints = |name: &str| {
        tensors.iter().find_map(|(n, t)| match t {
            AnyTensor::I64(t) if n == name => Some(t.data.clone()),
            _ => None,
        })
    };
    if let (Some(ids), Some(labels)) = (ints("input_ids"), ints("labels")) {
        let trained = labels.iter().filter(|l| **l != -100).count();
        println!("tokens: {}, trained: {trained}", ids.len());
        if args.decode {
            let tok = TextTokenizer::from_dir(&dir.root)?;
            println!("{}", decode_marked(&tok.tokenizer, &ids, &labels));
        }
    }
    if let Some(out) = &args.out {
        write_any(out, &tensors)?;
        println!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of `ids`, trained spans (labels not -100) between « and », runs of one repeated
/// special token (media placeholders) collapsed to `<tok>×N`.
fn decode_marked(tok: &tokenizers::Tokenizer, ids: &[i64], labels: &[i64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let trained = labels[i] != -100;
        let mut j = i;
        while j < ids.len() && (labels[j] != -100) == trained {
            j += 1;
        }
        let mut text = String::new();
        let mut k = i;
        while k < j {
            let mut r = k;
            while r < j && ids[r] == ids[k] {
                r += 1;
            }
            let id = ids[k] as u32;
            let piece = tok.decode(&[id], false).unwrap_or_default();
            let special = tok.get_added_vocabulary().is_special_token(&piece);
            if special && r - k > 3 {
                text.push_str(&format!("{piece}×{}", r - k));
                k = r;
            } else {
                let run: Vec<u32> = ids[k..r].iter().map(|&x| x as u32).collect();
                text.push_str(&tok.decode(&run, false).unwrap_or_default());
                k = r;
            }
        }
        if trained {
            out.push('«');
            out.push_str(&text);
            out.push('»');
        } else {
            out.push_str(&text);
        }
        i = j;
    }
    out
}
