//! Image-processor settings as Hugging Face saves them, read the way
//! `transformers/image_processing_base.py` (`get_image_processor_dict`) finds them: the
//! `image_processor` object of `processor_config.json` (transformers 5) wins over
//! `preprocessor_config.json` (hub style). Sizes may be written as dicts, ints or `[h, w]` lists,
//! converted as `get_size_dict` of `transformers/image_processing_utils.py` does. Field names are
//! HF's keys; absent keys take the processor class's defaults (see each processor).

use lmms_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

use super::resample::Resample;

/// The hub-style image processor file.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";
/// The transformers 5 processor file (with a nested `image_processor` object).
pub const PROCESSOR_CONFIG: &str = "processor_config.json";

/// A `size` / `crop_size` value as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Int(usize),
    List(Vec<usize>),
    Dict(SizeDict),
}

/// HF's size dict; only the keys used by the LLaVA processors are accepted.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SizeDict {
    pub shortest_edge: Option<usize>,
    pub longest_edge: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
}

/// A number or one number per channel (`image_mean`, `image_std`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Channels {
    One(f64),
    Each(Vec<f64>),
}

/// The keys of an HF image-processor config (all optional: absent = the class default).
/// Unknown keys are ignored, as HF ignores those it does not use.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ImageProcessorConfig {
    pub image_processor_type: Option<String>,
    /// Older hub files name the class here (`CLIPFeatureExtractor`).
    pub feature_extractor_type: Option<String>,
    pub processor_class: Option<String>,
    pub do_resize: Option<bool>,
    pub size: Option<SizeValue>,
    pub resample: Option<i64>,
    pub do_center_crop: Option<bool>,
    pub crop_size: Option<SizeValue>,
    pub do_rescale: Option<bool>,
    pub rescale_factor: Option<f64>,
    pub do_normalize: Option<bool>,
    pub image_mean: Option<Channels>,
    pub image_std: Option<Channels>,
    pub do_convert_rgb: Option<bool>,
    pub image_grid_pinpoints: Option<Vec<Vec<usize>>>,
    pub do_pad: Option<bool>,
    /// The file this came from (for error messages); empty when parsed from a string.
    #[serde(skip)]
    pub source: PathBuf,
}

/// The processor-level keys of `processor_config.json` that decide image token counts.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ProcessorConfig {
    pub processor_class: Option<String>,
    pub patch_size: Option<usize>,
    pub vision_feature_select_strategy: Option<String>,
    pub num_additional_image_tokens: Option<usize>,
    /// LLaVA-OneVision: tokens of one tile (e.g. 729 = 27x27).
    pub num_image_tokens: Option<usize>,
    /// LLaVA-OneVision: `anyres_max_N`.
    pub vision_aspect_ratio: Option<String>,
    pub image_processor: Option<ImageProcessorConfig>,
    #[serde(skip)]
    pub source: PathBuf,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

impl ImageProcessorConfig {
    /// Parses a config from its JSON text; `source` names it in errors.
    pub fn from_json_str(text: &str, source: impl Into<PathBuf>) -> Result<Self> {
        let source = source.into();
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: source.clone(),
            source: e,
        })?;
        Self::from_value(value, &source)
    }

    fn from_value(value: Value, source: &Path) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::config(
                source,
                "an image processor config must be a JSON object",
            ));
        }
        let mut cfg: Self = serde_json::from_value(value)
            .map_err(|e| Error::config(source, format!("invalid image processor config: {e}")))?;
        cfg.source = source.to_path_buf();
        Ok(cfg)
    }

    /// Reads one file: a `preprocessor_config.json`, or a `processor_config.json` whose
    /// `image_processor` object is taken.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut value = read_json(path)?;
        if let Some(inner) = value.get_mut("image_processor") {
            let inner = inner.take();
            return Self::from_value(inner, path);
        }
        if path.file_name().is_some_and(|n| n == PROCESSOR_CONFIG) {
            return Err(Error::config(path, "has no `image_processor` object"));
        }
        Self::from_value(value, path)
    }

    /// Reads a model directory as transformers does: `processor_config.json`'s `image_processor`
    /// object if there is one, else `preprocessor_config.json`.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let processor = dir.join(PROCESSOR_CONFIG);
        if processor.is_file() {
            let mut value = read_json(&processor)?;
            if let Some(inner) = value.get_mut("image_processor") {
                let inner = inner.take();
                return Self::from_value(inner, &processor);
            }
        }
        let pre = dir.join(PREPROCESSOR_CONFIG);
        if pre.is_file() {
            return Self::from_file(pre);
        }
        Err(Error::config(
            dir,
            format!(
                "no image processor config: neither {PREPROCESSOR_CONFIG} nor an `image_processor` \
                 object in {PROCESSOR_CONFIG}"
            ),
        ))
    }

    /// The HF class name without the `Pil` / `Fast` backend suffix (`CLIPImageProcessor`), from
    /// `image_processor_type`, else from an older `feature_extractor_type`.
    pub fn class_name(&self) -> Option<String> {
        if let Some(t) = &self.image_processor_type {
            let t = t.strip_suffix("Pil").unwrap_or(t);
            let t = t.strip_suffix("Fast").unwrap_or(t);
            return Some(t.to_string());
        }
        let fe = self.feature_extractor_type.as_deref()?;
        Some(format!(
            "{}ImageProcessor",
            fe.strip_suffix("FeatureExtractor").unwrap_or(fe)
        ))
    }

    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::config(&self.source, reason)
    }

    /// `size` resolved with `default_to_square = false` (every LLaVA processor): an int is the
    /// shortest edge, a list is `[height, width]`.
    pub(crate) fn resolve_size(&self, default: Size) -> Result<Size> {
        match &self.size {
            None => Ok(default),
            Some(v) => size_from(v, false).map_err(|r| self.err(format!("`size`: {r}"))),
        }
    }

    /// `crop_size` resolved with `default_to_square = true`.
    pub(crate) fn resolve_crop(
        &self,
        default: Option<(usize, usize)>,
    ) -> Result<Option<(usize, usize)>> {
        match &self.crop_size {
            None => Ok(default),
            Some(v) => {
                match size_from(v, true).map_err(|r| self.err(format!("`crop_size`: {r}")))? {
                    Size::HeightWidth { height, width } => Ok(Some((height, width))),
                    Size::ShortestEdge(_) => unreachable!("square default"),
                }
            }
        }
    }

    pub(crate) fn resolve_resample(&self, default: Resample) -> Result<Resample> {
        match self.resample {
            None => Ok(default),
            Some(code) => Resample::from_pil(code)
                .ok_or_else(|| self.err(format!("`resample`: unknown PIL filter code {code}"))),
        }
    }

    pub(crate) fn resolve_channels(&self, key: &str, default: [f64; 3]) -> Result<[f64; 3]> {
        let v = if key == "image_mean" {
            &self.image_mean
        } else {
            &self.image_std
        };
        let out = match v {
            None => default,
            Some(Channels::One(x)) => [*x; 3],
            Some(Channels::Each(xs)) if xs.len() == 3 => [xs[0], xs[1], xs[2]],
            Some(Channels::Each(xs)) => {
                return Err(self.err(format!("`{key}` needs 3 values (RGB), got {}", xs.len())));
            }
        };
        if key == "image_std" && out.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err(self.err(format!(
                "`image_std` must be finite and non-zero, got {out:?}"
            )));
        }
        Ok(out)
    }

    pub(crate) fn resolve_pinpoints(&self, default: &[[usize; 2]]) -> Result<Vec<[usize; 2]>> {
        let Some(p) = &self.image_grid_pinpoints else {
            return Ok(default.to_vec());
        };
        if p.is_empty() {
            return Err(self.err("`image_grid_pinpoints` is empty"));
        }
        p.iter()
            .map(|hw| match hw.as_slice() {
                [h, w] if *h > 0 && *w > 0 => Ok([*h, *w]),
                _ => Err(self.err(format!(
                    "`image_grid_pinpoints` entries must be [height, width] > 0, got {hw:?}"
                ))),
            })
            .collect()
    }
}

