//! Llama-3.2-Vision's image processor (`MllamaImageProcessorPil`, transformers'
//! `models/mllama/image_processing_pil_mllama.py`): each image is fitted to the best canvas of
//! `max_image_tiles` square tiles (`get_optimal_tiled_canvas`: the smallest upscale, else the
//! least downscale, ties to the smaller area), resized keeping its aspect ratio
//! (`get_image_size_fit_to_canvas`, Pillow, bilinear by default), zero-padded on the bottom and
//! right to the canvas (before rescale/normalize, so padding becomes `-mean / std`),
//! normalized, and split into tiles row-major. The arrangement gives the aspect-ratio id (1 + its
//! index in `get_all_supported_aspect_ratios`; 0 is an empty image slot) and the tile mask.
//!
//! Settings: `preprocessor_config.json` or the `image_processor` object of
//! `processor_config.json`: `size` `{height, width}` (square), `max_image_tiles`, `resample`,
//! rescale / normalize keys. HF refuses `do_resize` or `do_pad` false, and so does this.

use ::image::RgbImage;
use lmms_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

use super::base::{BaseImageProcessor, Defaults, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD};
use super::config::{ImageProcessorConfig, PROCESSOR_CONFIG, Size};
use super::resample::{Resample, resize};
use super::transforms::paste;

#[derive(Debug, Clone, PartialEq)]
pub struct MllamaImageProcessor {
    /// Resample filter and rescale/normalize settings.
    pub base: BaseImageProcessor,
    /// The side of a square tile.
    pub tile_size: usize,
    pub max_image_tiles: usize,
}

/// One processed image.
#[derive(Debug, Clone, PartialEq)]
pub struct MllamaImage {
    /// `[tiles, 3, tile, tile]` row-major, tiles row-major over the canvas.
    pub data: Vec<f32>,
    /// Tiles down and across the canvas.
    pub tiles_hw: (usize, usize),
}

impl MllamaImage {
    pub fn num_tiles(&self) -> usize {
        self.tiles_hw.0 * self.tiles_hw.1
    }
}

/// HF's `get_all_supported_aspect_ratios`: every `(a, b)` with `a * b <= max_image_tiles`, `a`
/// the outer loop. HF documents them as (width, height) but uses them as (height, width).
pub fn supported_aspect_ratios(max_image_tiles: usize) -> Vec<(usize, usize)> {
    let m = max_image_tiles;
    (1..=m)
        .flat_map(|a| (1..=m).filter(move |b| a * b <= m).map(move |b| (a, b)))
        .collect()
}

/// HF's `get_optimal_tiled_canvas`: the (height, width) canvas of whole tiles that needs the
/// smallest upscale of the image (or, when every canvas is smaller, the least downscale), the
/// smaller area on ties. Float64 arithmetic, as numpy.
pub fn optimal_canvas(
    height: usize,
    width: usize,
    max_image_tiles: usize,
    tile: usize,
) -> (usize, usize) {
    let canvases: Vec<(usize, usize)> = supported_aspect_ratios(max_image_tiles)
        .into_iter()
        .map(|(a, b)| (a * tile, b * tile))
        .collect();
    let scales: Vec<f64> = canvases
        .iter()
        .map(|&(ch, cw)| {
            let (sh, sw) = (ch as f64 / height as f64, cw as f64 / width as f64);
            if sw > sh { sh } else { sw }
        })
        .collect();
    let up = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .reduce(f64::min);
    let selected = up.unwrap_or_else(|| {
        scales
            .iter()
            .copied()
            .filter(|&s| s < 1.0)
            .fold(f64::NEG_INFINITY, f64::max)
    });
    // The first of the smallest area among the canvases of the selected scale (np.argmin).
    canvases
        .iter()
        .zip(&scales)
        .filter(|(_, s)| **s == selected)
        .map(|(c, _)| *c)
        .reduce(|best, c| if c.0 * c.1 < best.0 * best.1 { c } else { best })
        .expect("at least one canvas has the selected scale")
}

/// HF's `get_image_size_fit_to_canvas`: the (height, width) the image is resized to, its
/// aspect ratio kept, clipped into `[tile, canvas]` per side (at least 1 pixel).
pub fn fit_to_canvas(
    height: usize,
    width: usize,
    canvas: (usize, usize),
    tile: usize,
) -> (usize, usize) {
    let target_w = width.clamp(tile, canvas.1);
    let target_h = height.clamp(tile, canvas.0);
    let scale_h = target_h as f64 / height as f64;
    let scale_w = target_w as f64 / width as f64;
    if scale_w < scale_h {
        let h = ((height as f64 * scale_w).floor() as usize).max(1);
        (h.min(target_h), target_w)
    } else {
        let w = ((width as f64 * scale_h).floor() as usize).max(1);
        (target_h, w.min(target_w))
    }
}

