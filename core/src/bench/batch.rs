//! A synthetic batch of a given shape for `lmms bench`, written under HF's forward-argument
//! names (the fixture format of `inputs.safetensors`), so that every family reads it with its
//! own [`FamilyModel::read_inputs`](crate::runtime::FamilyModel::read_inputs) and the Python
//! baseline (`tools/bench/hf_bench.py`) feeds the very same tensors to transformers.
//!
//! Each row is `seq_len` tokens: the family's media placeholders first (LLaVA: a BOS then the
//! image tokens; Qwen2-VL: `<|vision_start|>`, the image pads, `<|vision_end|>`), then random
//! text ids. Labels are the ids with the media placeholders set to -100. Pixels are N(0, 1).

use crate::error::{Error, Result};
use crate::llm::loss::IGNORE_INDEX;
use crate::tensor_file::{AnyTensor, HostTensor};
use serde_json::Value;

/// What the batch holds.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSpec {
    pub batch: usize,
    pub seq_len: usize,
    /// Images per row (0: text only).
    pub images: usize,
    /// Qwen2-VL: the image side in pixels (LLaVA uses its vision tower's `image_size`).
    pub image_side: usize,
    pub seed: u64,
}

/// The batch and what it amounts to.
#[derive(Debug, Clone)]
pub struct SyntheticBatch {
    pub tensors: Vec<(String, AnyTensor)>,
    /// Media placeholder tokens per row.
    pub media_tokens: usize,
    /// Vision-tower input tokens (patches) in the whole batch.
    pub vision_patches: usize,
}

/// A small deterministic generator (SplitMix64), so the batch depends only on the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A standard normal sample (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u1 = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

fn usize_at(v: &Value, path: &[&str]) -> Option<usize> {
    let mut cur = v;
    for k in path {
        cur = cur.get(*k)?;
    }
    cur.as_u64().map(|x| x as usize)
}

/// How a family lays media out in the token sequence.
enum Media {
    /// LLaVA-1.5 / Interleave: `tokens` image tokens per image of `side` pixels.
    Llava {
        image_token: i64,
        tokens: usize,
        patches: usize,
        side: usize,
    },
    /// Qwen2-VL / Qwen2.5-VL: a `grid` of patches, merged `merge`x`merge`.
    QwenVl {
        image_token: i64,
        start: i64,
        end: i64,
        grid: [usize; 3],
        patch_values: usize,
        merge: usize,
    },
    None,
}

fn media(config: &Value, spec: &BatchSpec) -> Result<Media> {
    if spec.images == 0 {
        return Ok(Media::None);
    }
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let int = |k: &str| config.get(k).and_then(Value::as_i64);
    match model_type {
        "llava" => {
            let vision = &config["vision_config"];
            let side = usize_at(vision, &["image_size"]).unwrap_or(224);
            let patch = usize_at(vision, &["patch_size"]).unwrap_or(32);
            let patches = (side / patch) * (side / patch);
            let cls =
                vision.get("model_type").and_then(Value::as_str) != Some("siglip_vision_model");
            let full = config
                .get("vision_feature_select_strategy")
                .and_then(Value::as_str)
                == Some("full");
            // The tower's tokens (patches, plus CLIP's class token), less the first for "default".
            let tokens = patches + usize::from(cls) - usize::from(!full);
            Ok(Media::Llava {
                image_token: int("image_token_index")
                    .or_else(|| int("image_token_id"))
                    .unwrap_or(32000),
                tokens,
                patches: patches + usize::from(cls),
                side,
            })
        }
        "qwen2_vl" | "qwen2_5_vl" => {
            let vision = &config["vision_config"];
            let patch = usize_at(vision, &["patch_size"]).unwrap_or(14);
            let temporal = usize_at(vision, &["temporal_patch_size"]).unwrap_or(2);
            let merge = usize_at(vision, &["spatial_merge_size"]).unwrap_or(2);
            let channels = usize_at(vision, &["in_chans"])
                .or_else(|| usize_at(vision, &["in_channels"]))
                .unwrap_or(3);
            let unit = patch * merge;
            let cells = (spec.image_side / unit).max(1) * merge;
            Ok(Media::QwenVl {
                image_token: int("image_token_id").unwrap_or(151655),
                start: int("vision_start_token_id").unwrap_or(151652),
                end: int("vision_end_token_id").unwrap_or(151653),
                grid: [1, cells, cells],
                patch_values: channels * temporal * patch * patch,
                merge,
            })
        }
        other => Err(Error::Unsupported(format!(
            "lmms bench makes image batches for llava and qwen2_vl configs, not `{other}`: use --images 0"
        ))),
    }
}

fn vocab_size(config: &Value) -> usize {
    usize_at(config, &["text_config", "vocab_size"])
        .or_else(|| usize_at(config, &["vocab_size"]))
        .or_else(|| usize_at(config, &["llm_config", "vocab_size"]))
        .unwrap_or(32000)
}

