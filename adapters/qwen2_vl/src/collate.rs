//! [`QwenVlCollator`]: dataset samples -> [`QwenVlInputs`], as transformers'
//! `Qwen2VLProcessor` / `Qwen2_5_VLProcessor` with `apply_chat_template` make them, plus labels.
//!
//! Per sample:
//! 1. the conversation (with its own system prompt, else the template's default) is rendered
//!    with the model's chat template (else the built-in `qwen2-vl` one); each image becomes
//!    `<|vision_start|><|image_pad|><|vision_end|>` where its placeholder stands;
//! 2. it is tokenized and labelled by [`lmms_collators::text`]: the assistant replies and their
//!    `<|im_end|>` train (or everything with `train_on_everything`);
//! 3. each `<|image_pad|>` becomes `grid_t * grid_h * grid_w / merge^2` ids, the grid coming from
//!    `smart_resize` of the image's size within `min_pixels` / `max_pixels`;
//! 4. a sample longer than `model_max_length` is left out or refused, never cut.
//!
//! The batch is right-padded (pad id from the tokenizer, else `config.json`); the images of all
//! kept samples, in order, go through [`Qwen2VlImageProcessor`] (bit-identical to HF's PIL
//! processor): `pixel_values` `[patches, C * T * P * P]` and `image_grid_thw` `[images, 3]`.
//! Checked against transformers in `adapters/qwen2_vl/tests/collate.rs` (fixture by
//! `tools/fixtures/qwen2_vl_collate.py`).
//!
//! Not yet: video samples (an error names the sample).

use crate::config::QwenVlConfig;
use crate::model::QwenVlInputs;
use lmms_collators::image::load_image;
use lmms_collators::image::qwen2_vl::{Qwen2VlImageProcessor, Qwen2VlPatches};
use lmms_collators::template::{ChatTemplate, ContentStyle};
use lmms_collators::text::{
    EncodeOptions, EncodeOutcome, Encoded, LabelMode, MediaKind, TextTokenizer,
    encode_conversation_with, pad_batch,
};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::Tokens;
use lmms_core::tensor_file::HostTensor;
use std::path::{Path, PathBuf};

const IMAGE_PAD: &str = "<|image_pad|>";
const VIDEO_PAD: &str = "<|video_pad|>";
const IMAGE_TEXT: &str = "<|vision_start|><|image_pad|><|vision_end|>";
const VIDEO_TEXT: &str = "<|vision_start|><|video_pad|><|vision_end|>";

/// The Qwen2-VL / Qwen2.5-VL collator of one model directory.
pub struct QwenVlCollator {
    dir: PathBuf,
    pub config: QwenVlConfig,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    encode: EncodeOptions,
    pub images: Qwen2VlImageProcessor,
    image_token_id: u32,
    pad_id: u32,
    max_length: usize,
    options: CollateOptions,
}

impl std::fmt::Debug for QwenVlCollator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenVlCollator")
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
    patches: Vec<Qwen2VlPatches>,
}

enum Prepare {
    Ready(Prepared),
    TooLong { length: usize, limit: usize },
}

