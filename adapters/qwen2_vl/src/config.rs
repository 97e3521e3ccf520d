//! `QwenVlConfig`: the HF `config.json` of Qwen2-VL (`configuration_qwen2_vl.py`) and Qwen2.5-VL
//! (`configuration_qwen2_5_vl.py`). transformers 5 nests the LLM keys in `text_config`; the hub's
//! older files keep them at the top level, with `rope_theta` + `rope_scaling: {type: mrope,
//! mrope_section}` instead of `rope_parameters`. Both are read.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::nn::Activation;
use serde_json::{Value, json};
use std::path::Path;

/// Which vision tower (and position rule for videos) the model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Qwen2-VL: LayerNorm + GELU-MLP blocks, full attention per frame.
    Qwen2,
    /// Qwen2.5-VL: RMSNorm + SwiGLU blocks, window attention, timed video positions.
    Qwen25,
}

impl Variant {
    pub fn model_type(self) -> &'static str {
        match self {
            Variant::Qwen2 => "qwen2_vl",
            Variant::Qwen25 => "qwen2_5_vl",
        }
    }
}

/// `vision_config`, both generations (2.0 names its width `embed_dim` and its output
/// `hidden_size`; 2.5 names them `hidden_size` and `out_hidden_size`).
#[derive(Debug, Clone)]
pub struct VisionConfig {
    pub depth: usize,
    /// Width of the blocks.
    pub embed_dim: usize,
    /// Width of the merger output (the LLM's hidden size).
    pub out_dim: usize,
    pub num_heads: usize,
    pub hidden_act: Activation,
    /// MLP width of a block.
    pub intermediate_size: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub rope_theta: f64,
    /// 2.5: window size in pixels.
    pub window_size: usize,
    /// 2.5: blocks with full (per-frame) attention; the others attend within windows.
    pub fullatt_block_indexes: Vec<usize>,
    /// 2.5: temporal position step per second of video.
    pub tokens_per_second: f64,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Values of one flattened patch: channels x temporal x patch x patch.
    pub fn patch_values(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
}

#[derive(Debug, Clone)]
pub struct QwenVlConfig {
    pub variant: Variant,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub mrope_section: Vec<usize>,
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub vision_start_token_id: i64,
}

fn usize_of(v: &Value, keys: &[&str]) -> Option<usize> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_u64))
        .map(|x| x as usize)
}

