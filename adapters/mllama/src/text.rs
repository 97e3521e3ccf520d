//! `MllamaForCausalLM`'s decoder (`MllamaTextModel` + `lm_head`, `modeling_mllama.py`): Llama 3.1
//! decoder layers (core's [`DecoderLayer`] under the Llama names) with, at
//! `cross_attention_layers`, `MllamaCrossAttentionDecoderLayer`s: core's [`CrossAttention`]
//! onto the projected vision tokens with `tanh(cross_attn_attn_gate)` on its output and
//! `tanh(cross_attn_mlp_gate)` on the MLP's, the MLP output of rows that see no vision token
//! zeroed first (`full_text_row_masked_out_mask`). Without vision tokens (a text-only batch) the
//! cross-attention layers are skipped, as HF does. The embedding has `vocab_size + 8` rows (the
//! image token and spares lie past the LM head).

use crate::config::MllamaTextConfig;
use lmms_core::burn;
use lmms_core::burn::module::{Module, Param};
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Int, Tensor, TensorData};
use lmms_core::error::{Error, Result};
use lmms_core::llm::{CrossState, DecoderLayer, KvCache, LlmNames};
use lmms_core::nn::cross_attention::CrossAttention;
use lmms_core::nn::mlp::GATE_UP_DOWN;
use lmms_core::nn::recompute::Stack;
use lmms_core::nn::{
    AttentionConfig, AttentionMask, Embedding, GatedMlp, Linear, PartPlan, RmsNorm, RotaryEmbedding,
};
use lmms_core::weights::Vars;
use std::rc::Rc;

/// What the cross-attention layers attend to, for one batch.
pub struct CrossInputs<B: Backend> {
    /// Projected vision tokens `[B, S, hidden]`.
    pub states: Tensor<B, 3>,
    /// Additive mask `[B, 1, T, S]` (HF's prepared `cross_attention_mask`), if any.
    pub bias: Option<Tensor<B, 4>>,
    /// `full_text_row_masked_out_mask` `[B, T, 1]`: 0 on rows that see no vision token.
    pub rows: Option<Tensor<B, 3>>,
}

