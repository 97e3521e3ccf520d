//! [`MllamaCollator`]: dataset samples -> [`MllamaInputs`], as transformers' `MllamaProcessor`
//! (`processing_mllama.py`) with `apply_chat_template` makes them, plus labels.
//!
//! Per sample:
//! 1. the conversation is rendered with the model's chat template (else the built-in
//!    `llama-3`): user and assistant turns as typed parts (each image a `{"type": "image"}`
//!    part, written `<|image|>`), the system prompt as a string (the hub template `|trim`s it;
//!    it also refuses a system prompt next to images, and says so for the sample);
//! 2. it is tokenized and labelled by [`lmms_collators::text`]: the assistant replies and their
//!    `<|eot_id|>` train (or everything with `train_on_everything`); `<|image|>` stays one
//!    token (Mllama attends to images through cross-attention, nothing is expanded);
//! 3. each image goes through [`MllamaImageProcessor`] (bit-identical to HF's PIL processor):
//!    tiles, aspect-ratio id;
//! 4. a sample longer than `model_max_length` is left out or refused, never cut.
//!
//! The batch is right-padded (pad id from the tokenizer, else `config.json`'s text
//! `pad_token_id`); `pixel_values` `[B, max images, max_num_tiles, 3, tile, tile]` (zeros past
//! each image's tiles and for the image slots a row lacks: a text-only row next to image rows
//! gets empty slots, as HF's `pack_images`), `aspect_ratio_ids` (0 for an empty slot),
//! `aspect_ratio_mask` (first tile always 1) and `cross_attention_mask` `[B, T, images, tiles]`
//! from the token positions: each image is seen from its `<|image|>` up to the next image token
//! (consecutive image tokens share their span), the last one to the end of the padded row
//! (`get_cross_attention_token_mask` + `convert_sparse_cross_attention_mask_to_dense`). A batch
//! without images has no vision tensors. Checked against transformers in
//! `adapters/mllama/tests/collate.rs` (fixtures by `tools/fixtures/mllama_collate.py`).

use crate::config::MllamaConfig;
use crate::model::MllamaInputs;
use lmms_collators::image::load_image;
use lmms_collators::image::mllama::{MllamaImage, MllamaImageProcessor};
use lmms_collators::template::{ChatTemplate, ContentStyle};
use lmms_collators::text::{
    EncodeOptions, EncodeOutcome, Encoded, LabelMode, TextTokenizer, encode_conversation, pad_batch,
};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Prepare, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use lmms_core::tensor_file::HostTensor;
use std::path::{Path, PathBuf};

const IMAGE_TOKEN: &str = "<|image|>";

/// The Mllama collator of one model directory.
pub struct MllamaCollator {
    dir: PathBuf,
    pub config: MllamaConfig,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    encode: EncodeOptions,
    pub images: MllamaImageProcessor,
    image_token_id: i64,
    pad_id: u32,
    max_length: usize,
    options: CollateOptions,
}

