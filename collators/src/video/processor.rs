//! The LLaVA video processors: `LlavaNextVideoVideoProcessor` and
//! `LlavaOnevisionVideoProcessor` of transformers 5 (`video_processing_llava_*.py`), which run
//! the CLIP / SigLIP image pipeline on every frame.

use ::image::RgbImage;
use lmms_core::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::image::{
    BaseImageProcessor, ImageProcessorConfig, Normalize, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
    PREPROCESSOR_CONFIG, PROCESSOR_CONFIG, PixelBatch, Resample, Size,
};

/// The hub file of a video processor.
pub const VIDEO_PREPROCESSOR_CONFIG: &str = "video_preprocessor_config.json";

/// Which HF video processor (its class defaults differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoProcessorKind {
    /// `LlavaNextVideoVideoProcessor`: shortest edge 224, center crop 224x224, bicubic, OpenAI
    /// CLIP mean/std (a CLIP image processor per frame). transformers 4's
    /// `LlavaNextVideoImageProcessor` had the same defaults.
    LlavaNextVideo,
    /// `LlavaOnevisionVideoProcessor`: 384x384 (aspect ratio not kept), no crop, bicubic,
    /// OpenAI CLIP mean/std by default (the hub configs set 0.5: a SigLIP image processor per
    /// frame).
    LlavaOnevision,
}

impl VideoProcessorKind {
    pub fn class_name(self) -> &'static str {
        match self {
            VideoProcessorKind::LlavaNextVideo => "LlavaNextVideoVideoProcessor",
            VideoProcessorKind::LlavaOnevision => "LlavaOnevisionVideoProcessor",
        }
    }

    /// The kind a `video_processor_type` names (`Fast` / `Pil` suffixes ignored).
    pub fn from_class_name(name: &str) -> Option<Self> {
        let name = name.strip_suffix("Fast").unwrap_or(name);
        let name = name.strip_suffix("Pil").unwrap_or(name);
        match name {
            "LlavaNextVideoVideoProcessor" | "LlavaNextVideoImageProcessor" => {
                Some(VideoProcessorKind::LlavaNextVideo)
            }
            "LlavaOnevisionVideoProcessor" => Some(VideoProcessorKind::LlavaOnevision),
            _ => None,
        }
    }

    fn defaults(self) -> (Size, Option<(usize, usize)>, bool) {
        match self {
            VideoProcessorKind::LlavaNextVideo => (Size::ShortestEdge(224), Some((224, 224)), true),
            VideoProcessorKind::LlavaOnevision => (
                Size::HeightWidth {
                    height: 384,
                    width: 384,
                },
                None,
                false,
            ),
        }
    }
}

/// A video processor: the per-frame pipeline (resize, crop, rescale, normalize) of
/// [`BaseImageProcessor`] with the video class's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoProcessor {
    pub kind: VideoProcessorKind,
    pub base: BaseImageProcessor,
    /// The file the settings came from.
    pub source: PathBuf,
}

impl VideoProcessor {
    /// From the keys of a video (or image) processor config; absent keys take `kind`'s
    /// defaults.
    pub fn from_config(cfg: &ImageProcessorConfig, kind: VideoProcessorKind) -> Result<Self> {
        let (size, crop, center) = kind.defaults();
        let rescale_factor = cfg.rescale_factor.unwrap_or(1.0 / 255.0);
        if !rescale_factor.is_finite() {
            return Err(Error::config(
                &cfg.source,
                format!("`rescale_factor` must be finite, got {rescale_factor}"),
            ));
        }
        let base = BaseImageProcessor {
            do_resize: cfg.do_resize.unwrap_or(true),
            size: cfg.resolve_size(size)?,
            resample: cfg.resolve_resample(Resample::Bicubic)?,
            do_center_crop: cfg.do_center_crop.unwrap_or(center),
            crop_size: cfg.resolve_crop(crop)?,
            normalize: Normalize {
                do_rescale: cfg.do_rescale.unwrap_or(true),
                rescale_factor,
                do_normalize: cfg.do_normalize.unwrap_or(true),
                mean: cfg.resolve_channels("image_mean", OPENAI_CLIP_MEAN)?,
                std: cfg.resolve_channels("image_std", OPENAI_CLIP_STD)?,
            },
            do_convert_rgb: cfg.do_convert_rgb.unwrap_or(true),
        };
        if base.do_center_crop && base.crop_size.is_none() {
            return Err(Error::config(
                &cfg.source,
                "`do_center_crop` is true but there is no `crop_size`",
            ));
        }
        Ok(VideoProcessor {
            kind,
            base,
            source: cfg.source.clone(),
        })
    }