fn f64_of(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// The class defaults of `Qwen2VLTextConfig` (they differ from `Qwen2Config`'s, e.g.
/// `rms_norm_eps` 1e-5 and `rope_theta` 1e6), for keys a config leaves out.
fn text_defaults() -> Value {
    json!({
        "vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-5,
        "use_sliding_window": false, "sliding_window": 4096, "tie_word_embeddings": false,
    })
}

impl QwenVlConfig {
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let variant = match model_type {
            "qwen2_vl" => Variant::Qwen2,
            "qwen2_5_vl" => Variant::Qwen25,
            other => {
                return Err(Error::config(
                    path,
                    format!("model_type `{other}` is neither qwen2_vl nor qwen2_5_vl"),
                ));
            }
        };
        // The LLM keys: nested (transformers 5) or at the top level (hub files).
        let source = v.get("text_config").filter(|t| t.is_object()).unwrap_or(v);
        let mut text = text_defaults();
        let obj = text.as_object_mut().expect("an object");
        for (k, val) in source.as_object().into_iter().flatten() {
            if !val.is_null() && k != "vision_config" && k != "text_config" {
                obj.insert(k.clone(), val.clone());
            }
        }
        obj.insert("model_type".into(), json!("qwen2"));
        let params = source
            .get("rope_parameters")
            .or_else(|| source.get("rope_scaling"))
            .filter(|p| p.is_object());
        if params.and_then(|p| p.get("rope_theta")).is_none() && source.get("rope_theta").is_none()
        {
            obj.insert("rope_theta".into(), json!(1_000_000.0));
        }
        let mrope_section = match params.and_then(|p| p.get("mrope_section")) {
            Some(s) => serde_json::from_value::<Vec<usize>>(s.clone())
                .map_err(|e| Error::config(path, format!("mrope_section: {e}")))?,
            None => vec![16, 24, 24],
        };
        // A tie at either level ties (`Qwen2VLConfig.__post_init__`).
        let tied = v.get("tie_word_embeddings").and_then(Value::as_bool) == Some(true);
        let mut text = TextConfig::from_value(&text, path)?;
        text.tie_word_embeddings |= tied;
        if mrope_section.iter().sum::<usize>() != text.head_dim() / 2 {
            return Err(Error::config(
                path,
                format!(
                    "mrope_section {mrope_section:?} does not sum to head_dim / 2 = {}",
                    text.head_dim() / 2
                ),
            ));
        }
        let vision = Self::vision(
            v.get("vision_config").unwrap_or(&Value::Null),
            variant,
            path,
        )?;
        let int = |k: &str, d: i64| v.get(k).and_then(Value::as_i64).unwrap_or(d);
        Ok(QwenVlConfig {
            variant,
            mrope_section,
            image_token_id: int("image_token_id", 151655),
            video_token_id: int("video_token_id", 151656),
            vision_start_token_id: int("vision_start_token_id", 151652),
            text,
            vision,
        })
    }

    fn vision(v: &Value, variant: Variant, path: &Path) -> Result<VisionConfig> {
        let hidden_act = match v.get("hidden_act") {
            Some(a) => serde_json::from_value(a.clone())
                .map_err(|e| Error::config(path, format!("vision_config.hidden_act: {e}")))?,
            None if variant == Variant::Qwen2 => Activation::QuickGelu,
            None => Activation::Silu,
        };
        let (embed_dim, out_dim, intermediate_size) = match variant {
            Variant::Qwen2 => {
                let embed = usize_of(v, &["embed_dim"]).unwrap_or(1280);
                let ratio = f64_of(v, "mlp_ratio").unwrap_or(4.0);
                (
                    embed,
                    usize_of(v, &["hidden_size"]).unwrap_or(3584),
                    (embed as f64 * ratio) as usize,
                )
            }
            Variant::Qwen25 => (
                usize_of(v, &["hidden_size"]).unwrap_or(3584),
                usize_of(v, &["out_hidden_size"]).unwrap_or(3584),
                usize_of(v, &["intermediate_size"]).unwrap_or(3420),
            ),
        };
        let rope_theta = v
            .get("rope_parameters")
            .and_then(|p| f64_of(p, "rope_theta"))
            .or_else(|| f64_of(v, "rope_theta"))
            .unwrap_or(10_000.0);
        let c = VisionConfig {
            depth: usize_of(v, &["depth", "num_hidden_layers"]).unwrap_or(32),
            embed_dim,
            out_dim,
            num_heads: usize_of(v, &["num_heads", "num_attention_heads"]).unwrap_or(16),
            hidden_act,
            intermediate_size,
            in_channels: usize_of(v, &["in_channels", "in_chans"]).unwrap_or(3),
            patch_size: usize_of(v, &["patch_size", "spatial_patch_size"]).unwrap_or(14),
            temporal_patch_size: usize_of(v, &["temporal_patch_size"]).unwrap_or(2),
            spatial_merge_size: usize_of(v, &["spatial_merge_size"]).unwrap_or(2),
            rope_theta,
            window_size: usize_of(v, &["window_size"]).unwrap_or(112),
            fullatt_block_indexes: match v.get("fullatt_block_indexes") {
                Some(x) => serde_json::from_value(x.clone()).map_err(|e| {
                    Error::config(path, format!("vision_config.fullatt_block_indexes: {e}"))
                })?,
                None => vec![7, 15, 23, 31],
            },
            tokens_per_second: f64_of(v, "tokens_per_second").unwrap_or(4.0),
        };
        if !c.embed_dim.is_multiple_of(c.num_heads) || !c.head_dim().is_multiple_of(4) {
            return Err(Error::config(
                path,
                format!(
                    "vision_config: width {} over {} heads must give a head_dim divisible by 4",
                    c.embed_dim, c.num_heads
                ),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_configs_agree() {
        let p = Path::new("config.json");
        let nested = json!({"model_type": "qwen2_vl", "text_config": {
            "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 5e4, "mrope_section": [2, 3, 3]}},
            "vision_config": {"embed_dim": 32, "num_heads": 2, "mlp_ratio": 4}});
        let flat = json!({"model_type": "qwen2_vl", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "rope_theta": 5e4,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "vision_config": {"embed_dim": 32, "num_heads": 2, "mlp_ratio": 4, "in_chans": 3}});
        let a = QwenVlConfig::from_value(&nested, p).unwrap();
        let b = QwenVlConfig::from_value(&flat, p).unwrap();
        assert_eq!(a.mrope_section, vec![2, 3, 3]);
        assert_eq!(a.mrope_section, b.mrope_section);
        assert_eq!(a.text.rope(), b.text.rope());
        assert_eq!(a.text.rope().theta, 5e4);
        assert_eq!(a.text.rms_norm_eps, 1e-5);
        assert_eq!(a.vision.intermediate_size, 128);
        assert!(a.text.qkv_bias() && !a.text.o_bias());
        let bad = json!({"model_type": "qwen2_vl", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 1]}});
        let err = QwenVlConfig::from_value(&bad, p).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("mrope_section"),
            "{err}"
        );
    }
}
