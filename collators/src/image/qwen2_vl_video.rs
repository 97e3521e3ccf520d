//! Qwen2-VL's video processor (`Qwen2VLVideoProcessor`, `video_processing_qwen2_vl.py`;
//! Qwen2.5-VL uses the same class): which frames are sampled (`sample_frames`, with
//! `num_frames` or `fps`), `smart_resize` of the frame size within the *video* pixel bounds
//! (class defaults `128 * 28 * 28` / `28 * 28 * 768`, not the image ones), rescale and
//! normalize, then the frames padded with copies of the last one to a multiple of
//! `temporal_patch_size` and patchified into `[grid_t * grid_h * grid_w, C * T * P * P]` rows.
//!
//! Settings, as transformers' loader finds them: `video_preprocessor_config.json`, else the
//! `video_processor` object of `processor_config.json`, else `preprocessor_config.json` (the
//! image processor's file, which older hub checkpoints share between both). `min_pixels` /
//! `max_pixels` win over `size: {shortest_edge, longest_edge}`, as in HF's `__init__`.
//!
//! Pixels: HF runs this on torchvision tensors (antialiased bicubic); here every frame goes
//! through the Pillow-exact pipeline of [`Qwen2VlImageProcessor`] (what the PIL image processor
//! does to an image of the same size), as the LLaVA video processors of [`crate::video`] do.
//! `cap_pixels_per_frame` (off by default in transformers 5.23) is not applied.

/// The frame type [`Qwen2VlVideoProcessor::process`] takes (re-exported for callers without
/// the `image` crate).
pub use ::image::RgbImage;
use lmms_core::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

use super::config::{ImageProcessorConfig, PREPROCESSOR_CONFIG, PROCESSOR_CONFIG};
use super::qwen2_vl::{Qwen2VlImageProcessor, Qwen2VlPatches};
use super::resample::resize;
use crate::video::VIDEO_PREPROCESSOR_CONFIG;

/// The class defaults of `Qwen2VLVideoProcessor.size`.
pub const VIDEO_MIN_PIXELS: usize = 128 * 28 * 28;
pub const VIDEO_MAX_PIXELS: usize = 28 * 28 * 768;

