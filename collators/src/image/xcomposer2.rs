//! InternLM-XComposer2-VL's `vis_processor` (`modeling_internlm_xcomposer2.py`):
//! `Resize((img_size, img_size), BICUBIC)` on the PIL image (Pillow's resampling, [`resize`]),
//! `ToTensor` (`u8 -> float32 / 255` in float32) and `Normalize` with CLIP's mean and std
//! (float32 `(x - mean) / std`). No aspect ratio is kept and nothing is cropped.

use crate::image::resample::{Resample, resize};
use ::image::RgbImage;

/// CLIP's normalisation constants, as the remote code writes them (f32 rounds them as torch
/// does).
#[allow(clippy::excessive_precision)]
pub const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XComposer2ImageProcessor {
    /// `config.json`'s `img_size` (490).
    pub size: usize,
}

impl XComposer2ImageProcessor {
    /// Appends the `[3, size, size]` float32 pixels of `img` to `out`.
    pub fn process_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let s = self.size as u32;
        let resized = resize(img, s, s, Resample::Bicubic);
        let luts: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - MEAN[c]) / STD[c]));
        let raw = resized.as_raw();
        out.reserve(raw.len());
        for (c, lut) in luts.iter().enumerate() {
            out.extend(raw[c..].iter().step_by(3).map(|&v| lut[v as usize]));
        }
    }
}
