//! Rotary position embeddings in HF's rotate-half convention (burn's `RotaryEncoding` rotates
//! interleaved pairs, which is a different model). Frequencies follow transformers'
//! `modeling_rope_utils.py`: default, linear, dynamic NTK, llama3 and Phi-3's su / longrope
//! scaling, read from either the older `rope_theta` + `rope_scaling` keys or transformers 5's
//! `rope_parameters`.

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
    /// QWen's (Qwen-VL-Chat `modeling_qwen.py`, `use_dynamic_ntk`) NTK: for a sequence of `L`
    /// tokens the base becomes `theta * alpha ** (dim / (dim - 2))` with
    /// `alpha = max(2 ** ceil(log2(L / seq_length) + 1) - 1, 1)`, so it changes in steps.
    NtkAlpha {
        seq_length: usize,
    },
    /// Llama 3.1's frequency-band scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Phi-3's `su` (remote code `Phi3SuScaledRotaryEmbedding`), called `longrope` in
    /// transformers: each frequency is divided by its own factor, `short_factor` while the
    /// sequence (largest position + 1) fits `original_max_position_embeddings` and
    /// `long_factor` beyond; cos and sin are multiplied by `attention_factor`.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
        attention_factor: f64,
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
            "su" | "longrope" => {
                let s = s.expect("su came from a scaling object");
                longrope(cfg, s, dim, max_position_embeddings, path)?
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

    /// What cos and sin are multiplied by (1 except for [`RopeScaling::LongRope`]).
    pub fn attention_factor(&self) -> f32 {
        match &self.scaling {
            RopeScaling::LongRope {
                attention_factor, ..
            } => *attention_factor as f32,
            _ => 1.0,
        }
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
            RopeScaling::NtkAlpha { seq_length } => {
                self.theta * ntk_alpha(seq_len, seq_length).powf(dim as f64 / (dim as f64 - 2.0))
            }
            _ => self.theta,
        };
        let inv: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / dim as f32))
            .collect();
        match &self.scaling {
            &RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor as f32).collect(),
            &RopeScaling::Llama3 {
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
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                ..
            } => {
                let ext = if seq_len > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                // `1 / (ext * base ** (arange(0, dim, 2) / dim))`, all in f32.
                (0..dim / 2)
                    .map(|i| {
                        let e = (2 * i) as f32 / dim as f32;
                        1.0 / (ext[i] as f32 * (self.theta as f32).powf(e))
                    })
                    .collect()
            }
            _ => inv,
        }
    }
}

/// QWen's `ntk_alpha` for a sequence of `seq_len` tokens: `math.log(seq_len / seq_length, 2)`
/// (a quotient of natural logs, as Python computes it) plus one, rounded up to a power of two,
/// minus one, at least 1.
pub fn ntk_alpha(seq_len: usize, seq_length: usize) -> f64 {
    let context = (seq_len as f64 / seq_length as f64).ln() / 2f64.ln() + 1.0;
    (2f64.powf(context.ceil()) - 1.0).max(1.0)
}