    /// From a JSON object: `video_processor_type` picks the kind (else `default_kind`).
    fn from_value(value: Value, source: &Path, default_kind: VideoProcessorKind) -> Result<Self> {
        let kind = match value.get("video_processor_type").and_then(Value::as_str) {
            None => default_kind,
            Some(name) => VideoProcessorKind::from_class_name(name).ok_or_else(|| {
                Error::config(
                    source,
                    format!(
                        "video processor `{name}` is not supported (supported: \
                         LlavaNextVideoVideoProcessor, LlavaOnevisionVideoProcessor)"
                    ),
                )
            })?,
        };
        let cfg = ImageProcessorConfig::from_json_str(&value.to_string(), source)?;
        Self::from_config(&cfg, kind)
    }

    /// Parses a video processor config from its JSON text; `source` names it in errors.
    pub fn from_json_str(
        text: &str,
        source: impl Into<PathBuf>,
        default_kind: VideoProcessorKind,
    ) -> Result<Self> {
        let source = source.into();
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: source.clone(),
            source: e,
        })?;
        if !value.is_object() {
            return Err(Error::config(
                &source,
                "a video processor config must be a JSON object",
            ));
        }
        Self::from_value(value, &source, default_kind)
    }

    /// The video processor of a model directory, found as transformers'
    /// `get_video_processor_dict` finds it: the `video_processor` object of
    /// `processor_config.json` (transformers 5), else `video_preprocessor_config.json` (hub),
    /// else `preprocessor_config.json` (the image processor's settings read as the video
    /// processor's, as HF does for older repos). Last, where HF would fail, the
    /// `image_processor` object of `processor_config.json`. The kind is the file's
    /// `video_processor_type`, else `default_kind` (the model's).
    pub fn from_model_dir(dir: impl AsRef<Path>, default_kind: VideoProcessorKind) -> Result<Self> {
        let dir = dir.as_ref();
        let processor = dir.join(PROCESSOR_CONFIG);
        let nested = if processor.is_file() {
            let v = read_json(&processor)?;
            match v {
                Value::Object(mut o) => (
                    o.remove("video_processor").filter(|v| !v.is_null()),
                    o.remove("image_processor").filter(|v| !v.is_null()),
                ),
                _ => (None, None),
            }
        } else {
            (None, None)
        };
        if let (Some(v), _) = &nested {
            return Self::from_value(v.clone(), &processor, default_kind);
        }
        for name in [VIDEO_PREPROCESSOR_CONFIG, PREPROCESSOR_CONFIG] {
            let path = dir.join(name);
            if path.is_file() {
                let v = read_json(&path)?;
                if !v.is_object() {
                    return Err(Error::config(&path, "must be a JSON object"));
                }
                return Self::from_value(v, &path, default_kind);
            }
        }
        if let (_, Some(v)) = nested {
            return Self::from_value(v, &processor, default_kind);
        }
        Err(Error::config(
            dir,
            format!(
                "no video processor config: none of {VIDEO_PREPROCESSOR_CONFIG}, \
                 {PREPROCESSOR_CONFIG}, or a `video_processor` object in {PROCESSOR_CONFIG}"
            ),
        ))
    }

    /// The (height, width) of a processed frame of a video of that size.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        self.base.output_size(height, width)
    }

    /// One video's frames -> `[F, 3, H, W]` (one row of `pixel_values_videos`).
    pub fn preprocess(&self, frames: &[RgbImage]) -> Result<PixelBatch> {
        self.base.preprocess(frames)
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_defaults() {
        let next = VideoProcessor::from_json_str(
            r#"{"video_processor_type": "LlavaNextVideoVideoProcessor"}"#,
            "x.json",
            VideoProcessorKind::LlavaOnevision,
        )
        .unwrap();
        assert_eq!(next.kind, VideoProcessorKind::LlavaNextVideo);
        assert_eq!(next.base.size, Size::ShortestEdge(224));
        assert_eq!(next.base.crop_size, Some((224, 224)));
        assert!(next.base.do_center_crop);
        assert_eq!(next.output_size(480, 640), (224, 224));

        let ov = VideoProcessor::from_json_str("{}", "x.json", VideoProcessorKind::LlavaOnevision)
            .unwrap();
        assert_eq!(ov.output_size(480, 640), (384, 384));
        assert_eq!(ov.base.normalize.mean, OPENAI_CLIP_MEAN);
        assert_eq!(ov.base.resample, Resample::Bicubic);

        let e = VideoProcessor::from_json_str(
            r#"{"video_processor_type": "Qwen2VLVideoProcessor"}"#,
            "x.json",
            VideoProcessorKind::LlavaOnevision,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.json") && e.contains("Qwen2VLVideoProcessor"),
            "{e}"
        );
    }
}
