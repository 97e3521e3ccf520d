//! The shared pipeline of `transformers/image_processing_backends.py` (`PilBackend._preprocess`):
//! resize (Pillow) -> center crop -> rescale -> normalize, per image, on 8-bit RGB.
//! CLIP and SigLIP are this pipeline with different defaults; the anyres processors run it on
//! every tile.

use ::image::RgbImage;
use lmms_core::{Error, Result};

use super::PixelBatch;
use super::config::{ImageProcessorConfig, Size};
use super::resample::{Resample, resize, resize_window};
use super::transforms::{Normalize, center_crop, shortest_edge_size};

/// `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD` of `transformers/image_utils.py`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// `IMAGENET_STANDARD_MEAN` / `IMAGENET_STANDARD_STD`.
pub const IMAGENET_STANDARD_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
pub const IMAGENET_STANDARD_STD: [f64; 3] = [0.5, 0.5, 0.5];

/// A processor class's defaults for keys absent from the config.
#[derive(Debug, Clone)]
pub(crate) struct Defaults {
    pub size: Size,
    pub crop_size: Option<(usize, usize)>,
    pub do_center_crop: bool,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// The resolved settings of one `PilBackend` pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseImageProcessor {
    pub do_resize: bool,
    pub size: Size,
    pub resample: Resample,
    pub do_center_crop: bool,
    /// (height, width)
    pub crop_size: Option<(usize, usize)>,
    pub normalize: Normalize,
    /// Inputs are always RGB here (see [`super::convert_to_rgb`]); kept for reference.
    pub do_convert_rgb: bool,
}

impl BaseImageProcessor {
    pub(crate) fn from_config(cfg: &ImageProcessorConfig, d: &Defaults) -> Result<Self> {
        let rescale_factor = cfg.rescale_factor.unwrap_or(1.0 / 255.0);
        if !rescale_factor.is_finite() {
            return Err(cfg.err(format!(
                "`rescale_factor` must be finite, got {rescale_factor}"
            )));
        }
        let p = BaseImageProcessor {
            do_resize: cfg.do_resize.unwrap_or(true),
            size: cfg.resolve_size(d.size)?,
            resample: cfg.resolve_resample(Resample::Bicubic)?,
            do_center_crop: cfg.do_center_crop.unwrap_or(d.do_center_crop),
            crop_size: cfg.resolve_crop(d.crop_size)?,
            normalize: Normalize {
                do_rescale: cfg.do_rescale.unwrap_or(true),
                rescale_factor,
                do_normalize: cfg.do_normalize.unwrap_or(true),
                mean: cfg.resolve_channels("image_mean", d.mean)?,
                std: cfg.resolve_channels("image_std", d.std)?,
            },
            do_convert_rgb: cfg.do_convert_rgb.unwrap_or(true),
        };
        if p.do_center_crop && p.crop_size.is_none() {
            return Err(cfg.err("`do_center_crop` is true but there is no `crop_size`"));
        }
        Ok(p)
    }

    /// The (height, width) that the resize step produces for an input of that size.
    pub fn resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        if !self.do_resize {
            return (height, width);
        }
        match self.size {
            Size::ShortestEdge(s) => shortest_edge_size(height, width, s),
            Size::HeightWidth { height, width } => (height, width),
        }
    }

    /// The (height, width) of the output for an input of that size.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        match (self.do_center_crop, self.crop_size) {
            (true, Some(c)) => c,
            _ => self.resized_size(height, width),
        }
    }

    /// Resize and center crop, still 8-bit.
    pub fn transform(&self, img: &RgbImage) -> Result<RgbImage> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::Unsupported(format!(
                "cannot preprocess an empty {w}x{h} image"
            )));
        }
        let (nh, nw) = self.resized_size(h as usize, w as usize);
        if nh == 0 || nw == 0 {
            return Err(Error::Unsupported(format!(
                "a {w}x{h} image would be resized to {nw}x{nh}"
            )));
        }
        if let (true, Some((ch, cw))) = (self.do_center_crop, self.crop_size) {
            if ch <= nh && cw <= nw {
                // The crop window lies inside the resized image: compute only its pixels.
                let (top, left) = ((nh - ch) / 2, (nw - cw) / 2);
                return Ok(resize_window(
                    img,
                    nw as u32,
                    nh as u32,
                    self.resample,
                    (left as u32, top as u32, cw as u32, ch as u32),
                ));
            }
            let resized = resize(img, nw as u32, nh as u32, self.resample);
            return Ok(center_crop(&resized, ch, cw));
        }
        Ok(resize(img, nw as u32, nh as u32, self.resample))
    }

    /// Appends the `[3, H, W]` values of one processed image to `out`; returns (H, W).
    pub fn process_into(&self, img: &RgbImage, out: &mut Vec<f32>) -> Result<(usize, usize)> {
        let t = self.transform(img)?;
        self.normalize.write_chw(&t, out);
        Ok((t.height() as usize, t.width() as usize))
    }

    /// One image -> `[3, H, W]`.
    pub fn process(&self, img: &RgbImage) -> Result<PixelBatch> {
        let mut data = Vec::new();
        let (h, w) = self.process_into(img, &mut data)?;
        Ok(PixelBatch::new(data, vec![3, h, w]))
    }

    /// Images -> `[N, 3, H, W]`; all outputs must have the same size (as for HF's
    /// `return_tensors`), which a center crop or a fixed size guarantees.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<PixelBatch> {
        let mut data = Vec::new();
        let mut hw = None;
        for (i, img) in images.iter().enumerate() {
            let got = self.process_into(img, &mut data)?;
            match hw {
                None => hw = Some(got),
                Some(first) if first != got => {
                    return Err(Error::Batch(format!(
                        "image {i} preprocesses to {}x{} (HxW) but image 0 to {}x{}; \
                         without a center crop or a fixed size images do not stack",
                        got.0, got.1, first.0, first.1
                    )));
                }
                _ => {}
            }
        }
        let (h, w) = hw.unwrap_or_else(|| self.output_size(0, 0));
        Ok(PixelBatch::new(data, vec![images.len(), 3, h, w]))
    }
}