/// `size` after HF's `get_size_dict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Resize the shorter edge to this, keeping the aspect ratio (`int(s * long / short)`).
    ShortestEdge(usize),
    /// Resize to exactly this.
    HeightWidth { height: usize, width: usize },
}

impl Size {
    /// The square (or exact) size that the LLaVA anyres processors squash the base image to:
    /// `(s, s)` for a shortest edge, else `(height, width)`.
    pub fn as_tuple(self) -> (usize, usize) {
        match self {
            Size::ShortestEdge(s) => (s, s),
            Size::HeightWidth { height, width } => (height, width),
        }
    }
}

fn size_from(v: &SizeValue, default_to_square: bool) -> std::result::Result<Size, String> {
    let size = match v {
        SizeValue::Int(s) if default_to_square => Size::HeightWidth {
            height: *s,
            width: *s,
        },
        SizeValue::Int(s) => Size::ShortestEdge(*s),
        SizeValue::List(l) => match l.as_slice() {
            [s] if default_to_square => Size::HeightWidth {
                height: *s,
                width: *s,
            },
            [s] => Size::ShortestEdge(*s),
            [h, w] => Size::HeightWidth {
                height: *h,
                width: *w,
            },
            _ => {
                return Err(format!(
                    "a list must be [size] or [height, width], got {l:?}"
                ));
            }
        },
        SizeValue::Dict(d) => match (d.shortest_edge, d.longest_edge, d.height, d.width) {
            (Some(s), None, None, None) => Size::ShortestEdge(s),
            (None, None, Some(height), Some(width)) => Size::HeightWidth { height, width },
            _ => {
                return Err(format!(
                    "expected {{\"shortest_edge\"}} or {{\"height\", \"width\"}}, got {d:?}"
                ));
            }
        },
    };
    match size {
        Size::ShortestEdge(0)
        | Size::HeightWidth { height: 0, .. }
        | Size::HeightWidth { width: 0, .. } => Err("sizes must be positive".into()),
        s => Ok(s),
    }
}

impl ProcessorConfig {
    /// Reads `processor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut value = read_json(path)?;
        if !value.is_object() {
            return Err(Error::config(
                path,
                "a processor config must be a JSON object",
            ));
        }
        let inner = value
            .get_mut("image_processor")
            .map(|v| v.take())
            .filter(|v| !v.is_null());
        if let Some(obj) = value.as_object_mut() {
            obj.remove("image_processor");
        }
        let mut cfg: Self = serde_json::from_value(value)
            .map_err(|e| Error::config(path, format!("invalid processor config: {e}")))?;
        cfg.image_processor = inner
            .map(|v| ImageProcessorConfig::from_value(v, path))
            .transpose()?;
        cfg.source = path.to_path_buf();
        Ok(cfg)
    }

    /// `processor_config.json` of a model directory, `None` when the directory has none.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = dir.as_ref().join(PROCESSOR_CONFIG);
        if path.is_file() {
            Self::from_file(path).map(Some)
        } else {
            Ok(None)
        }
    }
}
