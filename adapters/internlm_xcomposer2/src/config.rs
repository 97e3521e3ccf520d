//! `InternLMXcomposer2Config` (`configuration_internlm_xcomposer2.py` of the hub's remote code):
//! InternLM2's keys plus `img_size` and `max_length`; field names are the `config.json` keys,
//! defaults the class defaults. The vision tower's config is not in `config.json`: the remote
//! code builds `openai/clip-vit-large-patch14-336` (`build_mlp.py`), so that is the default;
//! a `vision_config` object in `config.json` (lmms' tiny models) or a fixture's `meta.json`
//! `tiny_vision_tower` (the shared parity fixture) overrides it. The tower runs at `img_size`.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::llm::internlm2::InternLm2Config;
use lmms_core::vision::VisionConfig;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct XComposer2Config {
    /// The InternLM2 keys (the LLM).
    pub llm: InternLm2Config,
    /// The square input size of the vision tower (490: 35x35 patches of 14).
    pub img_size: usize,
    /// The longest sequence the remote code builds (it cuts there; lmms skips or rejects).
    pub max_length: usize,
    vision: VisionConfig,
}

/// The keys XComposer2 adds to InternLM2's, with the class defaults.
#[derive(Deserialize)]
struct VisionKeys {
    #[serde(default = "d::img_size")]
    img_size: usize,
    #[serde(default = "d::max_length")]
    max_length: usize,
}

mod d {
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
        let llm = InternLm2Config::from_value(v, path)?;
        let keys: VisionKeys = serde_json::from_value(v.clone())
            .map_err(|e| Error::config(path, format!("bad InternLM-XComposer2 config: {e}")))?;
        let mut vision = clip_vit_large_336();
        let given = v
            .get("vision_config")
            .or_else(|| meta.and_then(|m| m.get("tiny_vision_tower")));
        for (k, val) in given.and_then(Value::as_object).into_iter().flatten() {
            vision[k] = val.clone();
        }
        // The position table was resized to the `img_size` grid (`resize_pos`).
        vision["image_size"] = json!(keys.img_size);
        let vision = VisionConfig::from_value(&vision, path)?;
        if !keys.img_size.is_multiple_of(vision.patch_size) {
            return Err(Error::config(
                path,
                format!(
                    "img_size {} is not a multiple of the patch size {}",
                    keys.img_size, vision.patch_size
                ),
            ));
        }
        Ok(XComposer2Config {
            llm,
            img_size: keys.img_size,
            max_length: keys.max_length,
            vision,
        })
    }

    pub fn vision(&self) -> &VisionConfig {
        &self.vision
    }

    /// Image embeddings per image: the patch grid, CLS dropped (1225 at 490px).
    pub fn image_tokens(&self) -> usize {
        let g = self.vision().grid();
        g * g
    }

    /// The shared decoder's config (InternLM2-shaped).
    pub fn text(&self) -> TextConfig {
        self.llm.text()
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