#[derive(Module, Debug)]
pub struct CrossAttentionLayer<B: Backend> {
    pub cross_attn: CrossAttention<B>,
    pub cross_attn_attn_gate: Param<Tensor<B, 1>>,
    pub mlp: GatedMlp<B>,
    pub cross_attn_mlp_gate: Param<Tensor<B, 1>>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> CrossAttentionLayer<B> {
    fn load(
        vars: &Vars<'_>,
        c: &MllamaTextConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let l = &c.llm;
        let attn = AttentionConfig {
            hidden: l.hidden_size,
            num_heads: l.num_attention_heads,
            num_kv_heads: l.num_kv_heads(),
            head_dim: l.head_dim(),
            qkv_bias: false,
            o_bias: false,
            o_name: "o_proj",
            scale: None,
        };
        let eps = l.rms_norm_eps;
        let norm =
            |name: &str| RmsNorm::load(&vars.pp(name), l.hidden_size, eps, plan.trainable, device);
        Ok(CrossAttentionLayer {
            cross_attn: CrossAttention::load(
                &vars.pp("cross_attn"),
                &attn,
                Some(eps),
                plan,
                device,
            )?,
            cross_attn_attn_gate: vars.param(
                "cross_attn_attn_gate",
                [1],
                device,
                plan.trainable,
            )?,
            mlp: GatedMlp::load(
                &vars.pp("mlp"),
                GATE_UP_DOWN,
                l.hidden_size,
                l.intermediate_size,
                false,
                l.hidden_act,
                plan,
                device,
            )?,
            cross_attn_mlp_gate: vars.param("cross_attn_mlp_gate", [1], device, plan.trainable)?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, cross: &CrossInputs<B>) -> Result<Tensor<B, 3>> {
        let (k, v) = self.cross_attn.keys_values(cross.states.clone())?;
        self.forward_kv(x, k, v, cross.bias.as_ref(), cross.rows.as_ref())
    }

    /// [`Self::forward`] with the attended sequence's keys and values given, the bias `[B, 1,
    /// T, S]` and the rows that see something `[B, T, 1]`.
    fn forward_kv(
        &self,
        x: Tensor<B, 3>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        bias: Option<&Tensor<B, 4>>,
        rows: Option<&Tensor<B, 3>>,
    ) -> Result<Tensor<B, 3>> {
        let dtype = x.dtype();
        let gate = |g: &Param<Tensor<B, 1>>| g.val().tanh().cast(dtype).reshape([1, 1, 1]);
        let attn =
            self.cross_attn
                .forward_kv(self.input_layernorm.forward(x.clone()), k, v, bias)?;
        let h = x + gate(&self.cross_attn_attn_gate) * attn;
        let mut m = self
            .mlp
            .forward(self.post_attention_layernorm.forward(h.clone()));
        if let Some(rows) = rows {
            m = rows.clone().cast(dtype) * m;
        }
        Ok(h + gate(&self.cross_attn_mlp_gate) * m)
    }
}

/// A decoder layer: Llama self-attention or gated cross-attention.
// One per layer: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TextLayer<B: Backend> {
    SelfAttention(DecoderLayer<B>),
    CrossAttention(CrossAttentionLayer<B>),
}

#[derive(Module, Debug)]
pub struct MllamaTextModel<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<TextLayer<B>>,
    pub norm: RmsNorm<B>,
    pub lm_head: Linear<B>,
    #[module(skip)]
    pub rope: RotaryEmbedding,
    #[module(skip)]
    pub num_heads: usize,
}

impl<B: Backend> MllamaTextModel<B> {
    /// Loads `<vars>.model.*` and `<vars>.lm_head` (`vars` = `language_model`).
    pub fn load(
        vars: &Vars<'_>,
        c: &MllamaTextConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let l = &c.llm;
        let m = vars.pp("model");
        let layers = (0..l.num_hidden_layers)
            .map(|i| {
                let v = m.pp("layers").pp(i);
                Ok(if c.cross_attention_layers.contains(&i) {
                    TextLayer::CrossAttention(CrossAttentionLayer::load(&v, c, plan, device)?)
                } else {
                    TextLayer::SelfAttention(DecoderLayer::load(
                        &v,
                        l,
                        &LlmNames::LLAMA,
                        plan,
                        device,
                    )?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MllamaTextModel {
            embed_tokens: Embedding::load(
                &m.pp("embed_tokens"),
                l.vocab_size + 8,
                l.hidden_size,
                plan.trainable,
                device,
            )?,
            layers,
            norm: RmsNorm::load(
                &m.pp("norm"),
                l.hidden_size,
                l.rms_norm_eps,
                plan.trainable,
                device,
            )?,
            lm_head: Linear::load(
                &vars.pp("lm_head"),
                l.hidden_size,
                l.vocab_size,
                false,
                &plan.for_output_head(),
                device,
            )?,
            rope: RotaryEmbedding::new(l.rope().clone()),
            num_heads: l.num_attention_heads,
        })
    }

    /// `[B, T]` ids -> `[B, T, hidden]`.
    pub fn embed(&self, ids: &[i64], b: usize, t: usize, device: &B::Device) -> Tensor<B, 3> {
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, t]), device);
        self.embed_tokens.forward(ids)
    }

    /// Logits `[B, T, V]` for embeddings `[B, T, hidden]` at `positions` (row-major `[B, T]`),
    /// with the padding `attention_mask` and, when there are vision tokens, `cross`.
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        attention_mask: Option<&[i64]>,
        cross: Option<&CrossInputs<B>>,
    ) -> Result<Tensor<B, 3>> {
        let [b, t, _] = embeds.dims();
        let device = embeds.device();
        let dtype = embeds.dtype();
        let (cos, sin) = self.rope.cos_sin::<B>(positions, b, t, &device);
        let (cos, sin) = (cos.cast(dtype), sin.cast(dtype));
        let mut mask = AttentionMask::causal(attention_mask, None, b, t, &device);
        mask.bias = mask.bias.map(|m| m.cast(dtype));
        let mask = mask.for_heads(self.num_heads);
        // Through a stack: layer-level checkpointing when the trainer asks for it (the vision
        // states enter each cross-attention layer as an extra input, so their gradient reaches
        // the projector).
        let ctx = Rc::new((cos, sin, mask));
        let mut stack = Stack::new(embeds);
        for layer in &self.layers {
            match (layer, cross) {
                (TextLayer::SelfAttention(l), _) => {
                    let ctx = ctx.clone();
                    stack.layer(l, Vec::new(), move |l, x, _| {
                        let (cos, sin, mask) = &*ctx;
                        l.forward(x, (cos, sin), mask)
                    });
                }
                (TextLayer::CrossAttention(l), Some(cross)) => {
                    let (bias, rows) = (cross.bias.clone(), cross.rows.clone());
                    stack.try_layer(l, vec![cross.states.clone()], move |l, x, states| {
                        let cross = CrossInputs {
                            states: states[0].clone(),
                            bias: bias.clone(),
                            rows: rows.clone(),
                        };
                        l.forward(x, &cross)
                    })?;
                }
                // No vision tokens: HF skips the layer.
                (TextLayer::CrossAttention(_), None) => {}
            }
        }
        let h = stack.into_hidden();
        Ok(self.lm_head.forward(self.norm.forward(h)))
    }

