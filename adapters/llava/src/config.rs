//! `LlavaConfig` and its NeXT / OneVision / NeXT-Video extensions: the HF `config.json` keys of
//! `configuration_llava*.py`, with the nested `text_config` / `vision_config`.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::nn::Activation;
use lmms_core::vision::VisionConfig;
use serde_json::Value;
use std::path::Path;

/// `vision_feature_select_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectStrategy {
    /// Drop the first (CLS) position.
    Default,
    /// Keep every position.
    Full,
}

/// Which of the LLaVA architectures a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// LLaVA-1.5 / Interleave: one tile per image.
    Llava,
    /// LLaVA-NeXT: anyres tiles, unpadding, `image_newline`.
    Next,
    /// LLaVA-NeXT-Video: NeXT images, videos pooled before the projector.
    NextVideo,
    /// LLaVA-OneVision: NeXT images with the `anyres_max` reduction, videos pooled after.
    OneVision,
}

/// `spatial_pool_mode` of LLaVA-NeXT-Video's resampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Average,
    Max,
}

#[derive(Debug, Clone)]
pub struct LlavaConfig {
    pub variant: Variant,
    /// `image_grid_pinpoints` as `(height, width)` pairs.
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// OneVision's `vision_aspect_ratio` = `anyres_max_N`: N.
    pub anyres_max: usize,
    /// NeXT-Video's `spatial_pool_mode` and `spatial_pool_stride`.
    pub spatial_pool: (PoolMode, usize),
    pub text: TextConfig,
    pub vision: VisionConfig,
    /// `image_token_index` (older configs) or `image_token_id`.
    pub image_token_id: i64,
    pub video_token_id: Option<i64>,
    pub projector_hidden_act: Activation,
    pub multimodal_projector_bias: bool,
    /// `vision_feature_layer`: one index or a list whose hidden states are concatenated.
    pub vision_feature_layers: Vec<isize>,
    pub select_strategy: SelectStrategy,
}

impl LlavaConfig {
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let text = TextConfig::from_value(v.get("text_config").unwrap_or(&Value::Null), path)?;
        let vision =
            VisionConfig::from_value(v.get("vision_config").unwrap_or(&Value::Null), path)?;
        let int = |k: &str| v.get(k).and_then(Value::as_i64);
        let image_token_id = int("image_token_id")
            .or_else(|| int("image_token_index"))
            .unwrap_or(32000);
        let video_token_id = int("video_token_id").or_else(|| int("video_token_index"));
        let projector_hidden_act = match v.get("projector_hidden_act") {
            Some(a) => serde_json::from_value(a.clone())
                .map_err(|e| Error::config(path, format!("projector_hidden_act: {e}")))?,
            None => Activation::Gelu,
        };
        let vision_feature_layers = match v.get("vision_feature_layer") {
            None => vec![-2],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_i64)
                .map(|x| x as isize)
                .collect(),
            Some(x) => vec![x.as_i64().ok_or_else(|| {
                Error::config(path, "vision_feature_layer must be an integer or a list")
            })? as isize],
        };
        let select_strategy = match v
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
        {
            None | Some("default") => SelectStrategy::Default,
            Some("full") => SelectStrategy::Full,
            Some(other) => {
                return Err(Error::config(
                    path,
                    format!("vision_feature_select_strategy `{other}` is not `default` or `full`"),
                ));
            }
        };
        let variant = match v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llava")
        {
            "llava" => Variant::Llava,
            "llava_next" => Variant::Next,
            "llava_next_video" => Variant::NextVideo,
            "llava_onevision" => Variant::OneVision,
            other => {
                return Err(Error::config(
                    path,
                    format!("model_type `{other}` is not a LLaVA variant"),
                ));
            }
        };
        let image_grid_pinpoints = match v.get("image_grid_pinpoints") {
            None => Vec::new(),
            Some(p) => serde_json::from_value(p.clone())
                .map_err(|e| Error::config(path, format!("image_grid_pinpoints: {e}")))?,
        };
        if variant != Variant::Llava && image_grid_pinpoints.is_empty() {
            return Err(Error::config(
                path,
                "image_grid_pinpoints is missing or empty",
            ));
        }
        let aspect = v
            .get("vision_aspect_ratio")
            .and_then(Value::as_str)
            .unwrap_or("anyres_max_9");
        let anyres_max = aspect
            .strip_prefix("anyres_max_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::config(
                    path,
                    format!("vision_aspect_ratio `{aspect}` is not anyres_max_N"),
                )
            })?;
        let mode = match v
            .get("spatial_pool_mode")
            .and_then(Value::as_str)
            .unwrap_or("average")
        {
            "average" => PoolMode::Average,
            "max" => PoolMode::Max,
            other => {
                return Err(Error::config(
                    path,
                    format!("spatial_pool_mode `{other}` is not supported (average, max)"),
                ));
            }
        };
        let stride = v
            .get("spatial_pool_stride")
            .and_then(Value::as_u64)
            .unwrap_or(2) as usize;
        Ok(LlavaConfig {
            variant,
            image_grid_pinpoints,
            anyres_max,
            spatial_pool: (mode, stride),
            text,
            vision,
            image_token_id,
            video_token_id,
            projector_hidden_act,
            multimodal_projector_bias: v
                .get("multimodal_projector_bias")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            vision_feature_layers,
            select_strategy,
        })
    }

    /// Whether the model has the learned `image_newline` separator.
    pub fn has_image_newline(&self) -> bool {
        self.variant != Variant::Llava
    }

    /// Patches per side of one tile.
    pub fn tile_side(&self) -> usize {
        self.vision.image_size / self.vision.patch_size
    }

    /// Width of the features the projector takes (layers concatenated).
    pub fn vision_feature_dim(&self) -> usize {
        self.vision.hidden_size * self.vision_feature_layers.len()
    }
}
