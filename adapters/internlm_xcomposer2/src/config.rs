//! `InternLMXcomposer2Config` (`configuration_internlm_xcomposer2.py` of the hub's remote code):
//! InternLM2's keys plus `img_size` and `max_length`; field names are the `config.json` keys,
//! defaults the class defaults. The vision tower's config is not in `config.json`: the remote
//! code builds `openai/clip-vit-large-patch14-336` (`build_mlp.py`), so that is the default;
//! a `vision_config` object in `config.json` (lmms' tiny models) or a fixture's `meta.json`
//! `tiny_vision_tower` (the shared parity fixture) overrides it. The tower runs at `img_size`.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::llm::config::check_heads;
use lmms_core::nn::Activation;
use lmms_core::nn::rope::RopeConfig;
use lmms_core::vision::VisionConfig;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct XComposer2Config {
    #[serde(default = "d::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "d::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "d::intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "d::num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::num_attention_heads")]
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "d::hidden_act")]
    pub hidden_act: Activation,
    #[serde(default = "d::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "d::rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Bias on `wqkv` and `wo`.
    #[serde(default = "d::bias")]
    pub bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub pad_token_id: Option<i64>,
    pub eos_token_id: Option<Value>,
    /// The square input size of the vision tower (490: 35x35 patches of 14).
    #[serde(default = "d::img_size")]
    pub img_size: usize,
    /// The longest sequence the remote code builds (it cuts there; lmms skips or rejects).
    #[serde(default = "d::max_length")]
    pub max_length: usize,
    #[serde(skip)]
    pub rope: Option<RopeConfig>,
    #[serde(skip)]
    pub vision: Option<VisionConfig>,
}

mod d {
    use lmms_core::nn::Activation;
    pub fn vocab_size() -> usize {
        103168
    }
    pub fn hidden_size() -> usize {
        4096
    }
    pub fn intermediate_size() -> usize {
        11008
    }
    pub fn num_hidden_layers() -> usize {
        32
    }
    pub fn num_attention_heads() -> usize {
        32
    }
    pub fn hidden_act() -> Activation {
        serde_json::from_value(serde_json::json!("silu")).expect("silu is an activation")
    }
    pub fn max_position_embeddings() -> usize {
        2048
    }
    pub fn rms_norm_eps() -> f64 {
        1e-6
    }
    pub fn bias() -> bool {
        true
    }
    pub fn img_size() -> usize {
        224
    }
    pub fn max_length() -> usize {
        4096
    }
}

/// `openai/clip-vit-large-patch14-336`, the tower `build_vision_tower()` loads.
fn clip_vit_large_336() -> Value {
    json!({"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5})
}

impl XComposer2Config {
    /// Parses `config.json` (`path` names it in errors); `meta` is a fixture's `meta.json`, if
    /// the directory has one.
    pub fn from_value(v: &Value, path: &Path, meta: Option<&Value>) -> Result<Self> {
        let mut c: XComposer2Config = serde_json::from_value(v.clone())
            .map_err(|e| Error::config(path, format!("bad InternLM-XComposer2 config: {e}")))?;
        check_heads(
            path,
            Some(c.hidden_size),
            c.num_attention_heads,
            c.num_kv_heads(),
        )?;
        c.rope = Some(RopeConfig::from_hf(
            v,
            c.head_dim(),
            c.max_position_embeddings,
            path,
        )?);
        let mut vision = clip_vit_large_336();
        let given = v
            .get("vision_config")
            .or_else(|| meta.and_then(|m| m.get("tiny_vision_tower")));
        for (k, val) in given.and_then(Value::as_object).into_iter().flatten() {
            vision[k] = val.clone();
        }
        // The position table was resized to the `img_size` grid (`resize_pos`).
        vision["image_size"] = json!(c.img_size);
        let vision = VisionConfig::from_value(&vision, path)?;
        if !c.img_size.is_multiple_of(vision.patch_size) {
            return Err(Error::config(
                path,
                format!(
                    "img_size {} is not a multiple of the patch size {}",
                    c.img_size, vision.patch_size
                ),
            ));
        }
        c.vision = Some(vision);
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn vision(&self) -> &VisionConfig {
        self.vision.as_ref().expect("set by from_value")
    }

    /// Image embeddings per image: the patch grid, CLS dropped (1225 at 490px).
    pub fn image_tokens(&self) -> usize {
        let g = self.vision().grid();
        g * g
    }

    /// The shared decoder's config (InternLM2-shaped).
    pub fn text(&self) -> TextConfig {
        TextConfig {
            model_type: "internlm2".into(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: Some(self.num_kv_heads()),
            head_dim: Some(self.head_dim()),
            hidden_act: self.hidden_act,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            attention_bias: self.bias,
            mlp_bias: false,
            tie_word_embeddings: self.tie_word_embeddings,
            sliding_window: None,
            use_sliding_window: None,
            rope: self.rope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_defaults_give_clip_large_at_490() {
        let c = XComposer2Config::from_value(
            &json!({"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
                "img_size": 490, "bias": false, "rope_theta": 1000000,
                "rope_scaling": {"type": "dynamic", "factor": 1.0}}),
            Path::new("config.json"),
            None,
        )
        .unwrap();
        assert_eq!(c.image_tokens(), 1225);
        assert_eq!(c.vision().hidden_size, 1024);
        assert_eq!(c.vision().num_hidden_layers, 24);
        assert!(!c.text().qkv_bias());
        let bad =
            XComposer2Config::from_value(&json!({"img_size": 500}), Path::new("config.json"), None)
                .unwrap_err();
        assert!(bad.to_string().contains("img_size 500"), "{bad}");
    }
}
