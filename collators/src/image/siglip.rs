//! `SiglipImageProcessor` as transformers 5 runs it without torchvision
//! (`transformers/models/siglip/image_processing_pil_siglip.py`): resize to a fixed height x
//! width (bicubic, aspect ratio not kept), rescale 1/255, normalize with mean = std = 0.5. Used by
//! llava-interleave and for LLaVA-OneVision video frames. Bit-identical to HF on the fixtures.

use ::image::RgbImage;
use lmms_core::Result;
use std::path::Path;

use super::PixelBatch;
use super::base::{BaseImageProcessor, Defaults, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD};
use super::config::{ImageProcessorConfig, Size};

/// `SiglipImageProcessor`: [`BaseImageProcessor`] with SigLIP's defaults
/// (224x224, no center crop, mean = std = 0.5, bicubic).
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipImageProcessor {
    pub base: BaseImageProcessor,
}

impl SiglipImageProcessor {
    pub fn from_config(cfg: &ImageProcessorConfig) -> Result<Self> {
        let defaults = Defaults {
            size: Size::HeightWidth {
                height: 224,
                width: 224,
            },
            crop_size: None,
            do_center_crop: false,
            mean: IMAGENET_STANDARD_MEAN,
            std: IMAGENET_STANDARD_STD,
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

    /// Images -> `[N, 3, H, W]` (`pixel_values`, or one video's frames).
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<PixelBatch> {
        self.base.preprocess(images)
    }
}
