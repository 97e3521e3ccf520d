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
//!    `smart_resize` of the image's size within `min_pixels` / `max_pixels`; each video's
//!    `<|video_pad|>` likewise, from the sampled frame count (padded to a multiple of
//!    `temporal_patch_size`) and the video pixel bounds;
//! 4. a sample longer than `model_max_length` is left out or refused, never cut.
//!
//! The batch is right-padded (pad id from the tokenizer, else `config.json`); the images of all
//! kept samples, in order, go through [`Qwen2VlImageProcessor`] (bit-identical to HF's PIL
//! processor): `pixel_values` `[patches, C * T * P * P]` and `image_grid_thw` `[images, 3]`.
//! Videos (`<video>` -> `<|vision_start|><|video_pad|><|vision_end|>`): `num_frames` frames
//! sampled as `Qwen2VLVideoProcessor.sample_frames` does, decoded by FFmpeg
//! ([`lmms_collators::video`]), through [`Qwen2VlVideoProcessor`]: `pixel_values_videos`,
//! `video_grid_thw`, and for Qwen2.5-VL `second_per_grid_ts` (`temporal_patch_size /
//! sampled_fps`, as `Qwen2_5_VLProcessor`).
//! Checked against transformers in `adapters/qwen2_vl/tests/collate.rs` (fixtures by
//! `tools/fixtures/qwen2_vl_collate.py`).

use crate::config::{QwenVlConfig, Variant};
use crate::model::QwenVlInputs;
use lmms_collators::image::load_image;
use lmms_collators::image::qwen2_vl::{Qwen2VlImageProcessor, Qwen2VlPatches};
use lmms_collators::image::qwen2_vl_video::{FrameSampling, Qwen2VlVideoProcessor};
use lmms_collators::template::{ChatTemplate, ContentStyle};
use lmms_collators::text::{
    EncodeOptions, EncodeOutcome, Encoded, LabelMode, MediaKind, TextTokenizer,
    encode_conversation_with, pad_batch,
};
use lmms_collators::video::{probe, read_frames_at};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Prepare, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
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
    pub videos: Qwen2VlVideoProcessor,
    image_token_id: u32,
    video_token_id: u32,
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
    videos: Vec<Qwen2VlPatches>,
    /// Qwen2.5-VL's seconds per temporal patch, per video.
    seconds: Vec<f32>,
}

