//! `MllamaConfig` (transformers' `models/mllama/configuration_mllama.py`): a nested
//! `text_config` (`MllamaTextConfig`) and `vision_config` (`MllamaVisionConfig`), field names
//! equal to the HF keys, each class's defaults filled in for keys a file leaves out. The text
//! half is a Llama 3.1 decoder, so it is read into core's [`TextConfig`] (RoPE from
//! `rope_theta` + `rope_scaling` or `rope_parameters`, llama3 scaling included) plus the
//! indices of the cross-attention layers.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::nn::Activation;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

/// `MllamaTextConfig.default_theta`: the RoPE base when a config names none.
const DEFAULT_THETA: f64 = 500_000.0;

#[derive(Debug, Clone)]
pub struct MllamaTextConfig {
    /// The decoder's settings (`vocab_size` is the LM head's; the embedding has 8 more rows).
    pub llm: TextConfig,
    /// Layers that are gated cross-attention layers instead of self-attention ones.
    pub cross_attention_layers: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MllamaVisionConfig {
    pub hidden_size: usize,
    pub hidden_act: Activation,
    pub num_hidden_layers: usize,
    pub num_global_layers: usize,
    #[serde(alias = "num_attention_heads")]
    pub attention_heads: usize,
    pub num_channels: usize,
    pub intermediate_size: usize,
    pub vision_output_dim: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub norm_eps: f64,
    pub max_num_tiles: usize,
    pub intermediate_layers_indices: Vec<usize>,
    pub supported_aspect_ratios: Vec<[usize; 2]>,
}

impl MllamaVisionConfig {
    /// Patches per tile plus the class token (`num_patches` in HF).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    /// The largest aspect-ratio id (0 is padding, 1.. the supported ratios).
    pub fn max_aspect_ratio_id(&self) -> usize {
        self.supported_aspect_ratios.len()
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.attention_heads
    }
}

#[derive(Debug, Clone)]
pub struct MllamaConfig {
    pub text: MllamaTextConfig,
    pub vision: MllamaVisionConfig,
    /// `image_token_index`: the `<|image|>` id (the real models' 128256 lies past the LM head).
    pub image_token_index: i64,
}

/// `obj` with `defaults` under it: keys the file gives (and does not null) win.
fn with_defaults(defaults: Value, given: Option<&Value>) -> Value {
    let mut merged = defaults;
    let obj = merged.as_object_mut().expect("defaults are an object");
    for (k, v) in given.and_then(Value::as_object).into_iter().flatten() {
        if !v.is_null() {
            obj.insert(k.clone(), v.clone());
        }
    }
    merged
}

impl MllamaConfig {
    /// Parses a `config.json`; `path` names it in errors.
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str);
        if model_type.is_some_and(|t| t != "mllama") {
            return Err(Error::config(
                path,
                format!("model_type `{}` is not mllama", model_type.unwrap_or("")),
            ));
        }
        let text = text_config(v.get("text_config"), path)?;
        let vision = vision_config(v.get("vision_config"), path)?;
        let image_token_index = v
            .get("image_token_index")
            .or_else(|| v.get("image_token_id"))
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| Error::config(path, "`image_token_index` is not an integer"))
            })
            .transpose()?
            .unwrap_or(128_256);
        let vocab = text.llm.vocab_size as i64;
        if image_token_index < 0 || image_token_index >= vocab + 8 {
            return Err(Error::config(
                path,
                format!(
                    "image_token_index {image_token_index} is outside the embedding's {} rows \
                     (vocab_size + 8)",
                    vocab + 8
                ),
            ));
        }
        Ok(MllamaConfig {
            text,
            vision,
            image_token_index,
        })
    }
}

fn text_config(given: Option<&Value>, path: &Path) -> Result<MllamaTextConfig> {
    let defaults = json!({
        "vocab_size": 128256, "hidden_size": 4096, "hidden_act": "silu", "num_hidden_layers": 40,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "tie_word_embeddings": false,
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
    });
    let mut merged = with_defaults(defaults, given);
    let obj = merged.as_object_mut().expect("object");
    // The decoder is Llama's; the head size is always hidden / heads (HF ignores `head_dim`).
    obj.insert("model_type".into(), json!("llama"));
    obj.remove("head_dim");
    // Mllama's RoPE base defaults to 500000, not Llama's 10000.
    match obj
        .get_mut("rope_parameters")
        .and_then(Value::as_object_mut)
    {
        Some(p) if !p.contains_key("rope_theta") => {
            let theta = given
                .and_then(|g| g.get("rope_theta"))
                .cloned()
                .unwrap_or(json!(DEFAULT_THETA));
            p.insert("rope_theta".into(), theta);
        }
        Some(_) => {}
        None => {
            obj.entry("rope_theta").or_insert(json!(DEFAULT_THETA));
        }
    }
    let cross_attention_layers: Vec<usize> =
        serde_json::from_value(obj["cross_attention_layers"].clone()).map_err(|e| {
            Error::config(
                path,
                format!("text_config.cross_attention_layers must be a list of layer indices: {e}"),
            )
        })?;
    let llm = TextConfig::from_value(&merged, path)?;
    if llm.tie_word_embeddings {
        return Err(Error::config(
            path,
            "text_config.tie_word_embeddings is true, but Mllama's LM head is never tied (its \
             embedding has vocab_size + 8 rows)",
        ));
    }
    if let Some(&bad) = cross_attention_layers
        .iter()
        .find(|&&i| i >= llm.num_hidden_layers)
    {
        return Err(Error::config(
            path,
            format!(
                "text_config.cross_attention_layers names layer {bad} but there are {} layers",
                llm.num_hidden_layers
            ),
        ));
    }
    Ok(MllamaTextConfig {
        llm,
        cross_attention_layers,
    })
}

