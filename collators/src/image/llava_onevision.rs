//! `LlavaOnevisionImageProcessor` as transformers 5 runs it without torchvision
//! (`transformers/models/llava_onevision/image_processing_pil_llava_onevision.py`): anyres tiling
//! for a single image, and for each image of a multi-image sample (`batch_num_images > 1`) one
//! tile padded to a square with the mean colour; token counts as
//! `processing_llava_onevision.py` computes them (see [`super::tokens`]).
//! Bit-identical to HF on the fixtures.

use ::image::RgbImage;
use lmms_core::Result;
use std::path::Path;

use super::anyres::{Anyres, AnyresBatch, AnyresImage};
use super::base::{BaseImageProcessor, Defaults, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use super::config::{ImageProcessorConfig, Size};
use super::tokens::OnevisionTokens;
use super::transforms::paste;

/// HF's default `image_grid_pinpoints` for LLaVA-OneVision: every 384 x {1..6} by 384 x {1..6}.
pub fn onevision_default_pinpoints() -> Vec<[usize; 2]> {
    (1..=6)
        .flat_map(|i| (1..=6).map(move |j| [384 * i, 384 * j]))
        .collect()
}

/// `LlavaOnevisionImageProcessor`: 384x384 tiles, OpenAI CLIP mean/std by default (the hub
/// configs set 0.5), no center crop, anyres tiling.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaOnevisionImageProcessor {
    pub base: BaseImageProcessor,
    /// (height, width) grid resolutions.
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// Zero-pad images to the same tile count in a batch.
    pub do_pad: bool,
}

impl LlavaOnevisionImageProcessor {
    pub fn from_config(cfg: &ImageProcessorConfig) -> Result<Self> {
        let defaults = Defaults {
            size: Size::HeightWidth {
                height: 384,
                width: 384,
            },
            crop_size: None,
            do_center_crop: false,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
        };
        Ok(Self {
            base: BaseImageProcessor::from_config(cfg, &defaults)?,
            image_grid_pinpoints: cfg.resolve_pinpoints(&onevision_default_pinpoints())?,
            do_pad: cfg.do_pad.unwrap_or(true),
        })
    }

    /// Reads the model directory's config (see [`ImageProcessorConfig::from_model_dir`]).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(&ImageProcessorConfig::from_model_dir(dir)?)
    }

    fn anyres(&self) -> Anyres<'_> {
        Anyres {
            base: &self.base,
            pinpoints: &self.image_grid_pinpoints,
            do_pad: self.do_pad,
        }
    }

    /// The (height, width) of every output tile.
    pub fn tile_size(&self) -> (usize, usize) {
        self.anyres().tile_size()
    }

    /// The pinpoint (height, width) chosen for an image of original size (height, width).
    pub fn best_resolution(&self, orig: (usize, usize)) -> (usize, usize) {
        self.anyres().best_resolution(orig)
    }

    /// Tiles (base tile included) of a single image of original size (height, width).
    pub fn num_tiles(&self, orig: (usize, usize)) -> usize {
        self.anyres().num_tiles(orig)
    }

    /// A single image (anyres) -> `[num_tiles, 3, H, W]` and its original size.
    pub fn process(&self, img: &RgbImage) -> Result<AnyresImage> {
        self.anyres().process(img)
    }

    /// One image of a multi-image sample -> `[1, 3, H, W]`: padded to a square with the colour
    /// `int(mean * 255)`, then resized.
    pub fn process_in_multi(&self, img: &RgbImage) -> Result<AnyresImage> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let square;
        let tile = if w == h {
            img
        } else {
            let side = w.max(h);
            let fill = self.base.normalize.mean.map(|m| (m * 255.0) as u8);
            square = paste(img, side, side, (side - h) / 2, (side - w) / 2, fill);
            &square
        };
        self.anyres()
            .process_tiles(std::slice::from_ref(tile), (h, w))
    }

    /// Samples -> `pixel_values` `[total_images, max_tiles, 3, H, W]` and `image_sizes`, as HF
    /// for nested input: a sample with one image gets anyres tiles, each image of a sample with
    /// several gets one tile ([`Self::process_in_multi`]).
    pub fn preprocess_samples(&self, samples: &[Vec<RgbImage>]) -> Result<AnyresBatch> {
        let mut items = Vec::new();
        for s in samples {
            for img in s {
                items.push(if s.len() == 1 {
                    self.process(img)?
                } else {
                    self.process_in_multi(img)?
                });
            }
        }
        self.anyres().stack(items)
    }

    /// Images, each its own sample (HF's flat-list input) -> `[N, max_tiles, 3, H, W]`.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<AnyresBatch> {
        self.anyres().preprocess(images)
    }

    /// Placeholder tokens for a single image of original size (height, width).
    pub fn num_image_tokens(
        &self,
        orig: (usize, usize),
        tokens: &OnevisionTokens,
    ) -> Result<usize> {
        tokens.count(orig, self.tile_size(), &self.image_grid_pinpoints)
    }
}