/// An error's message with its causes.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl QwenVlCollator {
    /// Reads the tokenizer, the chat template (the model's, else the built-in `qwen2-vl`) and
    /// the image processor config of `dir`.
    pub fn new(dir: &ModelDir, config: QwenVlConfig, options: &CollateOptions) -> Result<Self> {
        let root = dir.root.clone();
        let tokenizer = TextTokenizer::from_dir(&root)?;
        let template = match ChatTemplate::from_model_dir(&root, None)? {
            Some(t) => t,
            None => ChatTemplate::builtin("qwen2-vl")
                .expect("the built-in templates exist")
                .with_special_tokens(tokenizer.special.clone()),
        };
        let images = Qwen2VlImageProcessor::from_model_dir(&root)?;
        if images.patch_size != config.vision.patch_size
            || images.merge_size != config.vision.spatial_merge_size
            || images.temporal_patch_size != config.vision.temporal_patch_size
        {
            return Err(Error::config(
                root.join("preprocessor_config.json"),
                format!(
                    "patch_size {} / merge_size {} / temporal_patch_size {} differ from \
                     config.json's vision_config ({} / {} / {})",
                    images.patch_size,
                    images.merge_size,
                    images.temporal_patch_size,
                    config.vision.patch_size,
                    config.vision.spatial_merge_size,
                    config.vision.temporal_patch_size
                ),
            ));
        }
        let image_token_id = u32::try_from(config.image_token_id)
            .ok()
            .filter(|&id| tokenizer.token_id(IMAGE_PAD) == Some(id))
            .ok_or_else(|| {
                Error::config(
                    root.join("tokenizer.json"),
                    format!(
                        "`{IMAGE_PAD}` is {} in the tokenizer but config.json's image_token_id is {}",
                        tokenizer
                            .token_id(IMAGE_PAD)
                            .map_or("not a token".to_string(), |i| format!("id {i}")),
                        config.image_token_id
                    ),
                )
            })?;
        let encode = EncodeOptions {
            content: ContentStyle::for_template(&template),
            image_text: IMAGE_TEXT.into(),
            image_token: IMAGE_PAD.into(),
            video_text: VIDEO_TEXT.into(),
            video_token: VIDEO_PAD.into(),
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
            .get("pad_token_id")
            .or_else(|| {
                dir.config
                    .get("text_config")
                    .and_then(|t| t.get("pad_token_id"))
            })
            .and_then(|v| v.as_u64())
            .and_then(|i| u32::try_from(i).ok());
        let pad_id = tokenizer
            .pad_id()
            .or(config_pad)
            .or(tokenizer.eos_id())
            .unwrap_or(0);
        let max_length = options
            .model_max_length
            .unwrap_or(config.text.max_position_embeddings);
        Ok(QwenVlCollator {
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

    /// Overrides the image processor's pixel bounds (they bound the number of patches, hence
    /// memory).
    pub fn with_pixels(mut self, min: Option<usize>, max: Option<usize>) -> Result<Self> {
        self.images = self.images.with_pixels(min, max)?;
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn encode(&self, sample: &Sample, counts: &[usize]) -> Result<Encoded> {
        if !sample.videos.is_empty() {
            return Err(sample
                .origin
                .error("has a video: Qwen2-VL video samples are not supported yet"));
        }
        let id = self.image_token_id;
        let mut expand = |kind: MediaKind, index: usize| match kind {
            MediaKind::Image => Ok(counts.get(index).map(|&n| vec![id; n])),
            MediaKind::Video => Err(sample.origin.error("has a video placeholder")),
        };
        let outcome = encode_conversation_with(
            &self.tokenizer,
            &self.template,
            sample,
            &self.encode,
            &mut expand,
        )?;
        let EncodeOutcome::Encoded(e) = outcome else {
            unreachable!("no length limit is given to the encoder");
        };
        Ok(e)
    }

    fn counts(&self, sample: &Sample, sizes: &[(usize, usize)]) -> Result<Vec<usize>> {
        sizes
            .iter()
            .zip(&sample.images)
            .map(|(&(h, w), path)| {
                self.images
                    .num_tokens(h, w)
                    .map_err(|e| media_error(sample, path, &e))
            })
            .collect()
    }

    fn prepare(&self, sample: &Sample) -> Result<Prepare> {
        let images = sample
            .images
            .iter()
            .map(|p| load_image(p).map_err(|e| media_error(sample, p, &e)))
            .collect::<Result<Vec<_>>>()?;
        let sizes: Vec<(usize, usize)> = images
            .iter()
            .map(|i| (i.height() as usize, i.width() as usize))
            .collect();
        let encoded = self.encode(sample, &self.counts(sample, &sizes)?)?;
        let (length, limit) = (encoded.len(), self.max_length);
        if length > limit {
            return match self.options.over_length {
                OverLength::Skip => Ok(Prepare::TooLong { length, limit }),
                OverLength::Reject => Err(sample.origin.error(format!(
                    "{length} tokens (media included), over the limit of {limit}: raise \
                     model_max_length or lower max_pixels (media tokens are never cut)"
                ))),
            };
        }
        let patches = images
            .iter()
            .zip(&sample.images)
            .map(|(img, path)| {
                self.images
                    .process(img)
                    .map_err(|e| media_error(sample, path, &e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepare::Ready(Prepared { encoded, patches }))
    }
}

/// `<sample>: image <path>: <reason>`.
fn media_error(sample: &Sample, path: &Path, e: &Error) -> Error {
    let reason = match e {
        Error::Io { source, .. } => source.to_string(),
        other => describe(other),
    };
    sample
        .origin
        .error(format!("image {}: {reason}", path.display()))
}

impl Collator for QwenVlCollator {
    type Batch = QwenVlInputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<QwenVlInputs>, Vec<Skipped>)> {
        let mut kept = Vec::with_capacity(samples.len());
        let mut skipped = Vec::new();
        for sample in samples {
            match self.prepare(sample)? {
                Prepare::Ready(p) => kept.push(p),
                Prepare::TooLong { length, limit } => skipped.push(Skipped {
                    origin: sample.origin.clone(),
                    reason: format!("{length} tokens (media included), over the limit of {limit}"),
                }),
            }
        }
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        let encoded: Vec<&Encoded> = kept.iter().map(|p| &p.encoded).collect();
        let padded = pad_batch(&encoded, self.pad_id);
        let (mut pixels, mut grids) = (Vec::new(), Vec::new());
        for p in kept.iter().flat_map(|p| &p.patches) {
            pixels.extend_from_slice(&p.data);
            grids.extend(p.grid.iter().map(|&g| g as i64));
        }
        let n_images = grids.len() / 3;
        let (pixel_values, image_grid_thw) = if n_images == 0 {
            (None, None)
        } else {
            let k = self.images.patch_values();
            (
                Some(HostTensor {
                    shape: vec![pixels.len() / k, k],
                    data: pixels,
                }),
                Some(HostTensor {
                    shape: vec![n_images, 3],
                    data: grids,
                }),
            )
        };
        let shape = vec![padded.batch, padded.len];
        let tokens = Tokens {
            input_ids: HostTensor {
                shape: shape.clone(),
                data: padded.input_ids,
            },
            attention_mask: Some(HostTensor {
                shape: shape.clone(),
                data: padded.attention_mask,
            }),
            labels: Some(HostTensor {
                shape,
                data: padded.labels,
            }),
        };
        Ok((
            Some(QwenVlInputs {
                tokens,
                pixel_values,
                image_grid_thw,
                pixel_values_videos: None,
                video_grid_thw: None,
                second_per_grid_ts: None,
            }),
            skipped,
        ))
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        let sizes = sample
            .images
            .iter()
            .map(|p| {
                load_image(p)
                    .map(|i| (i.height() as usize, i.width() as usize))
                    .map_err(|e| media_error(sample, p, &e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.encode(sample, &self.counts(sample, &sizes)?)?.len())
    }
}