    /// An empty KV cache for `batch` rows (one slot per layer; a cross-attention layer's holds
    /// the vision tokens' keys and values once the prompt ran).
    pub fn new_cache(&self, batch: usize) -> KvCache<B> {
        KvCache::new(self.layers.len(), batch)
    }

    /// Runs a prompt into an empty `cache`: the vision tokens' keys and values are computed
    /// once per cross-attention layer, and the prompt's last cross-attention row is kept for
    /// the tokens to come. The last position's logits `[B, V]`.
    pub fn prefill(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        attention_mask: Option<&[i64]>,
        cross: Option<&CrossInputs<B>>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>> {
        let [b, t, _] = embeds.dims();
        if let Some(cross) = cross {
            let last_bias = cross.bias.clone().map(|m| {
                let [b, h, t, s] = m.dims();
                m.slice([0..b, 0..h, t - 1..t, 0..s])
            });
            let last_rows = cross.rows.clone().map(|r| {
                let [b, t, one] = r.dims();
                r.slice([0..b, t - 1..t, 0..one])
            });
            for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
                if let TextLayer::CrossAttention(l) = layer {
                    let (k, v) = l.cross_attn.keys_values(cross.states.clone())?;
                    kv.k = Some(k);
                    kv.v = Some(v);
                }
            }
            cache.cross = Some(CrossState {
                bias: last_bias,
                rows: last_rows,
            });
        }
        let device = embeds.device();
        let rope = self.rope.cos_sin::<B>(positions, b, t, &device);
        let bias = cross.and_then(|c| c.bias.clone());
        let rows = cross.and_then(|c| c.rows.clone());
        let logits = self.run_cached(embeds, rope, attention_mask, bias, rows, cache)?;
        cache.continue_after(positions, t);
        Ok(logits)
    }

    /// One new token per row after `cache`; its logits `[B, V]`.
    pub fn decode(
        &self,
        ids: &[i64],
        cache: &mut KvCache<B>,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let b = ids.len();
        let embeds = self.embed(ids, b, 1, device);
        let positions = cache.next_position.clone();
        let rope = self.rope.cos_sin::<B>(&positions, b, 1, device);
        let (bias, rows) = match &cache.cross {
            Some(c) => (c.bias.clone(), c.rows.clone()),
            None => (None, None),
        };
        let logits = self.run_cached(embeds, rope, None, bias, rows, cache)?;
        cache.next_position.iter_mut().for_each(|p| *p += 1);
        Ok(logits)
    }

