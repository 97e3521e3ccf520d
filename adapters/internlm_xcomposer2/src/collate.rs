//! [`XComposer2Collator`]: samples -> [`XComposer2Inputs`] as the official finetune code builds
//! them (`finetune/data_mix.py`'s `conv2text`, then the remote code's `interleav_wrap` and
//! `mask_human_targets`):
//!
//! 1. the conversation becomes `[UNUSED_TOKEN_146]user\n{text}[UNUSED_TOKEN_145]\n` /
//!    `[UNUSED_TOKEN_146]assistant\n{text}[UNUSED_TOKEN_145]\n` turns (texts stripped; a
//!    system prompt as a leading `system` turn, as the chat code writes it) followed by `</s>`;
//!    a sample with one image and no placeholder gets one prepended (the reference's
//!    `interleav_wrap` would put that image after `</s>`, where nothing can use it; lmms' data
//!    loader refuses such samples anyway, so this only concerns samples built in code);
//! 2. the text is split at the image placeholders and each non-empty part tokenized on its
//!    own, BOS on the first only; each image becomes `img_size / patch_size` squared (1225)
//!    rows with placeholder id 0, `im_mask` 1 and no label;
//! 3. labels as `mask_human_targets`: everything up to and including each assistant header is
//!    masked, the reply and its `[UNUSED_TOKEN_145]` train, `</s>` trains, the rest is masked;
//! 4. a sample longer than the limit (default `max_length`) is skipped or rejected
//!    ([`OverLength`]), never cut; the batch is right-padded (pad id, attention 0, labels
//!    -100, `im_mask` 0); images go through the 490x490 transform
//!    ([`XComposer2ImageProcessor`]) into `images` `[N, 3, 490, 490]`.

use crate::config::XComposer2Config;
use crate::family::{XComposer2Inputs, read_config};
use lmms_collators::dataset::IMAGE_PLACEHOLDER;
use lmms_collators::image::load_image;
use lmms_collators::image::xcomposer2::XComposer2ImageProcessor;
use lmms_collators::text::{IGNORE_INDEX, TextTokenizer};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Skipped};
use lmms_core::data::{Role, Sample};
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::Tokens;
use lmms_core::tensor_file::HostTensor;
use std::path::PathBuf;

pub const BEGIN: &str = "[UNUSED_TOKEN_146]";
pub const END: &str = "[UNUSED_TOKEN_145]";
pub const EOS: &str = "</s>";

/// One sample as ids, labels and image rows.
#[derive(Debug, Clone, PartialEq)]
pub struct XEncoded {
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
    pub im_mask: Vec<i64>,
    pub images: Vec<PathBuf>,
}

pub struct XComposer2Collator {
    tokenizer: TextTokenizer,
    processor: XComposer2ImageProcessor,
    image_tokens: usize,
    bos_id: Option<u32>,
    end_id: u32,
    eos_id: u32,
    pad_id: u32,
    /// Tokens from a user turn's `[UNUSED_TOKEN_145]` to the end of the assistant header that
    /// follows (`mask_human_targets` hard-codes 6 for InternLM2's tokenizer).
    header_span: usize,
    max_length: usize,
    options: CollateOptions,
}

impl std::fmt::Debug for XComposer2Collator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XComposer2Collator")
            .field("image_tokens", &self.image_tokens)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

impl XComposer2Collator {
    pub fn new(dir: &ModelDir, options: &CollateOptions) -> Result<Self> {
        let config = read_config(dir)?;
        let tokenizer = TextTokenizer::from_dir(&dir.root)?;
        Self::with_parts(tokenizer, &config, options, &dir.root)
    }

