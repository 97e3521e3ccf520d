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

#[derive(Debug, Clone)]
pub struct LlavaConfig {
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
        Ok(LlavaConfig {
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

    /// Width of the features the projector takes (layers concatenated).
    pub fn vision_feature_dim(&self) -> usize {
        self.vision.hidden_size * self.vision_feature_layers.len()
    }
}