/// The image processor's own JSON object (the keys `ImageProcessorConfig` does not hold).
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

impl MllamaImageProcessor {
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(&ImageProcessorConfig::from_model_dir(dir)?)
    }

    /// From a parsed config; `max_image_tiles` is read from its source file.
    pub fn from_config(cfg: &ImageProcessorConfig) -> Result<Self> {
        let raw = read_raw(cfg)?;
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
        let mut plain = cfg.clone();
        plain.do_center_crop = Some(false);
        plain.resample = Some(cfg.resample.unwrap_or(Resample::Bilinear as i64));
        let base = BaseImageProcessor::from_config(&plain, &defaults)?;
        if !base.do_resize || cfg.do_pad == Some(false) {
            return Err(
                cfg.err("MllamaImageProcessor supports neither `do_resize` nor `do_pad` false")
            );
        }
        let tile_size = match base.size {
            Size::HeightWidth { height, width } if height == width => height,
            other => {
                return Err(cfg.err(format!(
                    "`size` must be a square {{\"height\", \"width\"}}, got {other:?}"
                )));
            }
        };
        let max_image_tiles = match raw.get("max_image_tiles") {
            None | Some(Value::Null) => 4,
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| cfg.err(format!("`max_image_tiles` must be > 0, got {v}")))?
                as usize,
        };
        Ok(MllamaImageProcessor {
            base,
            tile_size,
            max_image_tiles,
        })
    }

    /// The aspect-ratio id of a `(tiles down, tiles across)` arrangement (1-based).
    pub fn aspect_ratio_id(&self, tiles_hw: (usize, usize)) -> i64 {
        supported_aspect_ratios(self.max_image_tiles)
            .iter()
            .position(|&r| r == tiles_hw)
            .map_or(0, |i| i as i64 + 1)
    }

    /// Resize onto the best tile canvas, pad, normalize, split into tiles.
    pub fn process(&self, img: &RgbImage) -> Result<MllamaImage> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(Error::Unsupported(format!(
                "cannot preprocess an empty {w}x{h} image"
            )));
        }
        let t = self.tile_size;
        let canvas = optimal_canvas(h, w, self.max_image_tiles, t);
        let (nh, nw) = fit_to_canvas(h, w, canvas, t);
        let resized = resize(img, nw as u32, nh as u32, self.base.resample);
        let padded = paste(&resized, canvas.0, canvas.1, 0, 0, [0, 0, 0]);
        let mut chw = Vec::with_capacity(3 * canvas.0 * canvas.1);
        self.base.normalize.write_chw(&padded, &mut chw);
        let tiles_hw = (canvas.0 / t, canvas.1 / t);
        // [C, th, t, tw, t] -> [th, tw, C, t, t]
        let mut data = Vec::with_capacity(chw.len());
        for ty in 0..tiles_hw.0 {
            for tx in 0..tiles_hw.1 {
                for c in 0..3 {
                    let plane = &chw[c * canvas.0 * canvas.1..(c + 1) * canvas.0 * canvas.1];
                    for y in 0..t {
                        let row = (ty * t + y) * canvas.1 + tx * t;
                        data.extend_from_slice(&plane[row..row + t]);
                    }
                }
            }
        }
        Ok(MllamaImage { data, tiles_hw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_follow_hf_order() {
        assert_eq!(
            supported_aspect_ratios(4),
            vec![
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (2, 1),
                (2, 2),
                (3, 1),
                (4, 1)
            ]
        );
        assert_eq!(supported_aspect_ratios(2), vec![(1, 1), (1, 2), (2, 1)]);
    }

    /// Values computed with transformers 5.23's `get_optimal_tiled_canvas` and
    /// `get_image_size_fit_to_canvas`.
    #[test]
    fn canvas_and_fit_match_hf() {
        let cases = [
            // (h, w, max tiles, tile) -> canvas, resized
            ((480, 640, 4, 560), (560, 1120), (480, 640)),
            ((2000, 2000, 4, 560), (1120, 1120), (1120, 1120)),
            ((30, 50, 2, 28), (28, 56), (28, 46)),
            ((26, 20, 2, 28), (28, 28), (28, 21)),
            ((40, 24, 2, 28), (56, 28), (40, 24)),
            ((1, 1000, 4, 560), (560, 1120), (1, 1000)),
            ((100, 7, 2, 28), (56, 28), (56, 3)),
            ((3000, 10, 4, 560), (2240, 560), (2240, 7)),
            ((56, 56, 2, 28), (28, 28), (28, 28)),
        ];
        for ((h, w, m, t), canvas, resized) in cases {
            assert_eq!(optimal_canvas(h, w, m, t), canvas, "{h}x{w}");
            assert_eq!(fit_to_canvas(h, w, canvas, t), resized, "{h}x{w}");
        }
    }
}