    /// The layers over new tokens against `cache` (self-attention keys appended, the
    /// cross-attention layers' keys read; skipped when the cache has no vision tokens), then
    /// the head on the last position.
    fn run_cached(
        &self,
        embeds: Tensor<B, 3>,
        (cos, sin): (Tensor<B, 3>, Tensor<B, 3>),
        attention_mask: Option<&[i64]>,
        cross_bias: Option<Tensor<B, 4>>,
        cross_rows: Option<Tensor<B, 3>>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>> {
        let [b, t, _] = embeds.dims();
        let device = embeds.device();
        let dtype = embeds.dtype();
        let (cos, sin) = (cos.cast(dtype), sin.cast(dtype));
        let past = cache.len;
        let all = cache.extend_mask(attention_mask, t);
        let mut mask = AttentionMask::causal_after(past, Some(all), None, b, t, &device);
        mask.bias = mask.bias.map(|m| m.cast(dtype));
        let mask = mask.for_heads(self.num_heads);
        let sees_vision = cache.cross.is_some();
        let mut h = embeds;
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            h = match layer {
                TextLayer::SelfAttention(l) => {
                    l.forward_with(h, (&cos, &sin), &mask, None, None, Some(kv))
                }
                TextLayer::CrossAttention(l) if sees_vision => {
                    let (Some(k), Some(v)) = (kv.k.clone(), kv.v.clone()) else {
                        return Err(Error::Batch(
                            "the KV cache has no vision keys for a cross-attention layer".into(),
                        ));
                    };
                    l.forward_kv(h, k, v, cross_bias.as_ref(), cross_rows.as_ref())?
                }
                TextLayer::CrossAttention(_) => h,
            };
        }
        let h = self.norm.forward(h);
        let [_, _, d] = h.dims();
        let last = self.lm_head.forward(h.slice([0..b, t - 1..t, 0..d]));
        let v = last.dims()[2];
        Ok(last.reshape([b, v]))
    }
}

/// The cross-attention mask and row mask of a batch, from `cross_attention_mask`
/// `[B, T, images, tiles]` (1 = the token sees the tile) as HF's `_prepare_cross_attention_mask`
/// builds them for `tokens_per_tile` vision tokens per tile: the mask repeated over each tile's
/// tokens (0 -> masked); rows that see nothing get no mask at all (they attend to every vision
/// token) and a 0 in the row mask. Host data: bias `[B, T, images * tiles * tokens_per_tile]`,
/// rows `[B, T]`.
pub fn cross_attention_bias(
    mask: &[i64],
    [b, t, images, tiles]: [usize; 4],
    tokens_per_tile: usize,
) -> (Vec<f32>, Vec<f32>) {
    const MASKED: f32 = -1e30;
    let s = images * tiles * tokens_per_tile;
    let mut bias = vec![0f32; b * t * s];
    let mut rows = vec![0f32; b * t];
    for (r, row_mask) in mask.chunks(images * tiles).enumerate() {
        if !row_mask.iter().any(|&m| m != 0) {
            continue;
        }
        rows[r] = 1.0;
        let out = &mut bias[r * s..(r + 1) * s];
        for (slot, &m) in row_mask.iter().enumerate() {
            if m == 0 {
                out[slot * tokens_per_tile..(slot + 1) * tokens_per_tile].fill(MASKED);
            }
        }
    }
    (bias, rows)
}

/// [`cross_attention_bias`] on the device: bias `[B, 1, T, S]` and rows `[B, T, 1]`.
pub fn cross_attention_tensors<B: Backend>(
    mask: &[i64],
    dims: [usize; 4],
    tokens_per_tile: usize,
    dtype: burn::tensor::DType,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, t, images, tiles] = dims;
    let s = images * tiles * tokens_per_tile;
    let (bias, rows) = cross_attention_bias(mask, dims, tokens_per_tile);
    (
        Tensor::<B, 4>::from_data(TensorData::new(bias, [b, 1, t, s]), device).cast(dtype),
        Tensor::<B, 3>::from_data(TensorData::new(rows, [b, t, 1]), device).cast(dtype),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_a_visible_tile_are_unmasked_and_flagged() {
        // B 1, T 3, 1 image of 2 tiles, 2 tokens per tile.
        let mask = [0, 0, 1, 0, 1, 1];
        let (bias, rows) = cross_attention_bias(&mask, [1, 3, 1, 2], 2);
        assert_eq!(rows, vec![0.0, 1.0, 1.0]);
        let m = -1e30f32;
        assert_eq!(
            bias,
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, m, m, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
