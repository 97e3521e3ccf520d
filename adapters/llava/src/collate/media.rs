//! The images of a batch, per LLaVA variant: which Hugging Face image processor applies, how many
//! placeholder tokens each image becomes, and how the pixel tensors stack.
//!
//! Token counts follow the HF processors' formulas (`processing_llava*.py`, see
//! [`lmms_collators::image`]) with the settings taken from the model's `config.json` (patch
//! size, class token, feature-select strategy, pinpoints, `anyres_max_N`): that is what the
//! model produces a feature vector for, one per placeholder. With hub checkpoints these are the
//! settings of `processor_config.json` too.

use crate::config::{LlavaConfig, SelectStrategy, Variant};
use image::RgbImage;
use lmms_collators::image::{
    BaseImageProcessor, FeatureSelect, ImageProcessor, ImageProcessorConfig,
    LlavaNextImageProcessor, LlavaOnevisionImageProcessor, NextTokens, OnevisionTokens, Size,
    llava_num_image_tokens,
};
use lmms_core::error::{Error, Result};
use lmms_core::tensor_file::HostTensor;
use lmms_core::vision::VisionKind;
use std::path::Path;

/// The image pipeline of one model.
#[derive(Debug, Clone)]
pub(crate) enum Images {
    /// LLaVA-1.5 / Interleave: every image is one tile (CLIP or SigLIP processor), a fixed number
    /// of tokens.
    Single {
        base: BaseImageProcessor,
        tokens: usize,
    },
    /// LLaVA-NeXT / NeXT-Video: anyres tiles.
    Next {
        processor: LlavaNextImageProcessor,
        tokens: NextTokens,
    },
    /// LLaVA-OneVision: anyres tiles for a sample's only image, one square tile for each image of
    /// a multi-image sample.
    Onevision {
        processor: LlavaOnevisionImageProcessor,
        tokens: OnevisionTokens,
    },
}

/// `pixel_values` and `image_sizes` of a batch.
pub(crate) type Stacked = (Option<HostTensor<f32>>, Option<HostTensor<i64>>);

/// One preprocessed image: `[tiles, 3, H, W]` and its original (height, width).
#[derive(Debug, Clone)]
pub(crate) struct Pixels {
    pub data: Vec<f32>,
    pub tiles: usize,
    /// (height, width) of one tile.
    pub tile: (usize, usize),
    pub size: (usize, usize),
}

/// The output size of a pipeline that gives every image the same size, if it does.
fn fixed_output(base: &BaseImageProcessor) -> Option<(usize, usize)> {
    match (
        base.do_center_crop,
        base.crop_size,
        base.size,
        base.do_resize,
    ) {
        (true, Some(crop), _, _) => Some(crop),
        (_, _, Size::HeightWidth { height, width }, true) => Some((height, width)),
        _ => None,
    }
}

impl Images {
    /// The image processor of `dir` (`processor_config.json`'s `image_processor`, else
    /// `preprocessor_config.json`), checked against the model config `c`.
    pub(crate) fn from_model_dir(dir: &Path, c: &LlavaConfig) -> Result<Self> {
        let cfg = ImageProcessorConfig::from_model_dir(dir)?;
        let source = if cfg.source.as_os_str().is_empty() {
            dir.to_path_buf()
        } else {
            cfg.source.clone()
        };
        let processor = ImageProcessor::from_config(&cfg)?;
        let strategy = match c.select_strategy {
            SelectStrategy::Default => FeatureSelect::Default,
            SelectStrategy::Full => FeatureSelect::Full,
        };
        let has_cls = c.vision.kind() == VisionKind::Clip;
        let side = c.vision.image_size;
        let patch = c.vision.patch_size;
        let check_tile = |tile: (usize, usize)| {
            if tile == (side, side) {
                Ok(())
            } else {
                Err(Error::config(
                    &source,
                    format!(
                        "the image processor makes {}x{} (HxW) tiles but the vision tower of \
                         config.json takes {side}x{side} images",
                        tile.0, tile.1
                    ),
                ))
            }
        };
        let check_pinpoints = |pins: &[[usize; 2]]| {
            if pins == c.image_grid_pinpoints.as_slice() {
                Ok(())
            } else {
                Err(Error::config(
                    &source,
                    format!(
                        "image_grid_pinpoints {pins:?} differ from config.json's {:?}: the model \
                         would split images into other tiles than the processor",
                        c.image_grid_pinpoints
                    ),
                ))
            }
        };
        let wrong = |want: &str, got: &ImageProcessor| {
            let name = match got {
                ImageProcessor::Clip(_) => "CLIPImageProcessor",
                ImageProcessor::Siglip(_) => "SiglipImageProcessor",
                ImageProcessor::LlavaNext(_) => "LlavaNextImageProcessor",
                ImageProcessor::LlavaOnevision(_) => "LlavaOnevisionImageProcessor",
            };
            Error::config(
                &source,
                format!(
                    "is a {name}, but a {:?} model (config.json) needs a {want}",
                    c.variant
                ),
            )
        };
        match (c.variant, processor) {
            (Variant::Llava, ImageProcessor::Clip(p)) => Self::single(p.base, c, &source),
            (Variant::Llava, ImageProcessor::Siglip(p)) => Self::single(p.base, c, &source),
            (Variant::Llava, other) => {
                Err(wrong("CLIPImageProcessor or SiglipImageProcessor", &other))
            }
            (Variant::Next | Variant::NextVideo, ImageProcessor::LlavaNext(p)) => {
                check_tile(p.tile_size())?;
                check_pinpoints(&p.image_grid_pinpoints)?;
                Ok(Images::Next {
                    processor: p,
                    tokens: NextTokens::from_vision(patch, has_cls, strategy),
                })
            }
            (Variant::Next | Variant::NextVideo, other) => {
                Err(wrong("LlavaNextImageProcessor", &other))
            }
            (Variant::OneVision, ImageProcessor::LlavaOnevision(p)) => {
                check_tile(p.tile_size())?;
                check_pinpoints(&p.image_grid_pinpoints)?;
                let tokens = OnevisionTokens::from_vision(
                    side,
                    patch,
                    strategy,
                    &format!("anyres_max_{}", c.anyres_max),
                )?;
                Ok(Images::Onevision {
                    processor: p,
                    tokens,
                })
            }
            (Variant::OneVision, other) => Err(wrong("LlavaOnevisionImageProcessor", &other)),
        }
    }

