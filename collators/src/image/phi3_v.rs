//! Phi-3-Vision's HD image processor (`Phi3VImageProcessor`, the hub's remote code
//! `image_processing_phi3_v.py`), on the host:
//!
//! 1. HD transform: a portrait image is transposed; the largest `scale` with
//!    `scale * ceil(scale / ratio) <= num_crops` sets the width to `scale * 336` and the height to
//!    `int(width / ratio)` (Pillow bilinear resize, as torchvision's `resize` of a PIL image
//!    does); the height is padded with white to a multiple of 336 (top gets the floor half); a
//!    transposed image is transposed back.
//! 2. `ToTensor` + `Normalize`: `(x / 255 - mean) / std` in float32.
//! 3. The global image: the normalized HD image shrunk to 336x336 by `torch.nn.functional.
//!    interpolate(mode="bicubic")` (PyTorch's cubic convolution, a = -0.75, no antialiasing).
//! 4. `[global, 336x336 crops row by row]`, zero-padded to `num_crops + 1` crops.
//!
//! Per image it also gives `image_sizes` (the padded HD height and width) and the number of
//! image tokens the processor writes: `(h/336 * w/336 + 1) * 144 + 1 + (h/336 + 1) * 12`.

use crate::image::base::{OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use crate::image::resample::{Resample, resize};
use ::image::{Rgb, RgbImage};
use lmms_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The crop side (CLIP ViT-L/14-336's input).
pub const CROP: usize = 336;

/// Settings of `preprocessor_config.json` for `Phi3VImageProcessor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phi3VImageProcessor {
    /// The most crops the HD transform may cut (16 for Phi-3-vision, 4 for multi-frame use of
    /// Phi-3.5-vision); every image gets `num_crops + 1` slots.
    pub num_crops: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// One image after [`Phi3VImageProcessor::process`].
#[derive(Debug, Clone, PartialEq)]
pub struct Phi3VImage {
    /// `[num_crops + 1, 3, 336, 336]`: the global image, the crops, zero padding.
    pub pixels: Vec<f32>,
    /// Height and width of the padded HD image (multiples of 336).
    pub size: (usize, usize),
    pub num_img_tokens: usize,
}

impl Default for Phi3VImageProcessor {
    fn default() -> Self {
        Phi3VImageProcessor {
            num_crops: 1,
            image_mean: OPENAI_CLIP_MEAN.map(|x| x as f32),
            image_std: OPENAI_CLIP_STD.map(|x| x as f32),
        }
    }
}

fn triple(v: Option<&Value>, default: [f32; 3]) -> Option<[f32; 3]> {
    match v {
        None | Some(Value::Null) => Some(default),
        Some(Value::Number(n)) => n.as_f64().map(|x| [x as f32; 3]),
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64()? as f32;
            }
            Some(out)
        }
        _ => None,
    }
}

impl Phi3VImageProcessor {
    /// Reads `num_crops`, `image_mean` and `image_std` (class defaults: 1 crop, OpenAI CLIP
    /// mean/std) from a preprocessor config object; `path` names it in errors.
    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let d = Self::default();
        let bad = |key: &str| Error::config(path, format!("`{key}` is not valid"));
        let num_crops = match v.get("num_crops") {
            None | Some(Value::Null) => d.num_crops,
            Some(n) => n
                .as_u64()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad("num_crops"))? as usize,
        };
        Ok(Phi3VImageProcessor {
            num_crops,
            image_mean: triple(v.get("image_mean"), d.image_mean)
                .ok_or_else(|| bad("image_mean"))?,
            image_std: triple(v.get("image_std"), d.image_std).ok_or_else(|| bad("image_std"))?,
        })
    }

    /// Reads `preprocessor_config.json` of a model directory (class defaults when absent).
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(&path, format!("not valid JSON: {e}")))?;
        Self::from_json(&v, &path)
    }

    /// Crop slots per image (`num_crops + 1`).
    pub fn slots(&self) -> usize {
        self.num_crops + 1
    }

    /// The padded HD size `(height, width)` of an image of `width` x `height`.
    pub fn hd_size(&self, width: usize, height: usize) -> (usize, usize) {
        let (w, h, transposed) = if width < height {
            (height, width, true)
        } else {
            (width, height, false)
        };
        let (new_w, new_h) = self.resized(w, h);
        let padded_h = new_h.div_ceil(CROP) * CROP;
        if transposed {
            (new_w, padded_h)
        } else {
            (padded_h, new_w)
        }
    }

    /// Width and height after the HD resize of a landscape (`w >= h`) image.
    fn resized(&self, w: usize, h: usize) -> (usize, usize) {
        let ratio = w as f64 / h as f64;
        let mut scale = 1usize;
        while (scale as f64) * (scale as f64 / ratio).ceil() <= self.num_crops as f64 {
            scale += 1;
        }
        scale -= 1;
        let new_w = scale * CROP;
        // Python's `int(new_w / ratio)`: truncation of the float quotient.
        let new_h = (new_w as f64 / ratio) as usize;
        (new_w, new_h.max(1))
    }

    /// Image tokens the processor writes for an image whose HD size is `(h, w)`.
    pub fn num_img_tokens(size: (usize, usize)) -> usize {
        let (hc, wc) = (size.0 / CROP, size.1 / CROP);
        (hc * wc + 1) * 144 + 1 + (hc + 1) * 12
    }

    /// The HD transform (step 1 of the module docs).
    pub fn hd_transform(&self, img: &RgbImage) -> RgbImage {
        let transposed = img.width() < img.height();
        let landscape = if transposed {
            transpose(img)
        } else {
            img.clone()
        };
        let (w, h) = (landscape.width() as usize, landscape.height() as usize);
        let (new_w, new_h) = self.resized(w, h);
        let resized = resize(&landscape, new_w as u32, new_h as u32, Resample::Bilinear);
        let target = new_h.div_ceil(CROP) * CROP;
        let top = (target - new_h) / 2;
        let mut padded = RgbImage::from_pixel(new_w as u32, target as u32, Rgb([255, 255, 255]));
        ::image::imageops::replace(&mut padded, &resized, 0, top as i64);
        if transposed {
            transpose(&padded)
        } else {
            padded
        }
    }

    /// Steps 1-4 of the module docs for one image.
    pub fn process(&self, img: &RgbImage) -> Phi3VImage {
        let hd = self.hd_transform(img);
        let (w, h) = (hd.width() as usize, hd.height() as usize);
        let chw = self.normalize(&hd);
        let (hc, wc) = (h / CROP, w / CROP);
        let crop_len = 3 * CROP * CROP;
        let mut pixels = Vec::with_capacity(self.slots().max(hc * wc + 1) * crop_len);
        pixels.extend(bicubic_resize(&chw, 3, h, w, CROP, CROP));
        for i in 0..hc {
            for j in 0..wc {
                for c in 0..3 {
                    for y in 0..CROP {
                        let row = (c * h + i * CROP + y) * w + j * CROP;
                        pixels.extend_from_slice(&chw[row..row + CROP]);
                    }
                }
            }
        }
        let slots = self.slots().max(hc * wc + 1);
        pixels.resize(slots * crop_len, 0.0);
        Phi3VImage {
            pixels,
            size: (h, w),
            num_img_tokens: Self::num_img_tokens((h, w)),
        }
    }

    /// `ToTensor` then `Normalize`: `[3, H, W]` float32.
    fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * h * w + i] =
                    (p.0[c] as f32 / 255.0 - self.image_mean[c]) / self.image_std[c];
            }
        }
        out
    }
}

