//! The videos of a batch, for the variants that take them: which HF video processor applies,
//! how many placeholder tokens each video becomes, and `pixel_values_videos`.
//!
//! - LLaVA-NeXT-Video (`LlavaNextVideoProcessor`): frames through the CLIP pipeline of
//!   `LlavaNextVideoVideoProcessor`; the model pools each frame's `side x side` patch features
//!   with stride `spatial_pool_stride` before the projector: `frames * (side / stride)^2`
//!   tokens, no newline. (HF's processor hard-codes `(H / patch) * (W / patch) // 4`, the same
//!   for the stride 2 of every released checkpoint.)
//! - LLaVA-OneVision (`LlavaOnevisionProcessor`): frames through the SigLIP-style
//!   `LlavaOnevisionVideoProcessor`; bilinear pooling to `ceil(side / 2)` after the projector:
//!   `frames * ceil(side / 2)^2 + 1` tokens (one `image_newline` closes the video).
//! - LLaVA-1.5 / Interleave and LLaVA-NeXT take no videos (llava-interleave's HF recipe feeds
//!   frames as images: not done here).
//!
//! Frames: `CollateOptions::num_frames` per video, sampled as transformers' video processors do
//! with `num_frames` ([`lmms_collators::video`]). A processed frame must be the vision tower's
//! size.

use crate::config::{LlavaConfig, Variant};
use lmms_collators::video::{VideoProcessor, VideoProcessorKind, read_frames};
use lmms_core::error::{Error, Result};
use lmms_core::tensor_file::HostTensor;
use std::path::Path;

/// The video pipeline of one model.
#[derive(Debug, Clone)]
pub(crate) struct Videos {
    processor: VideoProcessor,
    num_frames: usize,
    /// Placeholder tokens per video.
    tokens: usize,
    /// (height, width) of a processed frame.
    frame: (usize, usize),
}

impl Videos {
    /// The video pipeline of a model directory, or why the model takes no videos here.
    pub(crate) fn from_model_dir(dir: &Path, c: &LlavaConfig, num_frames: usize) -> Result<Self> {
        let kind = match c.variant {
            Variant::NextVideo => VideoProcessorKind::LlavaNextVideo,
            Variant::OneVision => VideoProcessorKind::LlavaOnevision,
            Variant::Llava => {
                return Err(Error::Unsupported(
                    "this LLaVA model takes no videos (LLaVA-Interleave's frames-as-images \
                     recipe is not supported yet; give the frames as images)"
                        .into(),
                ));
            }
            Variant::Next => {
                return Err(Error::Unsupported(
                    "LLaVA-NeXT takes no videos (LLaVA-NeXT-Video and LLaVA-OneVision do)".into(),
                ));
            }
        };
        if c.video_token_id.is_none() {
            return Err(Error::config(
                dir.join("config.json"),
                "has no video_token_index: the model cannot place video features",
            ));
        }
        if num_frames == 0 {
            return Err(Error::Unsupported("num_frames is 0".into()));
        }
        let processor = VideoProcessor::from_model_dir(dir, kind)?;
        let side = c.vision.image_size;
        let frame = processor.output_size(side, side);
        let fixed = processor.base.do_center_crop
            || matches!(
                processor.base.size,
                lmms_collators::image::Size::HeightWidth { .. }
            );
        if !fixed || frame != (side, side) {
            return Err(Error::config(
                &processor.source,
                format!(
                    "the video processor makes {} frames but the vision tower of config.json \
                     takes {side}x{side} images",
                    if fixed {
                        format!("{}x{} (HxW)", frame.0, frame.1)
                    } else {
                        "aspect-preserving".to_string()
                    }
                ),
            ));
        }
        let grid = c.tile_side();
        let tokens = match c.variant {
            Variant::NextVideo => {
                let pooled = grid / c.spatial_pool.1.max(1);
                num_frames * pooled * pooled
            }
            _ => num_frames * grid.div_ceil(2).pow(2) + 1,
        };
        Ok(Videos {
            processor,
            num_frames,
            tokens,
            frame,
        })
    }

    /// Placeholder tokens of one video.
    pub(crate) fn num_tokens(&self) -> usize {
        self.tokens
    }

    /// One video -> `[F, 3, H, W]` values.
    pub(crate) fn process(&self, path: &Path) -> Result<Vec<f32>> {
        let frames = read_frames(path, self.num_frames)?;
        Ok(self.processor.preprocess(&frames)?.data)
    }

    /// `pixel_values_videos` `[V, F, 3, H, W]` of the batch's videos, in order; `None` without
    /// videos.
    pub(crate) fn stack(&self, videos: Vec<Vec<f32>>) -> Option<HostTensor<f32>> {
        if videos.is_empty() {
            return None;
        }
        let (h, w) = self.frame;
        let shape = vec![videos.len(), self.num_frames, 3, h, w];
        let data = videos.concat();
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Some(HostTensor { shape, data })
    }
}
