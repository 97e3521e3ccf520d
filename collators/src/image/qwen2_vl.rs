//! Qwen2-VL's image processor (`Qwen2VLImageProcessorPil`, `image_processing_pil_qwen2_vl.py`;
//! Qwen2.5-VL uses the same class): `smart_resize` to multiples of `patch_size * merge_size`
//! with the pixel count bounded by `min_pixels` / `max_pixels` (Pillow resize, bicubic by
//! default), rescale and normalize, then patchify into `[grid_h * grid_w, C * T * P * P]` rows
//! (merge blocks row-major, the patches of a block row-major, each patch's values channel,
//! temporal copy, row, column) and the grid `[1, grid_h, grid_w]`.
//!
//! Settings: `preprocessor_config.json` (hub: `min_pixels`, `max_pixels`, `patch_size`,
//! `temporal_patch_size`, `merge_size`) or the `image_processor` object of
//! `processor_config.json` (transformers 5: `size: {shortest_edge, longest_edge}`); the top-level
//! `min_pixels` / `max_pixels` win over `size`, as in HF's `__init__`.

use ::image::RgbImage;
use lmms_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

use super::base::{BaseImageProcessor, Defaults, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use super::config::{ImageProcessorConfig, PROCESSOR_CONFIG, Size};
use super::resample::resize;

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlImageProcessor {
    /// Resample filter and rescale/normalize settings (its `size` is unused).
    pub base: BaseImageProcessor,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
}

/// One processed image: its patch rows and grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlPatches {
    /// `[t * h * w, C * T * P * P]` row-major.
    pub data: Vec<f32>,
    /// `[t, h, w]` in patches.
    pub grid: [usize; 3],
}

/// HF's `smart_resize`: the (height, width) nearest to the input's that are multiples of
/// `factor` with `min_pixels <= h * w <= max_pixels`, keeping the aspect ratio. Python's
/// `round` (half to even) and float64 arithmetic, as HF.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 {
        return Err(Error::Unsupported(format!(
            "cannot preprocess an empty {width}x{height} image"
        )));
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(Error::Unsupported(format!(
            "absolute aspect ratio must be smaller than 200, got {}",
            h.max(w) / h.min(w)
        )));
    }
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    if hb * wb > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as usize, wb as usize))
}

fn read_raw(cfg: &ImageProcessorConfig) -> Result<Value> {
    let path = &cfg.source;
    if path.as_os_str().is_empty() {
        return Ok(Value::Null);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.clone(),
        source: e,
    })?;
    let in_processor = path.file_name().is_some_and(|n| n == PROCESSOR_CONFIG);
    Ok(match v.get("image_processor") {
        Some(inner) if in_processor => inner.clone(),
        _ => v,
    })
}