    pub fn with_parts(
        tokenizer: TextTokenizer,
        config: &XComposer2Config,
        options: &CollateOptions,
        root: &std::path::Path,
    ) -> Result<Self> {
        let tok_path = root.join("tokenizer.json");
        let need = |t: &str| {
            tokenizer.token_id(t).ok_or_else(|| {
                Error::config(
                    &tok_path,
                    format!("`{t}` is not a token (InternLM-XComposer2 chat markers)"),
                )
            })
        };
        let end_id = need(END)?;
        let eos_id = need(EOS)?;
        let header = tokenizer
            .tokenizer
            .encode(format!("{END}\n{BEGIN}assistant\n"), false)
            .map_err(|e| Error::config(&tok_path, format!("tokenizer failed: {e}")))?;
        let pad_id = tokenizer
            .pad_id()
            .or_else(|| config.llm.pad_token_id.and_then(|i| u32::try_from(i).ok()))
            .unwrap_or(eos_id);
        Ok(XComposer2Collator {
            bos_id: tokenizer.token_id("<s>"),
            header_span: header.get_ids().len(),
            tokenizer,
            processor: XComposer2ImageProcessor {
                size: config.img_size,
            },
            image_tokens: config.image_tokens(),
            end_id,
            eos_id,
            pad_id,
            max_length: options.model_max_length.unwrap_or(config.max_length),
            options: options.clone(),
        })
    }

    /// `conv2text`: the conversation as one string, image placeholders kept.
    pub fn text(&self, sample: &Sample) -> String {
        self.render(sample, false)
    }

    /// [`Self::text`], or with `generation_prompt` the turns then the assistant header the
    /// reply follows (no `</s>`), as the remote code's `chat` builds its prompt.
    fn render(&self, sample: &Sample, generation_prompt: bool) -> String {
        let mut text = String::new();
        if let Some(system) = &sample.system {
            text += &format!("{BEGIN}system\n{}{END}\n", system.trim());
        }
        for turn in &sample.turns {
            let role = match turn.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::System => "system",
            };
            text += &format!("{BEGIN}{role}\n{}{END}\n", turn.content.trim());
        }
        if generation_prompt {
            text += &format!("{BEGIN}assistant\n");
        } else {
            text += EOS;
        }
        if sample.images.len() == 1 && !text.contains(IMAGE_PLACEHOLDER) {
            text.insert_str(0, IMAGE_PLACEHOLDER);
        }
        text
    }

    fn encode_ids(&self, text: &str, sample: &Sample) -> Result<Vec<i64>> {
        Ok(self
            .tokenizer
            .tokenizer
            .encode(text, false)
            .map_err(|e| sample.origin.error(format!("tokenizer failed: {e}")))?
            .get_ids()
            .iter()
            .map(|&i| i64::from(i))
            .collect())
    }

    /// Tokenizes and labels one sample (no length limit).
    pub fn encode(&self, sample: &Sample) -> Result<XEncoded> {
        let (tokens, im_mask) = self.tokenize(sample, false)?;
        let labels = self.mask_human_targets(&tokens);
        if labels.iter().all(|&l| l == IGNORE_INDEX) {
            return Err(sample.origin.error("has no assistant reply to train on"));
        }
        let input_ids = tokens.iter().map(|&t| t.max(0)).collect();
        Ok(XEncoded {
            input_ids,
            labels,
            im_mask,
            images: sample.images.clone(),
        })
    }

    /// The rendered sample's tokens (-100 at image rows, as `interleav_wrap`'s `img_target`)
    /// and image rows.
    fn tokenize(&self, sample: &Sample, generation_prompt: bool) -> Result<(Vec<i64>, Vec<i64>)> {
        if !sample.videos.is_empty() {
            return Err(sample
                .origin
                .error("has a video, but InternLM-XComposer2-VL takes images only"));
        }
        let text = self.render(sample, generation_prompt);
        let parts: Vec<&str> = text.split(IMAGE_PLACEHOLDER).collect();
        if parts.len() - 1 != sample.images.len() {
            return Err(sample.origin.error(format!(
                "has {} image placeholders but {} images",
                parts.len() - 1,
                sample.images.len()
            )));
        }
        // `tokens` holds -100 at image rows, as `interleav_wrap`'s `img_target` does.
        let (mut tokens, mut im_mask) = (Vec::new(), Vec::new());
        let mut need_bos = true;
        for (i, part) in parts.iter().enumerate() {
            if !part.is_empty() {
                if need_bos {
                    tokens.extend(self.bos_id.map(i64::from));
                    need_bos = false;
                }
                tokens.extend(self.encode_ids(part, sample)?);
                im_mask.resize(tokens.len(), 0);
            }
            if i + 1 < parts.len() {
                tokens.extend(std::iter::repeat_n(IGNORE_INDEX, self.image_tokens));
                im_mask.resize(tokens.len(), 1);
            }
        }
        Ok((tokens, im_mask))
    }

    /// Pixels `[N, 3, S, S]` of `images`, or `None` without any.
    fn pixels(&self, images: &[(&Sample, &PathBuf)]) -> Result<Option<HostTensor<f32>>> {
        let mut pixels = Vec::new();
        for (sample, path) in images {
            let img =
                load_image(path).map_err(|err| sample.origin.media_error("image", path, &err))?;
            self.processor.process_into(&img, &mut pixels);
        }
        let s = self.processor.size;
        Ok((!images.is_empty()).then(|| HostTensor {
            shape: vec![images.len(), 3, s, s],
            data: pixels,
        }))
    }

    /// `mask_human_targets` for one row.
    fn mask_human_targets(&self, ids: &[i64]) -> Vec<i64> {
        let (end, eos) = (i64::from(self.end_id), i64::from(self.eos_id));
        let mut targets = ids.to_vec();
        let (mut end_count, mut last_eoa) = (0usize, 0usize);
        let mut last = None;
        for (i, &id) in ids.iter().enumerate() {
            last = Some(id);
            if id == end {
                if end_count % 2 == 0 {
                    let stop = (i + self.header_span).min(ids.len());
                    targets[last_eoa.min(stop)..stop].fill(IGNORE_INDEX);
                } else {
                    last_eoa = i + 1;
                }
                end_count += 1;
            } else if id == eos {
                targets[(i + 1).min(ids.len())..].fill(IGNORE_INDEX);
                break;
            }
        }
        if last != Some(eos) && end_count % 2 == 0 {
            targets[(last_eoa + 1).min(ids.len())..].fill(IGNORE_INDEX);
        }
        targets
    }
}

