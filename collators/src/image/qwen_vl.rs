//! Qwen-VL's image transform (`visual.py`, `VisionTransformer.image_transform`): torchvision's
//! `Resize((448, 448), BICUBIC)` on the PIL image (Pillow's bicubic resize, aspect ratio not
//! kept), `ToTensor` (`/ 255`), `Normalize` with the OpenAI CLIP mean and std.

use super::base::{OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use super::resample::{Resample, resize};
use super::transforms::Normalize;
use ::image::RgbImage;

#[derive(Debug, Clone, PartialEq)]
pub struct QwenVlImageTransform {
    /// Output side (`visual.image_size`).
    pub image_size: usize,
    pub normalize: Normalize,
}

impl QwenVlImageTransform {
    pub fn new(image_size: usize) -> Self {
        QwenVlImageTransform {
            image_size,
            normalize: Normalize {
                do_rescale: true,
                rescale_factor: 1.0 / 255.0,
                do_normalize: true,
                mean: OPENAI_CLIP_MEAN,
                std: OPENAI_CLIP_STD,
            },
        }
    }

    /// Appends the `[3, image_size, image_size]` pixels of `img` to `out`.
    pub fn process_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let s = self.image_size as u32;
        let resized = if img.dimensions() == (s, s) {
            img.clone()
        } else {
            resize(img, s, s, Resample::Bicubic)
        };
        self.normalize.write_chw(&resized, out);
    }
}
