//! Rotary position embeddings in HF's rotate-half convention (burn's `RotaryEncoding` rotates
//! interleaved pairs, which is a different model). Frequencies follow transformers'
//! `modeling_rope_utils.py`: default, linear, dynamic NTK and llama3 scaling, read from either the
//! older `rope_theta` + `rope_scaling` keys or transformers 5's `rope_parameters`.

use crate::error::{Error, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// NTK-aware base stretching once the sequence outgrows `max_position_embeddings`.
    Dynamic {
        factor: f64,
    },
    /// Llama 3.1's frequency-band scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    /// Number of rotated channels per head (the head dim unless the model rotates part of it).
    pub dim: usize,
    pub max_position_embeddings: usize,
    pub scaling: RopeScaling,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

impl RopeConfig {
    /// Reads the RoPE settings of a text config (`config.json` or its `text_config`);
    /// `max_position_embeddings` is the config's value after its class defaults.
    pub fn from_hf(
        cfg: &Value,
        dim: usize,
        max_position_embeddings: usize,
        path: &Path,
    ) -> Result<Self> {
        let params = cfg.get("rope_parameters").filter(|v| v.is_object());
        let scaling = cfg.get("rope_scaling").filter(|v| v.is_object());
        let theta = params
            .and_then(|p| num(p, "rope_theta"))
            .or_else(|| num(cfg, "rope_theta"))
            .unwrap_or(10_000.0);
        let s = params.or(scaling);
        let kind = s
            .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let factor = || {
            s.and_then(|s| num(s, "factor")).ok_or_else(|| {
                Error::config(path, format!("rope scaling `{kind}` needs a `factor`"))
            })
        };
        let scaling = match kind {
            // Qwen2-VL's "mrope" uses default frequencies; the sections are the family's.
            "default" | "mrope" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "dynamic" => RopeScaling::Dynamic { factor: factor()? },
            "llama3" => {
                let s = s.expect("llama3 came from a scaling object");
                RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: num(s, "low_freq_factor").unwrap_or(1.0),
                    high_freq_factor: num(s, "high_freq_factor").unwrap_or(4.0),
                    original_max_position_embeddings: num(s, "original_max_position_embeddings")
                        .unwrap_or(8192.0),
                }
            }
            other => {
                return Err(Error::config(
                    path,
                    format!("rope scaling type `{other}` is not supported"),
                ));
            }
        };
        Ok(RopeConfig {
            theta,
            dim,
            max_position_embeddings,
            scaling,
        })
    }

    /// Inverse frequencies (`dim / 2` of them) for a sequence of `seq_len` positions, in f32 as
    /// transformers computes them.
    pub fn inv_freq(&self, seq_len: usize) -> Vec<f32> {
        let dim = self.dim;
        let base = match self.scaling {
            RopeScaling::Dynamic { factor } if seq_len > self.max_position_embeddings => {
                let max = self.max_position_embeddings as f64;
                self.theta
                    * ((factor * seq_len as f64 / max) - (factor - 1.0))
                        .powf(dim as f64 / (dim as f64 - 2.0))
            }
            _ => self.theta,
        };
        let inv: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / dim as f32))
            .collect();
        match self.scaling {
            RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                inv.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f as f64;
                        if wavelen > low_wavelen {
                            f / factor as f32
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            ((1.0 - smooth) * f as f64 / factor + smooth * f as f64) as f32
                        }
                    })
                    .collect()
            }
            _ => inv,
        }
    }
}

/// cos/sin tables for given positions.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    pub config: RopeConfig,
}

impl RotaryEmbedding {
    pub fn new(config: RopeConfig) -> Self {
        RotaryEmbedding { config }
    }

    /// `(cos, sin)`, each `[B, T, dim]`, for `positions` (row-major `[B, T]`).
    pub fn cos_sin<B: Backend>(
        &self,
        positions: &[i64],
        batch: usize,
        seq: usize,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let max_pos = positions.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
        let inv = self.config.inv_freq(max_pos);
        let (cos, sin) = tables(&inv, positions);
        let shape = [batch, seq, self.config.dim];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// cos and sin of `cat(freqs, freqs)` for each position, row-major `[N, 2 * inv.len()]`.
pub fn tables(inv: &[f32], positions: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let half = inv.len();
    let mut cos = Vec::with_capacity(positions.len() * half * 2);
    let mut sin = Vec::with_capacity(positions.len() * half * 2);
    for &p in positions {
        for _ in 0..2 {
            for &f in inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    (cos, sin)
}

/// `x * cos + rotate_half(x) * sin` for `x: [B, H, T, D]` and `cos`/`sin` `[B, T, D]`.
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 3>,
    sin: &Tensor<B, 3>,
) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let cos = cos.clone().unsqueeze_dim::<4>(1);
    let sin = sin.clone().unsqueeze_dim::<4>(1);
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_config_styles() {
        let p = Path::new("config.json");
        let old = json!({"rope_theta": 5e5, "max_position_embeddings": 4096,
            "rope_scaling": {"type": "linear", "factor": 2.0}});
        let new = json!({"max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "linear", "rope_theta": 5e5, "factor": 2.0}});
        let a = RopeConfig::from_hf(&old, 64, 4096, p).unwrap();
        assert_eq!(a, RopeConfig::from_hf(&new, 64, 4096, p).unwrap());
        assert_eq!(a.scaling, RopeScaling::Linear { factor: 2.0 });
        assert_eq!(a.theta, 5e5);
        let bad = json!({"rope_scaling": {"type": "su2"}});
        assert!(
            RopeConfig::from_hf(&bad, 64, 4096, p)
                .unwrap_err()
                .to_string()
                .contains("`su2` is not supported")
        );
    }
}