/// The synthetic batch of `spec` for the model of `config`.
pub fn synthetic_batch(config: &Value, spec: &BatchSpec) -> Result<SyntheticBatch> {
    let media = media(config, spec)?;
    let vocab = vocab_size(config) as u64;
    let (b, t) = (spec.batch, spec.seq_len);
    let mut rng = Rng(spec.seed ^ 0x5EED);
    // The placeholders of one row, and the ids the text must avoid.
    let (prefix, avoid): (Vec<i64>, Vec<i64>) = match &media {
        Media::None => (vec![], vec![]),
        Media::Llava {
            image_token,
            tokens,
            ..
        } => {
            let mut p = vec![1];
            p.extend(std::iter::repeat_n(*image_token, tokens * spec.images));
            (p, vec![*image_token])
        }
        Media::QwenVl {
            image_token,
            start,
            end,
            grid,
            merge,
            ..
        } => {
            let per_image = grid[0] * grid[1] * grid[2] / (merge * merge);
            let mut p = Vec::new();
            for _ in 0..spec.images {
                p.push(*start);
                p.extend(std::iter::repeat_n(*image_token, per_image));
                p.push(*end);
            }
            (p, vec![*image_token, *start, *end])
        }
    };
    if prefix.len() + 1 >= t {
        return Err(Error::Unsupported(format!(
            "--seq-len {t} leaves no text after the {} image tokens of a row; raise it or lower --images",
            prefix.len()
        )));
    }
    let mut ids = Vec::with_capacity(b * t);
    let mut labels = Vec::with_capacity(b * t);
    for _ in 0..b {
        for &p in &prefix {
            ids.push(p);
            labels.push(IGNORE_INDEX);
        }
        for _ in prefix.len()..t {
            let mut id = (3 + rng.below(vocab.saturating_sub(3).max(1))) as i64;
            while avoid.contains(&id) {
                id = (3 + rng.below(vocab.saturating_sub(3).max(1))) as i64;
            }
            ids.push(id);
            labels.push(id);
        }
    }
    let tokens = |data| {
        AnyTensor::I64(HostTensor {
            shape: vec![b, t],
            data,
        })
    };
    let mut tensors = vec![
        ("input_ids".to_string(), tokens(ids)),
        ("attention_mask".to_string(), tokens(vec![1; b * t])),
        ("labels".to_string(), tokens(labels)),
    ];
    let n_images = b * spec.images;
    let mut pixels = |shape: Vec<usize>| {
        let n = shape.iter().product();
        AnyTensor::F32(HostTensor {
            shape,
            data: (0..n).map(|_| rng.normal()).collect(),
        })
    };
    let vision_patches = match &media {
        Media::None => 0,
        Media::Llava { patches, side, .. } => {
            tensors.push((
                "pixel_values".into(),
                pixels(vec![n_images, 3, *side, *side]),
            ));
            n_images * patches
        }
        Media::QwenVl {
            grid, patch_values, ..
        } => {
            let per_image = grid[0] * grid[1] * grid[2];
            tensors.push((
                "pixel_values".into(),
                pixels(vec![n_images * per_image, *patch_values]),
            ));
            let thw: Vec<i64> = (0..n_images)
                .flat_map(|_| grid.iter().map(|&g| g as i64))
                .collect();
            tensors.push((
                "image_grid_thw".into(),
                AnyTensor::I64(HostTensor {
                    shape: vec![n_images, 3],
                    data: thw,
                }),
            ));
            n_images * per_image
        }
    };
    Ok(SyntheticBatch {
        tensors,
        media_tokens: prefix.len(),
        vision_patches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llava_rows_hold_every_image_token() {
        let config = crate::bench::presets::find("tiny").unwrap().config();
        let spec = BatchSpec {
            batch: 2,
            seq_len: 40,
            images: 1,
            image_side: 0,
            seed: 1,
        };
        let b = synthetic_batch(&config, &spec).unwrap();
        let AnyTensor::I64(ids) = &b.tensors[0].1 else {
            panic!()
        };
        assert_eq!(ids.shape, vec![2, 40]);
        // 32px / 8px patches = 16 tokens (the class token dropped), after a BOS.
        assert_eq!(b.media_tokens, 17);
        assert_eq!(ids.data.iter().filter(|&&i| i == 4).count(), 32);
        let AnyTensor::F32(px) = &b.tensors[3].1 else {
            panic!()
        };
        assert_eq!(px.shape, vec![2, 3, 32, 32]);
    }

    #[test]
    fn qwen2_vl_grid_and_placeholders() {
        let config = crate::bench::presets::find("qwen2-vl-7b-instruct")
            .unwrap()
            .config();
        let spec = BatchSpec {
            batch: 1,
            seq_len: 300,
            images: 1,
            image_side: 448,
            seed: 1,
        };
        let b = synthetic_batch(&config, &spec).unwrap();
        // 448 / 28 = 16 merged cells a side: a 32x32 patch grid, 256 image tokens.
        assert_eq!(b.media_tokens, 258);
        assert_eq!(b.vision_patches, 1024);
        let too_short = BatchSpec {
            seq_len: 200,
            ..spec
        };
        assert!(synthetic_batch(&config, &too_short).is_err());
    }
}
