//! `CLIPImageProcessor` as transformers 5 runs it without torchvision
//! (`transformers/models/clip/image_processing_pil_clip.py`): resize the shortest edge (bicubic),
//! center crop, rescale 1/255, normalize with the OpenAI CLIP mean/std. Used by LLaVA-1.5 (336 px)
//! and for LLaVA-NeXT-Video frames. Bit-identical to HF on the fixtures.

use ::image::RgbImage;
use lmms_core::Result;
use std::path::Path;

use super::PixelBatch;
use super::base::{BaseImageProcessor, Defaults, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use super::config::{ImageProcessorConfig, Size};

/// `CLIPImageProcessor`: [`BaseImageProcessor`] with CLIP's defaults
/// (shortest edge 224, center crop 224x224, OpenAI CLIP mean/std, bicubic).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    pub base: BaseImageProcessor,
}

impl ClipImageProcessor {
    pub fn from_config(cfg: &ImageProcessorConfig) -> Result<Self> {
        let defaults = Defaults {
            size: Size::ShortestEdge(224),
            crop_size: Some((224, 224)),
            do_center_crop: true,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
        };
        Ok(Self {
            base: BaseImageProcessor::from_config(cfg, &defaults)?,
        })
    }

    /// Reads the model directory's config (see [`ImageProcessorConfig::from_model_dir`]).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(&ImageProcessorConfig::from_model_dir(dir)?)
    }

    /// One image -> `[3, H, W]`.
    pub fn process(&self, img: &RgbImage) -> Result<PixelBatch> {
        self.base.process(img)
    }

    /// Images -> `[N, 3, H, W]` (`pixel_values`).
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<PixelBatch> {
        self.base.preprocess(images)
    }
}