impl std::fmt::Debug for MllamaCollator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllamaCollator")
            .field("dir", &self.dir)
            .field("template", self.template.origin())
            .field("image_token_id", &self.image_token_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

struct Prepared {
    encoded: Encoded,
    images: Vec<MllamaImage>,
}

impl MllamaCollator {
    /// Reads the tokenizer, the chat template (the model's, else the built-in `llama-3`) and the
    /// image processor config of `dir`, and checks them against `config`.
    pub fn new(dir: &ModelDir, config: MllamaConfig, options: &CollateOptions) -> Result<Self> {
        let root = dir.root.clone();
        let tokenizer = TextTokenizer::from_dir(&root)?;
        let template = match ChatTemplate::from_model_dir(&root, None)? {
            Some(t) => t,
            None => ChatTemplate::builtin("llama-3")
                .expect("the built-in templates exist")
                .with_special_tokens(tokenizer.special.clone()),
        };
        let images = MllamaImageProcessor::from_model_dir(&root)?;
        let v = &config.vision;
        if images.tile_size != v.image_size || images.max_image_tiles != v.max_num_tiles {
            return Err(Error::config(
                root.join("preprocessor_config.json"),
                format!(
                    "tiles of {} px, at most {} per image, but config.json's vision_config has \
                     image_size {} and max_num_tiles {}",
                    images.tile_size, images.max_image_tiles, v.image_size, v.max_num_tiles
                ),
            ));
        }
        let image_token_id = tokenizer
            .token_id(IMAGE_TOKEN)
            .map(i64::from)
            .filter(|&id| id == config.image_token_index)
            .ok_or_else(|| {
                Error::config(
                    root.join("tokenizer.json"),
                    format!(
                        "`{IMAGE_TOKEN}` is {} in the tokenizer but config.json's \
                         image_token_index is {}",
                        tokenizer
                            .token_id(IMAGE_TOKEN)
                            .map_or("not a token".to_string(), |i| format!("id {i}")),
                        config.image_token_index
                    ),
                )
            })?;
        let content = match ContentStyle::for_template(&template) {
            ContentStyle::Parts => ContentStyle::PartsTextSystem,
            other => other,
        };
        let encode = EncodeOptions {
            content,
            image_text: IMAGE_TOKEN.into(),
            image_token: IMAGE_TOKEN.into(),
            video_token: String::new(),
            labels: if options.train_on_everything {
                LabelMode::All
            } else {
                LabelMode::AssistantOnly
            },
            ensure_eos: true,
            max_length: None,
            ..EncodeOptions::default()
        };
        let config_pad = dir
            .config
            .get("text_config")
            .and_then(|t| t.get("pad_token_id"))
            .or_else(|| dir.config.get("pad_token_id"))
            .and_then(|v| v.as_u64())
            .and_then(|i| u32::try_from(i).ok());
        let pad_id = tokenizer
            .pad_id()
            .or(config_pad)
            .or(tokenizer.eos_id())
            .unwrap_or(0);
        let max_length = options
            .model_max_length
            .unwrap_or(config.text.llm.max_position_embeddings);
        Ok(MllamaCollator {
            dir: root,
            config,
            tokenizer,
            template,
            encode,
            images,
            image_token_id,
            pad_id,
            max_length,
            options: options.clone(),
        })
    }

    /// Passes a variable to every render of the chat template (e.g. the hub template's
    /// `date_string`, which otherwise is today's date).
    pub fn with_template_variable(mut self, name: &str, value: serde_json::Value) -> Self {
        self.template = self.template.with_variable(name, value);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn encode(&self, sample: &Sample, options: &EncodeOptions) -> Result<Encoded> {
        if let Some(v) = sample.videos.first() {
            return Err(sample.origin.error(format!(
                "video {}: Llama-3.2-Vision takes images only",
                v.display()
            )));
        }
        match encode_conversation(&self.tokenizer, &self.template, sample, options)? {
            EncodeOutcome::Encoded(e) => Ok(e),
            EncodeOutcome::TooLong { .. } => unreachable!("no length limit is given"),
        }
    }

    fn prepare(&self, sample: &Sample, options: &EncodeOptions) -> Result<Prepare<Prepared>> {
        let encoded = self.encode(sample, options)?;
        let (length, limit) = (encoded.len(), self.max_length);
        if length > limit {
            return match self.options.over_length {
                OverLength::Skip => Ok(Prepare::TooLong { length, limit }),
                OverLength::Reject => Err(sample.origin.error(format!(
                    "{length} tokens, over the limit of {limit}: raise model_max_length \
                     (samples are never cut)"
                ))),
            };
        }
        let images = sample
            .images
            .iter()
            .map(|p| {
                load_image(p)
                    .and_then(|img| self.images.process(&img))
                    .map_err(|e| sample.origin.media_error("image", p, &e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepare::Ready(Prepared { encoded, images }))
    }

    /// One batch of prepared samples.
    fn assemble(&self, kept: Vec<Prepared>) -> MllamaInputs {
        let encoded: Vec<&Encoded> = kept.iter().map(|p| &p.encoded).collect();
        let tokens = pad_batch(&encoded, self.pad_id);
        let images = kept.iter().map(|p| p.images.len()).max().unwrap_or(0);
        if images == 0 {
            return MllamaInputs {
                tokens,
                pixel_values: None,
                aspect_ratio_ids: None,
                aspect_ratio_mask: None,
                cross_attention_mask: None,
            };
        }
        let (b, t) = (tokens.batch(), tokens.seq());
        let tiles = self.images.max_image_tiles;
        let side = self.images.tile_size;
        let tile_len = 3 * side * side;
        let mut pixels = vec![0f32; b * images * tiles * tile_len];
        let mut ids = vec![0i64; b * images];
        let mut tile_mask = vec![0i64; b * images * tiles];
        let mut num_tiles = vec![0usize; b * images];
        for (r, p) in kept.iter().enumerate() {
            for (j, img) in p.images.iter().enumerate() {
                let slot = r * images + j;
                let start = slot * tiles * tile_len;
                pixels[start..start + img.data.len()].copy_from_slice(&img.data);
                ids[slot] = self.images.aspect_ratio_id(img.tiles_hw);
                num_tiles[slot] = img.num_tiles();
                tile_mask[slot * tiles..slot * tiles + img.num_tiles()].fill(1);
            }
        }
        // HF marks the first tile of every slot, empty ones included.
        for slot in 0..b * images {
            tile_mask[slot * tiles] = 1;
        }
        let cross = cross_attention_mask(
            &tokens.input_ids.data,
            [b, t, images, tiles],
            &num_tiles,
            self.image_token_id,
        );
        MllamaInputs {
            tokens,
            pixel_values: Some(HostTensor {
                shape: vec![b, images, tiles, 3, side, side],
                data: pixels,
            }),
            aspect_ratio_ids: Some(HostTensor {
                shape: vec![b, images],
                data: ids,
            }),
            aspect_ratio_mask: Some(HostTensor {
                shape: vec![b, images, tiles],
                data: tile_mask,
            }),
            cross_attention_mask: Some(HostTensor {
                shape: vec![b, t, images, tiles],
                data: cross,
            }),
        }
    }
}

/// HF's `get_cross_attention_token_mask` on one (padded) row: per image token, in order, the
/// tokens `[start, end)` that see that image: from the image token to the next one, the last to
/// the end of the row; a run of consecutive image tokens all see up to the end of the run's
/// successor span.
pub fn image_token_spans(ids: &[i64], image_token_id: i64) -> Vec<(usize, usize)> {
    let locations: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id == image_token_id)
        .map(|(i, _)| i)
        .collect();
    let mut spans: Vec<(usize, usize)> = locations
        .iter()
        .enumerate()
        .map(|(k, &start)| (start, locations.get(k + 1).copied().unwrap_or(ids.len())))
        .collect();
    let mut last_end = spans.last().map_or(0, |s| s.1);
    for span in spans.iter_mut().rev() {
        if span.0 + 1 == span.1 {
            span.1 = last_end;
        }
        last_end = span.1;
    }
    spans
}

/// HF's `convert_sparse_cross_attention_mask_to_dense` over a right-padded batch `ids`
/// (`[B, T]`): `[B, T, images, tiles]`, 1 where token `t` sees the first `num_tiles[b * images
/// + j]` tiles of image `j` of its row.
pub fn cross_attention_mask(
    ids: &[i64],
    [b, t, images, tiles]: [usize; 4],
    num_tiles: &[usize],
    image_token_id: i64,
) -> Vec<i64> {
    let mut mask = vec![0i64; b * t * images * tiles];
    for r in 0..b {
        let spans = image_token_spans(&ids[r * t..(r + 1) * t], image_token_id);
        for (j, &(start, end)) in spans.iter().enumerate().take(images) {
            let n = num_tiles[r * images + j];
            for pos in start..end.min(t) {
                let at = ((r * t + pos) * images + j) * tiles;
                mask[at..at + n].fill(1);
            }
        }
    }
    mask
}

impl Collator for MllamaCollator {
    type Batch = MllamaInputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<MllamaInputs>, Vec<Skipped>)> {
        let (kept, skipped) = Prepare::split(
            samples,
            samples.iter().map(|s| self.prepare(s, &self.encode)),
            "tokens",
        )?;
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        Ok((Some(self.assemble(kept)), skipped))
    }

    fn prompt(&self, conversation: &Sample) -> Result<MllamaInputs> {
        let options = EncodeOptions {
            generation_prompt: true,
            ..self.encode.clone()
        };
        let p = self
            .prepare(conversation, &options)?
            .into_prompt(conversation, "tokens")?;
        Ok(self.assemble(vec![p]))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn stop_ids(&self) -> Vec<u32> {
        self.tokenizer.stop_ids(Some(&self.dir))
    }

    /// Images are one token each whatever their size, so they are not read here.
    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        Ok(self.encode(sample, &self.encode)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases of transformers' `get_cross_attention_token_mask` (its docstring's rules).
    #[test]
    fn spans_follow_hf() {
        let i = 9;
        assert_eq!(image_token_spans(&[1, 2, 3], i), vec![]);
        assert_eq!(image_token_spans(&[1, i, 3, 4], i), vec![(1, 4)]);
        assert_eq!(
            image_token_spans(&[i, 1, 2, i, 3, 4], i),
            vec![(0, 3), (3, 6)]
        );
        // Consecutive image tokens see everything after them together.
        assert_eq!(
            image_token_spans(&[1, i, i, 2, 3, i, 4], i),
            vec![(1, 5), (2, 5), (5, 7)]
        );
    }

    #[test]
    fn dense_mask_covers_each_images_tiles() {
        let i = 9;
        // Row 0: image 0 (1 tile) at 1, image 1 (2 tiles) at 3; row 1: no image.
        let ids = [1, i, 2, i, 3, 1, 2, 3, 0, 0];
        let m = cross_attention_mask(&ids, [2, 5, 2, 2], &[1, 2, 0, 0], i);
        let at = |r: usize, t: usize| &m[((r * 5 + t) * 2) * 2..((r * 5 + t) * 2 + 2) * 2];
        assert_eq!(at(0, 0), [0, 0, 0, 0]);
        assert_eq!(at(0, 1), [1, 0, 0, 0]);
        assert_eq!(at(0, 2), [1, 0, 0, 0]);
        assert_eq!(at(0, 3), [0, 0, 1, 1]);
        assert_eq!(at(0, 4), [0, 0, 1, 1]);
        assert!(m[20..].iter().all(|&x| x == 0));
    }
}