impl Collator for XComposer2Collator {
    type Batch = XComposer2Inputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<XComposer2Inputs>, Vec<Skipped>)> {
        let mut kept = Vec::with_capacity(samples.len());
        let mut skipped = Vec::new();
        for sample in samples {
            let e = self.encode(sample)?;
            let n = e.input_ids.len();
            if n > self.max_length {
                match self.options.over_length {
                    OverLength::Skip => {
                        skipped.push(Skipped {
                            origin: sample.origin.clone(),
                            reason: format!("{n} tokens, over the limit of {}", self.max_length),
                        });
                        continue;
                    }
                    OverLength::Reject => {
                        return Err(sample.origin.error(format!(
                            "is {n} tokens (images included), over the limit of {}",
                            self.max_length
                        )));
                    }
                }
            }
            kept.push((*sample, e));
        }
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        let rows: Vec<(&[i64], &[i64])> = kept
            .iter()
            .map(|(_, e)| (e.input_ids.as_slice(), e.labels.as_slice()))
            .collect();
        let tokens = Tokens::right_padded(&rows, i64::from(self.pad_id));
        let (b, t) = (tokens.batch(), tokens.seq());
        let mut im_mask = vec![0i64; b * t];
        let mut images = Vec::new();
        for (r, (sample, e)) in kept.iter().enumerate() {
            im_mask[r * t..r * t + e.im_mask.len()].copy_from_slice(&e.im_mask);
            images.extend(e.images.iter().map(|p| (*sample, p)));
        }
        Ok((
            Some(XComposer2Inputs {
                tokens,
                im_mask: Some(HostTensor {
                    shape: vec![b, t],
                    data: im_mask,
                }),
                images: self.pixels(&images)?,
                inputs_embeds: None,
            }),
            skipped,
        ))
    }

    fn prompt(&self, conversation: &Sample) -> Result<XComposer2Inputs> {
        let (tokens, im_mask) = self.tokenize(conversation, true)?;
        let n = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| t.max(0)).collect();
        let labels = vec![IGNORE_INDEX; n];
        let tokens = Tokens::right_padded(&[(ids.as_slice(), labels.as_slice())], 0);
        let images: Vec<(&Sample, &PathBuf)> = conversation
            .images
            .iter()
            .map(|p| (conversation, p))
            .collect();
        Ok(XComposer2Inputs {
            tokens,
            im_mask: Some(HostTensor {
                shape: vec![1, n],
                data: im_mask,
            }),
            images: self.pixels(&images)?,
            inputs_embeds: None,
        })
    }

    fn stop_ids(&self) -> Vec<u32> {
        vec![self.end_id, self.eos_id]
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        Ok(self.encode(sample)?.input_ids.len())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }
}
