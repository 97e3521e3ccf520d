//! `VisionConfig`: HF `CLIPVisionConfig` / `SiglipVisionConfig` keys, with each class's defaults
//! filled in for keys a nested `vision_config` leaves out.

use crate::error::{Error, Result};
use crate::nn::Activation;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionKind {
    /// Class token, bias-free patch conv, `pre_layrnorm`.
    Clip,
    /// No class token, patch conv with bias, no pre-norm.
    Siglip,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// SigLIP's attention-pooling head (unused by the VLMs, but present in some checkpoints).
    #[serde(default)]
    pub vision_use_head: bool,
}

fn three() -> usize {
    3
}

impl VisionConfig {
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("clip_vision_model");
        let mut merged = match model_type {
            "clip_vision_model" => json!({
                "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "image_size": 224, "patch_size": 32,
                "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
            }),
            "siglip_vision_model" => json!({
                "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "image_size": 224, "patch_size": 16,
                "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "vision_use_head": true,
            }),
            other => {
                return Err(Error::config(
                    path,
                    format!(
                        "vision model_type `{other}` is not supported (clip_vision_model, siglip_vision_model)"
                    ),
                ));
            }
        };
        let obj = merged.as_object_mut().expect("object");
        for (k, val) in v.as_object().into_iter().flatten() {
            if !val.is_null() {
                obj.insert(k.clone(), val.clone());
            }
        }
        obj.insert("model_type".into(), json!(model_type));
        serde_json::from_value(merged)
            .map_err(|e| Error::config(path, format!("bad vision config: {e}")))
    }

    pub fn kind(&self) -> VisionKind {
        if self.model_type == "siglip_vision_model" {
            VisionKind::Siglip
        } else {
            VisionKind::Clip
        }
    }

    /// Patches per side for an `image_size` input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}