    fn single(base: BaseImageProcessor, c: &LlavaConfig, source: &Path) -> Result<Self> {
        let side = c.vision.image_size;
        let Some(tile) = fixed_output(&base) else {
            return Err(Error::config(
                source,
                "the image processor keeps each image's aspect ratio (no center crop, no fixed \
                 size): LLaVA needs every image at the vision tower's size",
            ));
        };
        if tile != (side, side) {
            return Err(Error::config(
                source,
                format!(
                    "the image processor makes {}x{} (HxW) images but the vision tower of \
                     config.json takes {side}x{side}",
                    tile.0, tile.1
                ),
            ));
        }
        let strategy = match c.select_strategy {
            SelectStrategy::Default => FeatureSelect::Default,
            SelectStrategy::Full => FeatureSelect::Full,
        };
        let cls = usize::from(c.vision.kind() == VisionKind::Clip);
        let tokens = llava_num_image_tokens(tile, c.vision.patch_size, cls, strategy);
        Ok(Images::Single { base, tokens })
    }

    /// Whether token counts depend on the images' sizes.
    pub(crate) fn needs_sizes(&self) -> bool {
        !matches!(self, Images::Single { .. })
    }

    /// Placeholder tokens of an image of original (height, width) `size`; `in_multi`: the image
    /// is one of several of its sample.
    pub(crate) fn num_tokens(&self, size: (usize, usize), in_multi: bool) -> Result<usize> {
        match self {
            Images::Single { tokens, .. } => Ok(*tokens),
            Images::Next { processor, tokens } => processor.num_image_tokens(size, tokens),
            Images::Onevision { tokens, .. } if in_multi => Ok(tokens.count_multi_image()),
            Images::Onevision { processor, tokens } => processor.num_image_tokens(size, tokens),
        }
    }

    /// Preprocesses one image (see [`Images::num_tokens`] for `in_multi`).
    pub(crate) fn process(&self, img: &RgbImage, in_multi: bool) -> Result<Pixels> {
        let size = (img.height() as usize, img.width() as usize);
        let (batch, size) = match self {
            Images::Single { base, .. } => (base.process(img)?, size),
            Images::Next { processor, .. } => {
                let a = processor.process(img)?;
                (a.pixel_values, a.image_size)
            }
            Images::Onevision { processor, .. } => {
                let a = if in_multi {
                    processor.process_in_multi(img)?
                } else {
                    processor.process(img)?
                };
                (a.pixel_values, a.image_size)
            }
        };
        let s = &batch.shape;
        let (tiles, tile) = match s.len() {
            3 => (1, (s[1], s[2])),
            _ => (s[0], (s[2], s[3])),
        };
        Ok(Pixels {
            data: batch.data,
            tiles,
            tile,
            size,
        })
    }

    /// `pixel_values` (`[N, 3, H, W]`, or `[N, max_tiles, 3, H, W]` zero-padded for anyres) and,
    /// for anyres, `image_sizes` (`[N, 2]`); `None` without images.
    pub(crate) fn stack(&self, items: Vec<Pixels>) -> Result<Stacked> {
        let Some(first) = items.first() else {
            return Ok((None, None));
        };
        let (h, w) = first.tile;
        if let Some((i, p)) = items.iter().enumerate().find(|(_, p)| p.tile != (h, w)) {
            return Err(Error::Batch(format!(
                "image {i} has {}x{} tiles, image 0 {h}x{w}",
                p.tile.0, p.tile.1
            )));
        }
        let per_tile = 3 * h * w;
        let n = items.len();
        if let Images::Single { .. } = self {
            let mut data = Vec::with_capacity(n * per_tile);
            for p in items {
                data.extend_from_slice(&p.data);
            }
            return Ok((
                Some(HostTensor {
                    shape: vec![n, 3, h, w],
                    data,
                }),
                None,
            ));
        }
        let max_tiles = items.iter().map(|p| p.tiles).max().unwrap_or(1);
        let mut data = Vec::with_capacity(n * max_tiles * per_tile);
        let mut sizes = Vec::with_capacity(2 * n);
        for p in items {
            data.extend_from_slice(&p.data);
            data.resize(data.len() + (max_tiles - p.tiles) * per_tile, 0.0);
            sizes.extend([p.size.0 as i64, p.size.1 as i64]);
        }
        Ok((
            Some(HostTensor {
                shape: vec![n, max_tiles, 3, h, w],
                data,
            }),
            Some(HostTensor {
                shape: vec![n, 2],
                data: sizes,
            }),
        ))
    }
}
