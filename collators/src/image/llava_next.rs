//! `LlavaNextImageProcessor` as transformers 5 runs it without torchvision
//! (`transformers/models/llava_next/image_processing_pil_llava_next.py`): anyres tiling over
//! `image_grid_pinpoints` (see [`super::anyres`]), each tile through the CLIP pipeline; token
//! counts as `processing_llava_next.py` computes them (see [`super::tokens`]).
//! Bit-identical to HF on the fixtures.

use ::image::RgbImage;
use lmms_core::Result;
use std::path::Path;

use super::anyres::{Anyres, AnyresBatch, AnyresImage};
use super::base::{BaseImageProcessor, Defaults, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use super::config::{ImageProcessorConfig, Size};
use super::tokens::NextTokens;

/// HF's default `image_grid_pinpoints` for LLaVA-NeXT (height, width).
pub const NEXT_DEFAULT_PINPOINTS: [[usize; 2]; 5] =
    [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/// `LlavaNextImageProcessor`: CLIP defaults (shortest edge 224, crop 224) plus anyres tiling.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaNextImageProcessor {
    pub base: BaseImageProcessor,
    /// (height, width) grid resolutions.
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// Zero-pad images to the same tile count in a batch.
    pub do_pad: bool,
}

impl LlavaNextImageProcessor {
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
            image_grid_pinpoints: cfg.resolve_pinpoints(&NEXT_DEFAULT_PINPOINTS)?,
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

    /// Tiles (base tile included) for an image of original size (height, width): HF's
    /// `image_size_to_num_patches`.
    pub fn num_tiles(&self, orig: (usize, usize)) -> usize {
        self.anyres().num_tiles(orig)
    }

    /// One image -> `[num_tiles, 3, H, W]` and its original size.
    pub fn process(&self, img: &RgbImage) -> Result<AnyresImage> {
        self.anyres().process(img)
    }

    /// Images -> `pixel_values` `[N, max_tiles, 3, H, W]` and `image_sizes`.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<AnyresBatch> {
        self.anyres().preprocess(images)
    }

    /// Placeholder tokens for an image of original size (height, width).
    pub fn num_image_tokens(&self, orig: (usize, usize), tokens: &NextTokens) -> Result<usize> {
        tokens.count(orig, self.tile_size(), &self.image_grid_pinpoints)
    }
}
