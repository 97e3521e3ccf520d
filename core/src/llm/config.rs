//! `TextConfig`: the LLM half of a config, with field names equal to the HF `config.json` keys
//! of `LlamaConfig`, `MistralConfig` and `Qwen2Config`. Nested configs on the hub often give only
//! the keys that differ from the class defaults (LLaVA-1.5's `text_config` says little more than
//! `"model_type": "llama"`), so the defaults of the named class are filled in first.

use crate::error::{Error, Result};
use crate::nn::Activation;
use crate::nn::rope::RopeConfig;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(skip)]
    pub rope: Option<RopeConfig>,
}

fn class_defaults(model_type: &str) -> Option<Value> {
    Some(match model_type {
        "llama" => json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
        }),
        "mistral" => json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": false, "sliding_window": 4096,
        }),
        "qwen2" => json!({
            "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": false, "use_sliding_window": false, "sliding_window": 4096,
        }),
        _ => return None,
    })
}

/// Checks that attention heads split evenly: `hidden_size` (when the head size is derived from
/// it) over the query heads, and the query heads over the key/value heads (GQA groups).
pub fn check_heads(
    path: &Path,
    hidden_size: Option<usize>,
    num_attention_heads: usize,
    num_key_value_heads: usize,
) -> Result<()> {
    if num_attention_heads == 0 {
        return Err(Error::config(path, "num_attention_heads is 0"));
    }
    if let Some(hidden) = hidden_size
        && !hidden.is_multiple_of(num_attention_heads)
    {
        return Err(Error::config(
            path,
            format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads \
                 {num_attention_heads}"
            ),
        ));
    }
    if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(Error::config(
            path,
            format!(
                "num_attention_heads {num_attention_heads} is not a multiple of \
                 num_key_value_heads {num_key_value_heads}"
            ),
        ));
    }
    Ok(())
}

impl TextConfig {
    /// Parses a text config object; `path` names the file in errors.
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llama");
        let mut merged = class_defaults(model_type).ok_or_else(|| {
            Error::config(
                path,
                format!(
                    "text model_type `{model_type}` is not a supported LLM (llama, mistral, qwen2)"
                ),
            )
        })?;
        let obj = merged.as_object_mut().expect("defaults are an object");
        for (k, val) in v.as_object().into_iter().flatten() {
            if !val.is_null() {
                obj.insert(k.clone(), val.clone());
            }
        }
        obj.insert("model_type".into(), json!(model_type));
        let mut c: TextConfig = serde_json::from_value(merged)
            .map_err(|e| Error::config(path, format!("bad text config: {e}")))?;
        let derived = c.head_dim.is_none().then_some(c.hidden_size);
        check_heads(path, derived, c.num_attention_heads, c.num_kv_heads())?;
        c.rope = Some(RopeConfig::from_hf(
            v,
            c.head_dim(),
            c.max_position_embeddings,
            path,
        )?);
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Qwen2 has biases on q/k/v only; Llama's `attention_bias` covers all four.
    pub fn qkv_bias(&self) -> bool {
        // Qwen2's q/k/v and QWen's (Qwen-VL) `c_attn` always carry a bias.
        matches!(self.model_type.as_str(), "qwen2" | "qwen") || self.attention_bias
    }

    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// The sliding attention window, where the model uses one.
    pub fn window(&self) -> Option<usize> {
        match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" if self.use_sliding_window == Some(true) => self.sliding_window,
            _ => None,
        }
    }

    pub fn rope(&self) -> &RopeConfig {
        self.rope.as_ref().expect("set by from_value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_hub_text_config_gets_class_defaults() {
        let c = TextConfig::from_value(
            &json!({"model_type": "llama", "vocab_size": 32064}),
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.num_hidden_layers),
            (32064, 4096, 32)
        );
        assert_eq!(c.num_kv_heads(), 32);
        assert_eq!(c.head_dim(), 128);
        let q = TextConfig::from_value(
            &json!({"model_type": "qwen2", "hidden_size": 896, "num_attention_heads": 14,
                    "num_key_value_heads": 2}),
            Path::new("c.json"),
        )
        .unwrap();
        assert!(q.qkv_bias() && !q.o_bias());
        assert_eq!(q.window(), None);
        let err = TextConfig::from_value(&json!({"model_type": "gpt2"}), Path::new("c.json"))
            .unwrap_err();
        assert!(err.to_string().contains("c.json") && err.to_string().contains("gpt2"));
        // Qwen2's class default of 32 kv heads does not divide 14 query heads.
        let err = TextConfig::from_value(
            &json!({"model_type": "qwen2", "hidden_size": 896, "num_attention_heads": 14}),
            Path::new("c.json"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads 32"), "{err}");
    }
}