/// PIL's `Image.transpose(TRANSPOSE)`: pixel `(x, y)` becomes `(y, x)`.
fn transpose(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(h, w, |x, y| *img.get_pixel(y, x))
}

/// PyTorch's cubic convolution weights (`get_cubic_upsample_coefficients`, a = -0.75) for the
/// fractional offset `t`, in float32 as PyTorch computes them.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let x2 = 1.0 - t;
    [far(t + 1.0), near(t), near(x2), far(x2 + 1.0)]
}

/// Source taps (4 clamped indices) and weights for each output index, as PyTorch's
/// `HelperInterpCubic::compute_indices_weights` with `align_corners=False` and no scale given.
fn cubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let index = (real.floor() as i64).min(input as i64 - 1);
            let t = (real - index as f32).clamp(0.0, 1.0);
            let idx =
                std::array::from_fn(|j| (index - 1 + j as i64).clamp(0, input as i64 - 1) as usize);
            (idx, cubic_weights(t))
        })
        .collect()
}

/// `F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False)` of a
/// `[channels, h, w]` float32 image: per output, the weighted sum over the 4 source rows of the
/// weighted sums over 4 source columns, accumulated in float32 in PyTorch's order.
pub fn bicubic_resize(
    x: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let ys = cubic_taps(h, out_h);
    let xs = cubic_taps(w, out_w);
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for (yi, yw) in &ys {
            for (xi, xw) in &xs {
                let mut acc = 0f32;
                for k in 0..4 {
                    let row = &plane[yi[k] * w..];
                    let mut t = row[xi[0]] * xw[0];
                    for j in 1..4 {
                        t += row[xi[j]] * xw[j];
                    }
                    if k == 0 {
                        acc = t * yw[0];
                    } else {
                        acc += t * yw[k];
                    }
                }
                out.push(acc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hd_sizes_and_token_counts() {
        let p = Phi3VImageProcessor {
            num_crops: 4,
            ..Default::default()
        };
        // 700x500: scale 2 (2 * ceil(2 / 1.4) = 4 <= 4), 672x480 padded to 672x672.
        assert_eq!(p.hd_size(700, 500), (672, 672));
        assert_eq!(Phi3VImageProcessor::num_img_tokens((672, 672)), 757);
        // Portrait images are handled transposed.
        assert_eq!(p.hd_size(500, 700), (672, 672));
        let p16 = Phi3VImageProcessor {
            num_crops: 16,
            ..Default::default()
        };
        // 1000x300: ratio 3.33; scale 7 (7 * ceil(2.1) = 21 > 16), so 6: 2016 x 604 -> 672.
        assert_eq!(p16.hd_size(1000, 300), (672, 2016));
        assert_eq!(
            Phi3VImageProcessor::num_img_tokens((336, 336)),
            144 * 2 + 1 + 24
        );
    }

    #[test]
    fn bicubic_of_a_constant_is_constant_and_halving_uses_both_neighbours() {
        let x = vec![0.5f32; 2 * 8 * 8];
        let y = bicubic_resize(&x, 2, 8, 8, 4, 4);
        assert!(y.iter().all(|v| (v - 0.5).abs() < 1e-6));
        // Halving: t = 0.5, weights (-0.09375, 0.59375, 0.59375, -0.09375).
        assert_eq!(cubic_weights(0.5), [-0.09375, 0.59375, 0.59375, -0.09375]);
    }
}
