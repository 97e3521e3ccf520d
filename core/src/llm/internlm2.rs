//! `InternLM2Config` (`configuration_internlm2.py` of the hub's remote code): field names are
//! the `config.json` keys, defaults the class defaults. The decoder is Llama-shaped, so the
//! config becomes a [`TextConfig`] for the shared decoder. InternLM2-chat and
//! InternLM-XComposer2 (whose `config.json` is this plus its vision keys) both read it.

use crate::error::{Error, Result};
use crate::llm::TextConfig;
use crate::llm::config::check_heads;
use crate::nn::Activation;
use crate::nn::rope::RopeConfig;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct InternLm2Config {
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
    /// Bias on `wqkv` and `wo` (the MLP never has one).
    #[serde(default = "d::bias")]
    pub bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub pad_token_id: Option<i64>,
    pub eos_token_id: Option<Value>,
    #[serde(skip)]
    pub rope: Option<RopeConfig>,
}

/// The class defaults of `InternLM2Config`.
mod d {
    use crate::nn::Activation;
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
}

impl InternLm2Config {
    /// Parses `config.json` (`path` names it in errors). RoPE: `rope_theta` + `rope_scaling`
    /// (`{"type": "dynamic" | "linear", "factor"}`) or `rope_parameters`.
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let mut c: InternLm2Config = serde_json::from_value(v.clone())
            .map_err(|e| Error::config(path, format!("bad InternLM2 config: {e}")))?;
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
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The shared decoder's config: a Llama-shaped LLM with `bias` on the attention only.
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
    use crate::nn::RopeScaling;
    use serde_json::json;

    #[test]
    fn reads_hub_keys_and_class_defaults() {
        let p = Path::new("config.json");
        let c = InternLm2Config::from_value(
            &json!({"hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 8,
                "rope_theta": 1000000, "rope_scaling": {"type": "dynamic", "factor": 2.0},
                "max_position_embeddings": 32768, "bias": false}),
            p,
        )
        .unwrap();
        let t = c.text();
        assert_eq!((t.head_dim(), t.num_kv_heads()), (128, 8));
        assert!(!t.qkv_bias() && !t.o_bias() && !t.mlp_bias);
        assert_eq!(t.vocab_size, 103168);
        let rope = t.rope();
        assert_eq!(rope.scaling, RopeScaling::Dynamic { factor: 2.0 });
        assert_eq!((rope.theta, rope.max_position_embeddings), (1e6, 32768));
        // The class default has biases.
        let d = InternLm2Config::from_value(&json!({}), p).unwrap();
        assert!(d.text().qkv_bias() && d.text().o_bias());
        let bad = InternLm2Config::from_value(
            &json!({"num_attention_heads": 32, "num_key_value_heads": 5}),
            p,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("num_key_value_heads 5"));
    }
}