fn vision_config(given: Option<&Value>, path: &Path) -> Result<MllamaVisionConfig> {
    let defaults = json!({
        "hidden_size": 1280, "hidden_act": "gelu", "num_hidden_layers": 32,
        "num_global_layers": 8, "attention_heads": 16, "num_channels": 3,
        "intermediate_size": 5120, "vision_output_dim": 7680, "image_size": 448,
        "patch_size": 14, "norm_eps": 1e-5, "max_num_tiles": 4,
        "intermediate_layers_indices": [3, 7, 15, 23, 30],
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
    });
    let mut merged = with_defaults(defaults, given);
    if let Some(obj) = merged.as_object_mut()
        && let Some(heads) = obj.remove("num_attention_heads")
    {
        // transformers' attribute_map: both names mean the same key.
        obj.insert("attention_heads".into(), heads);
    }
    let c: MllamaVisionConfig = serde_json::from_value(merged)
        .map_err(|e| Error::config(path, format!("bad vision_config: {e}")))?;
    let bad = |reason: String| Err(Error::config(path, format!("vision_config: {reason}")));
    if c.attention_heads == 0 || !c.hidden_size.is_multiple_of(c.attention_heads) {
        return bad(format!(
            "hidden_size {} is not a multiple of attention_heads {}",
            c.hidden_size, c.attention_heads
        ));
    }
    if c.patch_size == 0 || !c.image_size.is_multiple_of(c.patch_size) {
        return bad(format!(
            "image_size {} is not a multiple of patch_size {}",
            c.image_size, c.patch_size
        ));
    }
    if let Some(&i) = c
        .intermediate_layers_indices
        .iter()
        .find(|&&i| i >= c.num_hidden_layers)
    {
        return bad(format!(
            "intermediate_layers_indices names layer {i} but there are {} layers",
            c.num_hidden_layers
        ));
    }
    let want = c.hidden_size * (1 + c.intermediate_layers_indices.len());
    if c.vision_output_dim != want {
        return bad(format!(
            "vision_output_dim {} is not hidden_size {} x (1 + {} intermediate layers) = {want}",
            c.vision_output_dim,
            c.hidden_size,
            c.intermediate_layers_indices.len()
        ));
    }
    if c.max_num_tiles == 0 || c.supported_aspect_ratios.is_empty() {
        return bad("max_num_tiles and supported_aspect_ratios must not be empty".into());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hub's config.json of Llama-3.2-11B-Vision-Instruct (older keys: rope_theta +
    /// rope_scaling, torch_dtype), trimmed of keys that do not matter here.
    #[test]
    fn hub_config_reads() {
        let v = json!({
            "architectures": ["MllamaForConditionalGeneration"],
            "image_token_index": 128256,
            "model_type": "mllama",
            "text_config": {
                "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
                "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 131072,
                "model_type": "mllama_text_model", "num_attention_heads": 32,
                "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
                "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                "rope_theta": 500000.0, "torch_dtype": "bfloat16", "vocab_size": 128256
            },
            "torch_dtype": "bfloat16",
            "vision_config": {
                "attention_heads": 16, "hidden_act": "gelu", "hidden_size": 1280,
                "image_size": 560, "intermediate_layers_indices": [3, 7, 15, 23, 30],
                "intermediate_size": 5120, "max_num_tiles": 4, "model_type": "mllama_vision_model",
                "norm_eps": 1e-05, "num_channels": 3, "num_global_layers": 8,
                "num_hidden_layers": 32, "patch_size": 14,
                "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
                "vision_output_dim": 7680
            }
        });
        let c = MllamaConfig::from_value(&v, Path::new("config.json")).unwrap();
        assert_eq!(c.text.llm.head_dim(), 128);
        assert_eq!(c.text.llm.num_kv_heads(), 8);
        assert_eq!(c.text.cross_attention_layers.len(), 8);
        assert_eq!(c.vision.num_patches(), 1601);
        assert_eq!(c.vision.max_aspect_ratio_id(), 8);
        assert!(matches!(
            c.text.llm.rope().scaling,
            lmms_core::nn::RopeScaling::Llama3 { .. }
        ));
        assert_eq!(c.text.llm.rope().theta, 500000.0);
    }

    #[test]
    fn sparse_config_gets_defaults_and_bad_ones_are_named() {
        let c = MllamaConfig::from_value(&json!({"model_type": "mllama"}), Path::new("c.json"))
            .unwrap();
        assert_eq!(c.text.llm.vocab_size, 128256);
        assert_eq!(c.text.llm.rope().theta, 500000.0);
        assert_eq!(c.vision.image_size, 448);
        assert_eq!(c.image_token_index, 128256);
        let err = MllamaConfig::from_value(
            &json!({"vision_config": {"vision_output_dim": 100}}),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("c.json") && err.contains("vision_output_dim 100"),
            "{err}"
        );
        let err = MllamaConfig::from_value(
            &json!({"text_config": {"num_hidden_layers": 4}}),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("names layer 8"), "{err}");
    }
}