/// su / longrope settings: the factor lists (one per frequency), the pretrained context
/// (`original_max_position_embeddings` of the scaling object, else of the config) and the
/// attention factor (given, else `sqrt(1 + ln(s) / ln(original))` with
/// `s = max_position_embeddings / original`, 1 when `s <= 1`).
fn longrope(
    cfg: &Value,
    s: &Value,
    dim: usize,
    max_position_embeddings: usize,
    path: &Path,
) -> Result<RopeScaling> {
    let list = |key: &str| -> Result<Vec<f64>> {
        let v: Vec<f64> = s
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if v.len() != dim / 2 {
            return Err(Error::config(
                path,
                format!(
                    "rope scaling `{key}` needs {} numbers (head_dim / 2), found {}",
                    dim / 2,
                    v.len()
                ),
            ));
        }
        Ok(v)
    };
    let original = num(s, "original_max_position_embeddings")
        .or_else(|| num(cfg, "original_max_position_embeddings"))
        .map(|v| v as usize)
        .unwrap_or(max_position_embeddings);
    let attention_factor = match num(s, "attention_factor") {
        Some(f) => f,
        None => {
            let scale = max_position_embeddings as f64 / original as f64;
            if scale <= 1.0 {
                1.0
            } else {
                (1.0 + scale.ln() / (original as f64).ln()).sqrt()
            }
        }
    };
    Ok(RopeScaling::LongRope {
        short_factor: list("short_factor")?,
        long_factor: list("long_factor")?,
        original_max_position_embeddings: original,
        attention_factor,
    })
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
        self.cos_sin_at(positions, max_pos, batch, seq, device)
    }

    /// [`Self::cos_sin`] with the frequencies of a `freq_len`-token sequence (for scalings
    /// that depend on the length) instead of one past the largest position.
    pub fn cos_sin_at<B: Backend>(
        &self,
        positions: &[i64],
        freq_len: usize,
        batch: usize,
        seq: usize,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let inv = self.config.inv_freq(freq_len);
        let (mut cos, mut sin) = tables(&inv, positions);
        let factor = self.config.attention_factor();
        if factor != 1.0 {
            cos.iter_mut().for_each(|c| *c *= factor);
            sin.iter_mut().for_each(|s| *s *= factor);
        }
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
    if cos.dims() != [b, t, d] || sin.dims() != [b, t, d] {
        let cos = cos.clone().unsqueeze_dim::<4>(1);
        let sin = sin.clone().unsqueeze_dim::<4>(1);
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
        let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        return x * cos + rotated * sin;
    }
    // Heads first, `[H, B*T*D]`: every head's row is multiplied by the same `[B*T*D]` row of
    // cos/sin, a broadcast the CPU backend runs with SIMD (a `[B, 1, T, D]` broadcast over
    // `[B, H, T, D]` takes its scalar strided path instead). Same values, same order of
    // operations as the plain form.
    let n = b * t * d;
    let xh = x.swap_dims(0, 1).reshape([h, n]);
    let x4 = xh.clone().reshape([h, b, t, d]);
    let x1 = x4.clone().slice([0..h, 0..b, 0..t, 0..d / 2]);
    let x2 = x4.slice([0..h, 0..b, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3).reshape([h, n]);
    let cos = cos.clone().reshape([1, n]);
    let sin = sin.clone().reshape([1, n]);
    (xh * cos + rotated * sin)
        .reshape([h, b, t, d])
        .swap_dims(0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn heads_first_rotary_equals_the_plain_form() {
        use crate::backend::Cpu;
        use burn::tensor::Distribution;
        let dev = Default::default();
        let (b, h, t, d) = (2, 3, 5, 8);
        // A permuted input, as attention passes it ([B, T, H, D] viewed as [B, H, T, D]).
        let x = Tensor::<Cpu, 4>::random([b, t, h, d], Distribution::Default, &dev).swap_dims(1, 2);
        let cos = Tensor::<Cpu, 3>::random([b, t, d], Distribution::Default, &dev);
        let sin = Tensor::<Cpu, 3>::random([b, t, d], Distribution::Default, &dev);
        let got = apply_rotary(x.clone(), &cos, &sin);
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
        let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let want = x * cos.unsqueeze_dim::<4>(1) + rotated * sin.unsqueeze_dim::<4>(1);
        assert_eq!(got.dims(), [b, h, t, d]);
        assert_eq!(
            got.into_data().to_vec::<f32>().unwrap(),
            want.into_data().to_vec::<f32>().unwrap()
        );
    }

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

    #[test]
    fn qwen_ntk_alpha_steps() {
        assert_eq!(ntk_alpha(1, 2048), 1.0);
        assert_eq!(ntk_alpha(2048, 2048), 1.0);
        assert_eq!(ntk_alpha(2049, 2048), 3.0);
        assert_eq!(ntk_alpha(4096, 2048), 3.0);
        assert_eq!(ntk_alpha(4097, 2048), 7.0);
        let r = RopeConfig {
            theta: 10000.0,
            dim: 4,
            max_position_embeddings: 8192,
            scaling: RopeScaling::NtkAlpha { seq_length: 8 },
        };
        assert_eq!(r.inv_freq(8), vec![1.0, 1.0 / 100.0]);
        let base = 10000.0 * 3f64.powf(2.0);
        assert_eq!(r.inv_freq(9)[1], 1.0 / (base as f32).powf(0.5));
    }

    /// Phi-3-vision-128k's `su`: short factors up to `original_max_position_embeddings`,
    /// long ones beyond, attention factor `sqrt(1 + ln(32) / ln(4096))`.
    #[test]
    fn su_scaling_picks_factors_by_length() {
        let p = Path::new("config.json");
        let cfg = json!({"rope_theta": 10000.0, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "su", "short_factor": [1.0, 2.0], "long_factor": [3.0, 4.0]}});
        let r = RopeConfig::from_hf(&cfg, 4, 131072, p).unwrap();
        let f = (1.0f64 + 32f64.ln() / 4096f64.ln()).sqrt();
        assert!((r.attention_factor() as f64 - f).abs() < 1e-6);
        let base_1 = 1.0 / 10000f32.powf(0.5);
        assert_eq!(
            r.inv_freq(4096),
            vec![1.0, 1.0 / (2.0 * 10000f32.powf(0.5))]
        );
        assert_eq!(
            r.inv_freq(4097),
            vec![1.0 / 3.0, 1.0 / (4.0 * 10000f32.powf(0.5))]
        );
        assert!(r.inv_freq(4097)[1] < base_1);
        let short = json!({"max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}});
        let err = RopeConfig::from_hf(&short, 4, 4096, p).unwrap_err();
        assert!(err.to_string().contains("short_factor` needs 2 numbers"));
        // No extension past the pretrained context: no attention scaling.
        let r = RopeConfig::from_hf(&cfg, 4, 4096, p).unwrap();
        assert_eq!(r.attention_factor(), 1.0);
    }
}