/// How many frames a video contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameSampling {
    /// `num_frames`, rounded (half to even) to a multiple of `temporal_patch_size`.
    NumFrames(usize),
    /// `fps` frames per second of the clip, within `[min_frames, max_frames]` and the clip's
    /// frame count, rounded down to a multiple of `temporal_patch_size`.
    Fps(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlVideoProcessor {
    /// The per-frame pipeline, with the video pixel bounds.
    pub frames: Qwen2VlImageProcessor,
    pub min_frames: usize,
    pub max_frames: usize,
    /// The file the settings came from.
    pub source: PathBuf,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

impl Qwen2VlVideoProcessor {
    /// The video processor of a model directory (see the module docs for the files tried).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let video = dir.join(VIDEO_PREPROCESSOR_CONFIG);
        let processor = dir.join(PROCESSOR_CONFIG);
        let pre = dir.join(PREPROCESSOR_CONFIG);
        let (raw, source) = if video.is_file() {
            (read_json(&video)?, video)
        } else if let Some(inner) = processor
            .is_file()
            .then(|| read_json(&processor))
            .transpose()?
            .and_then(|mut v| v.get_mut("video_processor").map(Value::take))
        {
            (inner, processor)
        } else if pre.is_file() {
            (read_json(&pre)?, pre)
        } else {
            return Err(Error::config(
                dir,
                format!(
                    "no video processor config: none of {VIDEO_PREPROCESSOR_CONFIG}, a \
                     `video_processor` object in {PROCESSOR_CONFIG}, {PREPROCESSOR_CONFIG}"
                ),
            ));
        };
        Self::from_value(raw, &source)
    }

    /// From a config object; `source` names it in errors.
    pub fn from_value(raw: Value, source: &Path) -> Result<Self> {
        let cfg = ImageProcessorConfig::from_json_str(&raw.to_string(), source)?;
        let frames = Qwen2VlImageProcessor::from_parts_with(
            &cfg,
            &raw,
            (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS),
        )?;
        let int = |k: &str| raw.get(k).and_then(Value::as_u64).map(|x| x as usize);
        Ok(Qwen2VlVideoProcessor {
            frames,
            min_frames: int("min_frames").unwrap_or(4),
            max_frames: int("max_frames").unwrap_or(768),
            source: source.to_path_buf(),
        })
    }

    /// Overrides the video pixel bounds (`--video-min-pixels` / `--video-max-pixels`).
    pub fn with_pixels(mut self, min: Option<usize>, max: Option<usize>) -> Result<Self> {
        self.frames = self.frames.with_pixels(min, max)?;
        Ok(self)
    }

    /// HF's `sample_frames`: the indices of the frames kept from a clip of `total` frames at
    /// `fps` frames per second. `torch.arange(0, total, total / n).int()`: the steps are
    /// accumulated in float64, stored as float32 and truncated, as torch does.
    pub fn sample_indices(
        &self,
        total: usize,
        fps: Option<f64>,
        sampling: FrameSampling,
    ) -> std::result::Result<Vec<usize>, String> {
        let tp = self.frames.temporal_patch_size;
        let n = match sampling {
            FrameSampling::NumFrames(n) => ((n as f64) / tp as f64).round_ties_even() as usize * tp,
            FrameSampling::Fps(want) => {
                let fps = fps.filter(|f| *f > 0.0).ok_or(
                    "has no frame rate: sample a fixed num_frames instead of fps".to_string(),
                )?;
                let max_frames = (self.max_frames.min(total) / tp * tp) as f64;
                let n = total as f64 / fps * want;
                let n = n
                    .max(self.min_frames as f64)
                    .min(max_frames)
                    .min(total as f64);
                (n / tp as f64).floor() as usize * tp
            }
        };
        if n == 0 {
            return Err(format!(
                "0 frames would be sampled (temporal_patch_size {tp}): ask for more frames"
            ));
        }
        if n > total {
            return Err(format!(
                "has {total} frames, fewer than the {n} asked (num_frames rounded to a \
                 multiple of temporal_patch_size {tp})"
            ));
        }
        let step = total as f64 / n as f64;
        let len = (total as f64 / step).ceil() as usize;
        Ok((0..len)
            .map(|i| ((i as f64 * step) as f32) as usize)
            .collect())
    }

    /// The patch grid `[t, h, w]` of `frames` frames of that size (`t` counts the padding).
    pub fn grid(&self, frames: usize, height: usize, width: usize) -> Result<[usize; 3]> {
        let [_, h, w] = self.frames.grid(height, width)?;
        Ok([frames.div_ceil(self.frames.temporal_patch_size), h, w])
    }

    /// Placeholder tokens of `frames` frames of that size.
    pub fn num_tokens(&self, frames: usize, height: usize, width: usize) -> Result<usize> {
        let [t, h, w] = self.grid(frames, height, width)?;
        let m = self.frames.merge_size;
        Ok(t * h * w / (m * m))
    }

    /// Seconds per temporal patch (Qwen2.5-VL's `second_per_grid_ts`):
    /// `temporal_patch_size / sampled_fps`, `sampled_fps = kept / total * fps` (24 without a
    /// frame rate, as HF's `VideoMetadata`).
    pub fn second_per_grid(&self, kept: usize, total: usize, fps: Option<f64>) -> f64 {
        let sampled = match fps {
            Some(f) if total > 0 => kept as f64 / total as f64 * f,
            Some(f) => f,
            None => 24.0,
        };
        self.frames.temporal_patch_size as f64 / sampled
    }

    /// The frames of one video (all the same size) -> patch rows and grid.
    pub fn process(&self, frames: &[RgbImage]) -> Result<Qwen2VlPatches> {
        let Some(first) = frames.first() else {
            return Err(Error::Unsupported("a video with no frames".into()));
        };
        let (w, h) = first.dimensions();
        if frames.iter().any(|f| f.dimensions() != (w, h)) {
            return Err(Error::Unsupported(
                "the frames of a video differ in size".into(),
            ));
        }
        let (nh, nw) = self.frames.resized_size(h as usize, w as usize)?;
        let p = &self.frames;
        if nh % p.factor() != 0 || nw % p.factor() != 0 {
            return Err(Error::Unsupported(format!(
                "a {w}x{h} video is {nw}x{nh} after resizing, not a multiple of {}",
                p.factor()
            )));
        }
        let chw: Vec<Vec<f32>> = frames
            .iter()
            .map(|f| {
                let resized;
                let img = if (nh, nw) == (h as usize, w as usize) {
                    f
                } else {
                    resized = resize(f, nw as u32, nh as u32, p.base.resample);
                    &resized
                };
                let mut v = Vec::with_capacity(3 * nh * nw);
                p.base.normalize.write_chw(img, &mut v);
                v
            })
            .collect();
        let refs: Vec<&[f32]> = chw.iter().map(Vec::as_slice).collect();
        Ok(Qwen2VlPatches {
            data: p.patchify(&refs, nh, nw),
            grid: self
                .grid(frames.len(), nh, nw)
                .map(|[t, _, _]| [t, nh / p.patch_size, nw / p.patch_size])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn processor(extra: Value) -> Qwen2VlVideoProcessor {
        let mut v = json!({"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Qwen2VlVideoProcessor::from_value(v, Path::new("video_preprocessor_config.json")).unwrap()
    }

    #[test]
    fn bounds_default_to_the_video_class() {
        let p = processor(json!({}));
        assert_eq!(
            (p.frames.min_pixels, p.frames.max_pixels),
            (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
        );
        let p =
            processor(json!({"size": {"shortest_edge": 10, "longest_edge": 20}, "max_pixels": 30}));
        assert_eq!((p.frames.min_pixels, p.frames.max_pixels), (10, 30));
    }

    #[test]
    fn sampling_matches_hf_sample_frames() {
        let p = processor(json!({}));
        // torch.arange(0, 48, 48 / 8).int()
        assert_eq!(
            p.sample_indices(48, Some(24.0), FrameSampling::NumFrames(8))
                .unwrap(),
            [0, 6, 12, 18, 24, 30, 36, 42]
        );
        // round(5 / 2) * 2 = 4; arange(0, 36, 9)
        assert_eq!(
            p.sample_indices(36, Some(24.0), FrameSampling::NumFrames(5))
                .unwrap(),
            [0, 9, 18, 27]
        );
        // fps 2 of a 1.5 s clip: 3 -> max(3, min_frames 4) -> 4
        assert_eq!(
            p.sample_indices(36, Some(24.0), FrameSampling::Fps(2.0))
                .unwrap(),
            [0, 9, 18, 27]
        );
        // arange(0, 7, 7 / 6): 0, 1.1667, 2.333, 3.5, 4.667, 5.833
        assert_eq!(
            p.sample_indices(7, None, FrameSampling::NumFrames(6))
                .unwrap(),
            [0, 1, 2, 3, 4, 5]
        );
        assert!(
            p.sample_indices(3, None, FrameSampling::NumFrames(4))
                .is_err()
        );
        assert!(p.sample_indices(3, None, FrameSampling::Fps(1.0)).is_err());
        assert!(
            p.sample_indices(30, None, FrameSampling::NumFrames(0))
                .is_err()
        );
    }

    #[test]
    fn odd_frame_counts_pad_the_last_slice() {
        let p = processor(json!({"min_pixels": 64, "max_pixels": 4096}));
        let frames: Vec<RgbImage> = (0..3)
            .map(|i| RgbImage::from_pixel(16, 8, ::image::Rgb([i * 50, 0, 0])))
            .collect();
        let out = p.process(&frames).unwrap();
        assert_eq!(out.grid, [2, 2, 4]);
        assert_eq!(out.data.len(), 2 * 2 * 4 * p.frames.patch_values());
        assert_eq!(p.num_tokens(3, 8, 16).unwrap(), 4);
    }
}
