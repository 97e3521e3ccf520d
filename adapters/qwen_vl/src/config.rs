//! `QWenConfig` (`configuration_qwen.py` of Qwen-VL-Chat's remote code) and the `visual` dict
//! that `modeling_qwen.py` passes to `visual.py`'s `VisionTransformer(**config.visual)`. Field
//! names are the `config.json` keys, defaults the class defaults. The LLM is Llama-shaped, so
//! it becomes a [`TextConfig`] for the shared decoder.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::llm::config::check_heads;
use lmms_core::nn::Activation;
use lmms_core::nn::rope::{RopeConfig, RopeScaling};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct QwenVlConfig {
    #[serde(default = "d::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "d::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "d::num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d::layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "d::kv_channels")]
    pub kv_channels: usize,
    #[serde(default = "d::rotary_pct")]
    pub rotary_pct: f64,
    #[serde(default = "d::rotary_emb_base")]
    pub rotary_emb_base: f64,
    #[serde(default = "d::yes")]
    pub use_dynamic_ntk: bool,
    #[serde(default = "d::yes")]
    pub use_logn_attn: bool,
    /// Twice the MLP width: `w1`/`w2` project to `intermediate_size / 2`.
    #[serde(default = "d::intermediate_size")]
    pub intermediate_size: usize,
    /// No bias on `c_proj` and the MLP (`c_attn` always has one).
    #[serde(default = "d::yes")]
    pub no_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The trained context: dynamic NTK and log-scaled attention start past it. Not a class
    /// attribute (only set through `config.json`); the hub config says 2048.
    #[serde(default = "d::seq_length")]
    pub seq_length: usize,
    pub visual: Option<VisualConfig>,
}

/// `visual.py`'s `VisionTransformer` arguments.
#[derive(Debug, Clone, Deserialize)]
pub struct VisualConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    #[serde(default = "d::n_queries")]
    pub n_queries: usize,
    #[serde(default = "d::output_dim")]
    pub output_dim: usize,
    /// Id of `<img>`; `</img>` is the next id and `<imgpad>` the one after.
    pub image_start_id: i64,
}

/// The class defaults of `QWenConfig` and `VisionTransformer`.
mod d {
    pub fn vocab_size() -> usize {
        151936
    }
    pub fn hidden_size() -> usize {
        4096
    }
    pub fn num_hidden_layers() -> usize {
        32
    }
    pub fn num_attention_heads() -> usize {
        32
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-6
    }
    pub fn max_position_embeddings() -> usize {
        8192
    }
    pub fn kv_channels() -> usize {
        128
    }
    pub fn rotary_pct() -> f64 {
        1.0
    }
    pub fn rotary_emb_base() -> f64 {
        10000.0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn intermediate_size() -> usize {
        22016
    }
    pub fn seq_length() -> usize {
        2048
    }
    pub fn n_queries() -> usize {
        256
    }
    pub fn output_dim() -> usize {
        512
    }
}

impl QwenVlConfig {
    /// Parses `config.json` (`path` names it in errors).
    pub fn from_value(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let c: QwenVlConfig = serde_json::from_value(v.clone())
            .map_err(|e| Error::config(path, format!("bad Qwen-VL config: {e}")))?;
        check_heads(
            path,
            Some(c.hidden_size),
            c.num_attention_heads,
            c.num_attention_heads,
        )?;
        if c.kv_channels * c.num_attention_heads != c.hidden_size {
            // `c_attn`'s output is split at `hidden_size` while heads are `kv_channels` wide.
            return Err(Error::config(
                path,
                format!(
                    "kv_channels {} x num_attention_heads {} must equal hidden_size {}",
                    c.kv_channels, c.num_attention_heads, c.hidden_size
                ),
            ));
        }
        if c.rotary_pct != 1.0 {
            return Err(Error::config(
                path,
                format!("rotary_pct {} is not supported (only 1.0)", c.rotary_pct),
            ));
        }
        if let Some(vis) = &c.visual {
            let grid = vis.image_size / vis.patch_size;
            let q = (vis.n_queries as f64).sqrt() as usize;
            if vis.width % vis.heads != 0 || vis.output_dim % 128 != 0 || q * q != vis.n_queries {
                return Err(Error::config(
                    path,
                    format!(
                        "visual: width {} must divide by heads {}, output_dim {} by 128 \
                         (the resampler's head width) and n_queries {} must be a square",
                        vis.width, vis.heads, vis.output_dim, vis.n_queries
                    ),
                ));
            }
            if grid == 0 {
                return Err(Error::config(path, "visual: image_size below patch_size"));
            }
        }
        Ok(c)
    }

    /// RoPE: `rotary_emb_base` over the head width, with QWen's stepwise NTK when
    /// `use_dynamic_ntk`.
    pub fn rope(&self) -> RopeConfig {
        RopeConfig {
            theta: self.rotary_emb_base,
            dim: self.kv_channels,
            max_position_embeddings: self.max_position_embeddings,
            scaling: if self.use_dynamic_ntk {
                RopeScaling::NtkAlpha {
                    seq_length: self.seq_length,
                }
            } else {
                RopeScaling::Default
            },
        }
    }

    /// The shared decoder's config (model type `qwen`: `c_attn` has a bias, `c_proj` and the
    /// MLP one unless `no_bias`).
    pub fn text(&self) -> TextConfig {
        TextConfig {
            model_type: "qwen".into(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size / 2,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: Some(self.num_attention_heads),
            head_dim: Some(self.kv_channels),
            hidden_act: Activation::Silu,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.layer_norm_epsilon,
            attention_bias: !self.no_bias,
            mlp_bias: !self.no_bias,
            tie_word_embeddings: self.tie_word_embeddings,
            sliding_window: None,
            use_sliding_window: None,
            rope: Some(self.rope()),
        }
    }
}

impl VisualConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// `int(width * mlp_ratio)`.
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }

    /// The resampler's heads (`output_dim // 128`).
    pub fn resampler_heads(&self) -> usize {
        self.output_dim / 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_hub_keys() {
        let p = Path::new("config.json");
        let c = QwenVlConfig::from_value(
            &json!({"hidden_size": 256, "num_attention_heads": 4, "kv_channels": 64,
                "intermediate_size": 512, "seq_length": 2048,
                "visual": {"heads": 4, "image_size": 448, "image_start_id": 500, "layers": 2,
                    "mlp_ratio": 4.9231, "output_dim": 256, "patch_size": 14, "width": 64}}),
            p,
        )
        .unwrap();
        let t = c.text();
        assert!(t.qkv_bias() && !t.o_bias() && !t.mlp_bias);
        assert_eq!((t.head_dim(), t.intermediate_size), (64, 256));
        assert_eq!(t.rope().scaling, RopeScaling::NtkAlpha { seq_length: 2048 });
        let v = c.visual.unwrap();
        assert_eq!((v.grid(), v.mlp_width(), v.resampler_heads()), (32, 315, 2));
        let bad = QwenVlConfig::from_value(&json!({"kv_channels": 64}), p).unwrap_err();
        assert!(bad.to_string().contains("kv_channels 64"));
    }
}
