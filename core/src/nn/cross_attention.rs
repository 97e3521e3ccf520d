//! Cross-attention: queries from the token stream, keys and values from another sequence
//! (e.g. projected vision features), as Llama-3.2-Vision's `MllamaTextCrossAttention`
//! (`modeling_mllama.py`) computes it: separate `q_proj`/`k_proj`/`v_proj`/`o_proj` (the
//! projections of [`Attention`], loaded the same way, so LoRA targets them by the same names),
//! optional per-head RMSNorm of the queries and keys (`q_norm`, `k_norm`, after the head split,
//! before the scores), grouped-query heads, no rotary embedding, an additive mask.

use crate::error::{Error, Result};
use crate::nn::attention::{Attention, AttentionConfig, QkvProj, repeat_kv};
use crate::nn::norm::RmsNorm;
use crate::nn::plan::PartPlan;
use crate::weights::Vars;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    /// The four projections (separate q/k/v); its forward is not used.
    pub attn: Attention<B>,
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
}

impl<B: Backend> CrossAttention<B> {
    /// Loads `q_proj`, `k_proj`, `v_proj`, `o_proj` under `vars` (all reading `c.hidden`
    /// features: the key/value sequence has the model's width), and with `qk_norm_eps` the
    /// `q_norm` / `k_norm` weights (`[head_dim]`).
    pub fn load(
        vars: &Vars<'_>,
        c: &AttentionConfig,
        qk_norm_eps: Option<f64>,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let attn = Attention::load(vars, c, plan, device)?;
        let norm = |name: &str, eps: f64| {
            RmsNorm::load(&vars.pp(name), c.head_dim, eps, plan.trainable, device)
        };
        Ok(CrossAttention {
            attn,
            q_norm: qk_norm_eps.map(|e| norm("q_norm", e)).transpose()?,
            k_norm: qk_norm_eps.map(|e| norm("k_norm", e)).transpose()?,
        })
    }

    /// Keys and values of `states` `[B, S, hidden]`, each `[B, KV, S, D]` (keys normed).
    pub fn keys_values(&self, states: Tensor<B, 3>) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let p = self.projections()?;
        let [b, s, _] = states.dims();
        let (kv, d) = (self.attn.num_kv_heads, self.attn.head_dim);
        let k = p
            .k_proj
            .forward(states.clone())
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let v = p
            .v_proj
            .forward(states)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let k = match &self.k_norm {
            Some(n) => n.forward(k),
            None => k,
        };
        Ok((k, v))
    }

    /// `x` `[B, T, hidden]` attending to `states` `[B, S, hidden]`; `bias` `[B, 1 or heads, T,
    /// S]` is added to the scores (0 = attend, very negative = masked).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        states: Tensor<B, 3>,
        bias: Option<&Tensor<B, 4>>,
    ) -> Result<Tensor<B, 3>> {
        let (k, v) = self.keys_values(states)?;
        self.forward_kv(x, k, v, bias)
    }

    /// [`Self::forward`] with the keys and values already computed ([`Self::keys_values`]:
    /// decoding computes them once for the whole reply).
    pub fn forward_kv(
        &self,
        x: Tensor<B, 3>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        bias: Option<&Tensor<B, 4>>,
    ) -> Result<Tensor<B, 3>> {
        let p = self.projections()?;
        let [b, t, _] = x.dims();
        let (h, d) = (self.attn.num_heads, self.attn.head_dim);
        let q = p.q_proj.forward(x).reshape([b, t, h, d]).swap_dims(1, 2);
        let q = match &self.q_norm {
            Some(n) => n.forward(q),
            None => q,
        };
        let s = k.dims()[2];
        let groups = h / self.attn.num_kv_heads;
        let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups));
        let bias = bias.map(|m| m.clone().cast(q.dtype()).expand([b, h, t, s]));
        let options = AttentionModuleOptions {
            scale: self.attn.scale,
            softcap: None,
            is_causal: false,
        };
        let y = attention(q, k, v, None, bias, options)
            .swap_dims(1, 2)
            .reshape([b, t, h * d]);
        Ok(self.attn.o_proj.forward(y))
    }

    fn projections(&self) -> Result<&crate::nn::attention::SeparateQkv<B>> {
        match &self.attn.qkv {
            QkvProj::Separate(p) => Ok(p),
            QkvProj::Fused(l) => Err(Error::Unsupported(format!(
                "cross-attention {} has a fused q/k/v projection",
                l.path
            ))),
        }
    }
}