impl Qwen2VlImageProcessor {
    /// From a parsed config (the keys `ImageProcessorConfig` does not hold are read from its
    /// source file).
    pub fn from_config(cfg: &ImageProcessorConfig) -> Result<Self> {
        let raw = read_raw(cfg)?;
        Self::from_parts(cfg, &raw)
    }

    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(&ImageProcessorConfig::from_model_dir(dir)?)
    }

    fn from_parts(cfg: &ImageProcessorConfig, raw: &Value) -> Result<Self> {
        Self::from_parts_with(cfg, raw, (56 * 56, 28 * 28 * 1280))
    }

    /// `bounds`: the class's default (min_pixels, max_pixels) when the config has none (the
    /// video processor's differ from the image processor's).
    pub(crate) fn from_parts_with(
        cfg: &ImageProcessorConfig,
        raw: &Value,
        bounds: (usize, usize),
    ) -> Result<Self> {
        let defaults = Defaults {
            size: Size::HeightWidth {
                height: 1,
                width: 1,
            },
            crop_size: None,
            do_center_crop: false,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
        };
        // `size` here is `{shortest_edge: min_pixels, longest_edge: max_pixels}`, which the
        // shared size parser does not take: the pipeline only supplies resample + normalize.
        let mut plain = cfg.clone();
        plain.size = None;
        plain.do_center_crop = Some(false);
        let base = BaseImageProcessor::from_config(&plain, &defaults)?;
        let int = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let size = raw.get("size").cloned().unwrap_or(Value::Null);
        let p = Qwen2VlImageProcessor {
            base,
            min_pixels: int(raw, "min_pixels")
                .or_else(|| int(&size, "shortest_edge"))
                .or_else(|| int(&size, "min_pixels"))
                .unwrap_or(bounds.0),
            max_pixels: int(raw, "max_pixels")
                .or_else(|| int(&size, "longest_edge"))
                .or_else(|| int(&size, "max_pixels"))
                .unwrap_or(bounds.1),
            patch_size: int(raw, "patch_size").unwrap_or(14),
            temporal_patch_size: int(raw, "temporal_patch_size").unwrap_or(2),
            merge_size: int(raw, "merge_size").unwrap_or(2),
        };
        if p.patch_size == 0 || p.merge_size == 0 || p.temporal_patch_size == 0 {
            return Err(cfg.err("patch_size, temporal_patch_size and merge_size must be > 0"));
        }
        if p.min_pixels > p.max_pixels {
            return Err(cfg.err(format!(
                "min_pixels {} is above max_pixels {}",
                p.min_pixels, p.max_pixels
            )));
        }
        Ok(p)
    }

    /// Overrides the pixel bounds (`--min-pixels` / `--max-pixels`).
    pub fn with_pixels(mut self, min: Option<usize>, max: Option<usize>) -> Result<Self> {
        self.min_pixels = min.unwrap_or(self.min_pixels);
        self.max_pixels = max.unwrap_or(self.max_pixels);
        if self.min_pixels > self.max_pixels {
            return Err(Error::Unsupported(format!(
                "min_pixels {} is above max_pixels {}",
                self.min_pixels, self.max_pixels
            )));
        }
        Ok(self)
    }

    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// The (height, width) an image of that size is resized to.
    pub fn resized_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        if !self.base.do_resize {
            return Ok((height, width));
        }
        smart_resize(
            height,
            width,
            self.factor(),
            self.min_pixels,
            self.max_pixels,
        )
    }

    /// The patch grid `[1, h, w]` of an image of that size.
    pub fn grid(&self, height: usize, width: usize) -> Result<[usize; 3]> {
        let (h, w) = self.resized_size(height, width)?;
        Ok([1, h / self.patch_size, w / self.patch_size])
    }

    /// Placeholder tokens of an image of that size (`grid / merge^2`).
    pub fn num_tokens(&self, height: usize, width: usize) -> Result<usize> {
        let [t, h, w] = self.grid(height, width)?;
        Ok(t * h * w / (self.merge_size * self.merge_size))
    }

    /// Values per patch row: 3 x temporal x patch x patch.
    pub fn patch_values(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// One image -> its patch rows and grid.
    pub fn process(&self, img: &RgbImage) -> Result<Qwen2VlPatches> {
        let (w, h) = img.dimensions();
        let (nh, nw) = self.resized_size(h as usize, w as usize)?;
        let (p, m) = (self.patch_size, self.merge_size);
        if nh % (p * m) != 0 || nw % (p * m) != 0 {
            return Err(Error::Unsupported(format!(
                "a {w}x{h} image is {nw}x{nh} after resizing, not a multiple of {}",
                p * m
            )));
        }
        let resized;
        let img = if (nh, nw) == (h as usize, w as usize) {
            img
        } else {
            resized = resize(img, nw as u32, nh as u32, self.base.resample);
            &resized
        };
        let mut chw = Vec::with_capacity(3 * nh * nw);
        self.base.normalize.write_chw(img, &mut chw);
        Ok(Qwen2VlPatches {
            data: self.patchify(&[&chw], nh, nw),
            grid: [1, nh / p, nw / p],
        })
    }

    /// Patch rows of `frames` (each `[3, H, W]`, `temporal_patch_size` of them per temporal
    /// slice; an image is one frame repeated).
    pub fn patchify(&self, frames: &[&[f32]], height: usize, width: usize) -> Vec<f32> {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gh, gw) = (height / p, width / p);
        let slices = frames.len().div_ceil(tp).max(1);
        let mut out = Vec::with_capacity(slices * gh * gw * self.patch_values());
        for s in 0..slices {
            // The last slice repeats its last frame (an image: `tp` copies of itself).
            let frame = |k: usize| frames[(s * tp + k).min(frames.len() - 1)];
            for bi in 0..gh / m {
                for bj in 0..gw / m {
                    for ii in 0..m {
                        for jj in 0..m {
                            let (y0, x0) = ((bi * m + ii) * p, (bj * m + jj) * p);
                            for c in 0..3 {
                                for k in 0..tp {
                                    let f = frame(k);
                                    for y in y0..y0 + p {
                                        let row = (c * height + y) * width;
                                        out.extend_from_slice(&f[row + x0..row + x0 + p]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_python() {
        // Values from transformers' smart_resize.
        assert_eq!(
            smart_resize(40, 70, 28, 56 * 56, 28 * 28 * 1280).unwrap(),
            (56, 84)
        );
        assert_eq!(
            smart_resize(480, 640, 28, 3136, 200_704).unwrap(),
            (364, 504)
        );
        assert_eq!(smart_resize(17, 23, 8, 256, 4096).unwrap(), (16, 24));
        assert_eq!(smart_resize(10, 10, 8, 1024, 4096).unwrap(), (32, 32));
        assert!(smart_resize(1, 300, 8, 1, 1 << 20).is_err());
    }

    #[test]
    fn patch_rows_follow_hf_layout() {
        let p = Qwen2VlImageProcessor {
            base: BaseImageProcessor::from_config(
                &ImageProcessorConfig::default(),
                &Defaults {
                    size: Size::HeightWidth {
                        height: 1,
                        width: 1,
                    },
                    crop_size: None,
                    do_center_crop: false,
                    mean: OPENAI_CLIP_MEAN,
                    std: OPENAI_CLIP_STD,
                },
            )
            .unwrap(),
            min_pixels: 1,
            max_pixels: 1 << 20,
            patch_size: 1,
            temporal_patch_size: 2,
            merge_size: 2,
        };
        // 3 channels of 2x4: value = c * 100 + y * 10 + x
        let img: Vec<f32> = (0..3)
            .flat_map(|c| {
                (0..2).flat_map(move |y| (0..4).map(move |x| (c * 100 + y * 10 + x) as f32))
            })
            .collect();
        let rows = p.patchify(&[&img], 2, 4);
        // 8 patches of 3 x 2 values; patch 2 is (row 1, col 0) of block 0.
        assert_eq!(rows.len(), 8 * 6);
        assert_eq!(&rows[12..18], &[10.0, 10.0, 110.0, 110.0, 210.0, 210.0]);
        assert_eq!(&rows[24..30], &[2.0, 2.0, 102.0, 102.0, 202.0, 202.0]);
    }
}