/// A video as sampled: which frames, of how many, at what size and frame rate.
struct VideoPlan {
    indices: Vec<usize>,
    total: usize,
    height: usize,
    width: usize,
    fps: Option<f64>,
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
        let images = Qwen2VlImageProcessor::from_model_dir(&root)?
            .with_pixels(options.min_pixels, options.max_pixels)
            .map_err(|e| Error::config(root.join("preprocessor_config.json"), e.with_causes()))?;
        let videos = Qwen2VlVideoProcessor::from_model_dir(&root)?;
        let videos_source = videos.source.clone();
        let videos = videos
            .with_pixels(options.video_min_pixels, options.video_max_pixels)
            .map_err(|e| Error::config(&videos_source, e.with_causes()))?;
        if (
            videos.frames.patch_size,
            videos.frames.merge_size,
            videos.frames.temporal_patch_size,
        ) != (
            images.patch_size,
            images.merge_size,
            images.temporal_patch_size,
        ) {
            return Err(Error::config(
                videos_source,
                "the video processor's patch_size / merge_size / temporal_patch_size differ \
                 from the image processor's",
            ));
        }
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
        let video_token_id = u32::try_from(config.video_token_id)
            .ok()
            .filter(|&id| tokenizer.token_id(VIDEO_PAD) == Some(id))
            .ok_or_else(|| {
                Error::config(
                    root.join("tokenizer.json"),
                    format!(
                        "`{VIDEO_PAD}` is {} in the tokenizer but config.json's video_token_id is {}",
                        tokenizer
                            .token_id(VIDEO_PAD)
                            .map_or("not a token".to_string(), |i| format!("id {i}")),
                        config.video_token_id
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
            videos,
            image_token_id,
            video_token_id,
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

    /// Overrides the video processor's pixel bounds (per frame).
    pub fn with_video_pixels(mut self, min: Option<usize>, max: Option<usize>) -> Result<Self> {
        self.videos = self.videos.with_pixels(min, max)?;
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn encode(
        &self,
        sample: &Sample,
        counts: &[usize],
        video_counts: &[usize],
        options: &EncodeOptions,
    ) -> Result<Encoded> {
        let (image, video) = (self.image_token_id, self.video_token_id);
        let mut expand = |kind: MediaKind, index: usize| {
            Ok(match kind {
                MediaKind::Image => counts.get(index).map(|&n| vec![image; n]),
                MediaKind::Video => video_counts.get(index).map(|&n| vec![video; n]),
            })
        };
        let outcome = encode_conversation_with(
            &self.tokenizer,
            &self.template,
            sample,
            options,
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
                    .map_err(|e| sample.origin.media_error("image", path, &e))
            })
            .collect()
    }

    /// Which frames of each video of `sample` are used (no decoding).
    fn plan_videos(&self, sample: &Sample) -> Result<Vec<VideoPlan>> {
        sample
            .videos
            .iter()
            .map(|path| {
                let info = probe(path).map_err(|e| video_error(sample, path, &e.with_causes()))?;
                let indices = self
                    .videos
                    .sample_indices(
                        info.frames,
                        info.fps,
                        FrameSampling::NumFrames(self.options.num_frames),
                    )
                    .map_err(|reason| video_error(sample, path, &reason))?;
                Ok(VideoPlan {
                    indices,
                    total: info.frames,
                    height: info.height as usize,
                    width: info.width as usize,
                    fps: info.fps,
                })
            })
            .collect()
    }

    fn video_counts(&self, sample: &Sample, plans: &[VideoPlan]) -> Result<Vec<usize>> {
        plans
            .iter()
            .zip(&sample.videos)
            .map(|(v, path)| {
                self.videos
                    .num_tokens(v.indices.len(), v.height, v.width)
                    .map_err(|e| video_error(sample, path, &e.with_causes()))
            })
            .collect()
    }

    fn prepare(&self, sample: &Sample, options: &EncodeOptions) -> Result<Prepare<Prepared>> {
        let images = sample
            .images
            .iter()
            .map(|p| load_image(p).map_err(|e| sample.origin.media_error("image", p, &e)))
            .collect::<Result<Vec<_>>>()?;
        let sizes: Vec<(usize, usize)> = images
            .iter()
            .map(|i| (i.height() as usize, i.width() as usize))
            .collect();
        let plans = self.plan_videos(sample)?;
        let encoded = self.encode(
            sample,
            &self.counts(sample, &sizes)?,
            &self.video_counts(sample, &plans)?,
            options,
        )?;
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
                    .map_err(|e| sample.origin.media_error("image", path, &e))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut videos = Vec::with_capacity(plans.len());
        let mut seconds = Vec::with_capacity(plans.len());
        for (plan, path) in plans.iter().zip(&sample.videos) {
            let frames = read_frames_at(path, &plan.indices)
                .map_err(|e| video_error(sample, path, &e.with_causes()))?;
            videos.push(
                self.videos
                    .process(&frames)
                    .map_err(|e| video_error(sample, path, &e.with_causes()))?,
            );
            seconds.push(
                self.videos
                    .second_per_grid(plan.indices.len(), plan.total, plan.fps)
                    as f32,
            );
        }
        Ok(Prepare::Ready(Prepared {
            encoded,
            patches,
            videos,
            seconds,
        }))
    }
}

/// `<sample>: video <path>: <reason>`.
fn video_error(sample: &Sample, path: &Path, reason: &str) -> Error {
    sample
        .origin
        .error(format!("video {}: {reason}", path.display()))
}

impl Collator for QwenVlCollator {
    type Batch = QwenVlInputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<QwenVlInputs>, Vec<Skipped>)> {
        let (kept, skipped) = Prepare::split(
            samples,
            samples.iter().map(|s| self.prepare(s, &self.encode)),
            "tokens (media included)",
        )?;
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        Ok((Some(self.assemble(kept)), skipped))
    }

    fn prompt(&self, conversation: &Sample) -> Result<QwenVlInputs> {
        let options = EncodeOptions {
            generation_prompt: true,
            ..self.encode.clone()
        };
        let p = self
            .prepare(conversation, &options)?
            .into_prompt(conversation, "tokens (media included)")?;
        Ok(self.assemble(vec![p]))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn stop_ids(&self) -> Vec<u32> {
        self.tokenizer.stop_ids(Some(&self.dir))
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        let sizes = sample
            .images
            .iter()
            .map(|p| {
                load_image(p)
                    .map(|i| (i.height() as usize, i.width() as usize))
                    .map_err(|e| sample.origin.media_error("image", p, &e))
            })
            .collect::<Result<Vec<_>>>()?;
        let plans = self.plan_videos(sample)?;
        let videos = self.video_counts(sample, &plans)?;
        Ok(self
            .encode(sample, &self.counts(sample, &sizes)?, &videos, &self.encode)?
            .len())
    }
}

impl QwenVlCollator {
    /// One batch of prepared samples: right-padded ids, the images' and videos' patches and grids.
    fn assemble(&self, kept: Vec<Prepared>) -> QwenVlInputs {
        let encoded: Vec<&Encoded> = kept.iter().map(|p| &p.encoded).collect();
        let tokens = pad_batch(&encoded, self.pad_id);
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
        let (mut video_pixels, mut video_grids, mut seconds) = (Vec::new(), Vec::new(), Vec::new());
        for p in &kept {
            for v in &p.videos {
                video_pixels.extend_from_slice(&v.data);
                video_grids.extend(v.grid.iter().map(|&g| g as i64));
            }
            seconds.extend_from_slice(&p.seconds);
        }
        let n_videos = video_grids.len() / 3;
        let (pixel_values_videos, video_grid_thw, second_per_grid_ts) = if n_videos == 0 {
            (None, None, None)
        } else {
            let k = self.videos.frames.patch_values();
            (
                Some(HostTensor {
                    shape: vec![video_pixels.len() / k, k],
                    data: video_pixels,
                }),
                Some(HostTensor {
                    shape: vec![n_videos, 3],
                    data: video_grids,
                }),
                // Only Qwen2_5_VLProcessor returns it (Qwen2-VL's temporal step is fixed).
                (self.config.variant == Variant::Qwen25).then(|| HostTensor {
                    shape: vec![n_videos],
                    data: seconds,
                }),
            )
        };
        QwenVlInputs {
            tokens,
            pixel_values,
            image_grid_thw,
            pixel_values_videos,
            video_grid_thw,
            second_per_grid_ts,
        }
    }
}
