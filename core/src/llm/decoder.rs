//! Llama-style decoder (`modeling_llama.py`, `modeling_mistral.py`, `modeling_qwen2.py`):
//! pre-norm layers of GQA self-attention with RoPE and a SwiGLU MLP, a final RMSNorm, and the LM
//! head (or the tied embedding). Module paths are the HF ones under the LLM's prefix:
//! `model.embed_tokens`, `model.layers.N.{self_attn,mlp,input_layernorm,post_attention_layernorm}`,
//! `model.norm`, `lm_head`. Models with other module names or fused projections (InternLM2's
//! `attention.wqkv`, `feed_forward.w1`, `attention_norm`, `tok_embeddings`, `output`; Phi-3's
//! `qkv_proj` and `gate_up_proj`) load through [`CausalLm::load_named`] with their [`LlmNames`].

use crate::error::Result;
use crate::llm::config::TextConfig;
use crate::llm::kv_cache::{KvCache, LayerKv};
use crate::nn::mlp::MlpLayout;
use crate::nn::recompute::Stack;
use crate::nn::{
    Attention, AttentionConfig, AttentionMask, Embedding, GatedMlp, Linear, PartPlan, QkvLayout,
    RmsNorm, RotaryEmbedding,
};
use crate::runtime::Tokens;
use crate::weights::Vars;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use std::rc::Rc;

/// Checkpoint names of a decoder's modules (`model.layers.N` and `model.norm` for every family
/// but QWen's `transformer.h.N` and `transformer.ln_f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmNames {
    /// The decoder's module (`model`), holding the embedding, the layers and the final norm.
    pub model: &'static str,
    /// The layer list under `model` (`layers`).
    pub layers: &'static str,
    /// The final norm under `model` (`norm`).
    pub norm: &'static str,
    /// Under `model.`.
    pub embed_tokens: &'static str,
    /// At the root, next to `model`.
    pub lm_head: &'static str,
    pub self_attn: &'static str,
    pub qkv: QkvLayout,
    pub o_proj: &'static str,
    pub mlp: &'static str,
    /// Gate, up, down.
    pub mlp_proj: [&'static str; 3],
    /// Separate gate and up projections, or one fused linear.
    pub mlp_layout: MlpLayout,
    pub input_layernorm: &'static str,
    pub post_attention_layernorm: &'static str,
}

impl LlmNames {
    /// Llama, Mistral, Qwen2.
    pub const LLAMA: LlmNames = LlmNames {
        model: "model",
        layers: "layers",
        norm: "norm",
        embed_tokens: "embed_tokens",
        lm_head: "lm_head",
        self_attn: "self_attn",
        qkv: QkvLayout::Separate,
        o_proj: "o_proj",
        mlp: "mlp",
        mlp_proj: crate::nn::mlp::GATE_UP_DOWN,
        mlp_layout: MlpLayout::Separate,
        input_layernorm: "input_layernorm",
        post_attention_layernorm: "post_attention_layernorm",
    };

    /// InternLM2 (`modeling_internlm2.py`): grouped fused `wqkv`.
    pub const INTERNLM2: LlmNames = LlmNames {
        model: "model",
        layers: "layers",
        norm: "norm",
        embed_tokens: "tok_embeddings",
        lm_head: "output",
        self_attn: "attention",
        qkv: QkvLayout::Grouped { name: "wqkv" },
        o_proj: "wo",
        mlp: "feed_forward",
        mlp_proj: ["w1", "w3", "w2"],
        mlp_layout: MlpLayout::Separate,
        input_layernorm: "attention_norm",
        post_attention_layernorm: "ffn_norm",
    };

    /// Phi-3 (`modeling_phi3.py`, Phi-3-V's `modeling_phi3_v.py`): fused `qkv_proj` (all q
    /// heads, then k, then v) and `gate_up_proj` (gate half, then up half).
    pub const PHI3: LlmNames = LlmNames {
        model: "model",
        layers: "layers",
        norm: "norm",
        embed_tokens: "embed_tokens",
        lm_head: "lm_head",
        self_attn: "self_attn",
        qkv: QkvLayout::Concat { name: "qkv_proj" },
        o_proj: "o_proj",
        mlp: "mlp",
        mlp_proj: ["gate_up_proj", "gate_up_proj", "down_proj"],
        mlp_layout: MlpLayout::FusedGateUp {
            name: "gate_up_proj",
        },
        input_layernorm: "input_layernorm",
        post_attention_layernorm: "post_attention_layernorm",
    };

    /// QWen (Qwen-VL-Chat's `modeling_qwen.py`): `transformer.{wte,h.N,ln_f}`, a contiguous
    /// q|k|v `c_attn` and `mlp.c_proj(w1(x) * silu(w2(x)))` (so `w2` is the gate).
    pub const QWEN: LlmNames = LlmNames {
        model: "transformer",
        layers: "h",
        norm: "ln_f",
        embed_tokens: "wte",
        lm_head: "lm_head",
        self_attn: "attn",
        qkv: QkvLayout::Concat { name: "c_attn" },
        o_proj: "c_proj",
        mlp: "mlp",
        mlp_proj: ["w2", "w1", "c_proj"],
        mlp_layout: MlpLayout::Separate,
        input_layernorm: "ln_1",
        post_attention_layernorm: "ln_2",
    };
}

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: GatedMlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Loads one layer under the module names `n`.
    pub fn load(
        vars: &Vars<'_>,
        c: &TextConfig,
        n: &LlmNames,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let attn = AttentionConfig {
            hidden: c.hidden_size,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_kv_heads(),
            head_dim: c.head_dim(),
            qkv_bias: c.qkv_bias(),
            o_bias: c.o_bias(),
            o_name: n.o_proj,
            scale: None,
        };
        let eps = c.rms_norm_eps;
        Ok(DecoderLayer {
            self_attn: Attention::load_with_layout(
                &vars.pp(n.self_attn),
                &attn,
                n.qkv,
                plan,
                device,
            )?,
            mlp: GatedMlp::load_with_layout(
                &vars.pp(n.mlp),
                n.mlp_layout,
                n.mlp_proj,
                c.hidden_size,
                c.intermediate_size,
                c.mlp_bias,
                c.hidden_act,
                plan,
                device,
            )?,
            input_layernorm: RmsNorm::load(
                &vars.pp(n.input_layernorm),
                c.hidden_size,
                eps,
                plan.trainable,
                device,
            )?,
            post_attention_layernorm: RmsNorm::load(
                &vars.pp(n.post_attention_layernorm),
                c.hidden_size,
                eps,
                plan.trainable,
                device,
            )?,
        })
    }

    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 3>, &Tensor<B, 3>),
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        self.forward_scaled(x, rope, mask, None)
    }

    /// [`Self::forward`] with a per-position query scale (see [`Attention::forward_scaled`]).
    pub fn forward_scaled(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 3>, &Tensor<B, 3>),
        mask: &AttentionMask<B>,
        query_scale: Option<&Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, rope, mask, query_scale, None, None)
    }

    /// [`Self::forward`] where the linears' partial adapters (XComposer2's PLoRA) update the
    /// rows `row_mask` (`[B, T, 1]`, 0/1) selects.
    pub fn forward_masked(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 3>, &Tensor<B, 3>),
        mask: &AttentionMask<B>,
        row_mask: Option<&Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, rope, mask, None, row_mask, None)
    }

    /// The forward with every option: a query scale, a row mask for partial adapters, and a
    /// KV cache the tokens follow and extend.
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 3>, &Tensor<B, 3>),
        mask: &AttentionMask<B>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&Tensor<B, 3>>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 3> {
        let normed = self.input_layernorm.forward(x.clone());
        let attn = match cache {
            Some(cache) => self.self_attn.forward_cached(
                normed,
                Some(rope),
                mask,
                query_scale,
                row_mask,
                cache,
            ),
            None => self
                .self_attn
                .forward_with(normed, Some(rope), mask, query_scale, row_mask),
        };
        let h = x + attn;
        h.clone()
            + self
                .mlp
                .forward_masked(self.post_attention_layernorm.forward(h), row_mask)
    }
}

#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub rope: RotaryEmbedding,
    #[module(skip)]
    pub window: Option<usize>,
}

impl<B: Backend> CausalLm<B> {
    /// Loads `<vars>.model.*` and `<vars>.lm_head` (absent when embeddings are tied).
    pub fn load(
        vars: &Vars<'_>,
        c: &TextConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::load_named(vars, c, &LlmNames::LLAMA, plan, device)
    }

    /// [`Self::load`] with the module names `n`.
    pub fn load_named(
        vars: &Vars<'_>,
        c: &TextConfig,
        n: &LlmNames,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let m = vars.pp(n.model);
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::load(&m.pp(n.layers).pp(i), c, n, plan, device))
            .collect::<Result<Vec<_>>>()?;
        // Some tied checkpoints still store the head's weight; only the embedding is used then.
        let head_weight = format!("{}.weight", n.lm_head);
        let lm_head = if c.tie_word_embeddings {
            if vars.contains(&head_weight) {
                vars.tensor::<B, 2>(&head_weight, [c.vocab_size, c.hidden_size], device)?;
            }
            None
        } else {
            Some(Linear::load(
                &vars.pp(n.lm_head),
                c.hidden_size,
                c.vocab_size,
                false,
                &plan.for_output_head(),
                device,
            )?)
        };
        Ok(CausalLm {
            embed_tokens: Embedding::load(
                &m.pp(n.embed_tokens),
                c.vocab_size,
                c.hidden_size,
                plan.trainable,
                device,
            )?,
            layers,
            norm: RmsNorm::load(
                &m.pp(n.norm),
                c.hidden_size,
                c.rms_norm_eps,
                plan.trainable,
                device,
            )?,
            lm_head,
            rope: RotaryEmbedding::new(c.rope().clone()),
            window: c.window(),
        })
    }

    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_tokens.forward(ids)
    }

    /// Logits `[B, T, V]` for input embeddings `[B, T, hidden]`. `positions` and
    /// `attention_mask` are row-major `[B, T]` host data.
    pub fn forward_embeds(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        attention_mask: Option<&[i64]>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = embeds.dims();
        let (cos, sin) = self.rope.cos_sin::<B>(positions, b, t, &embeds.device());
        self.forward_embeds_rope(embeds, cos, sin, attention_mask)
    }

    /// [`Self::forward_embeds`] with the rotary tables given: `cos`/`sin` `[B, T, head_dim]`,
    /// for models whose positions are not one index per token (Qwen2-VL's multimodal RoPE).
    pub fn forward_embeds_rope(
        &self,
        embeds: Tensor<B, 3>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        attention_mask: Option<&[i64]>,
    ) -> Tensor<B, 3> {
        self.forward_embeds_scaled(embeds, cos, sin, attention_mask, None)
    }

    /// [`Self::forward_embeds_rope`] with the queries of every layer multiplied by a
    /// per-position `query_scale` `[1, 1, T, 1]` after RoPE (QWen's log-scaled attention).
    pub fn forward_embeds_scaled(
        &self,
        embeds: Tensor<B, 3>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        attention_mask: Option<&[i64]>,
        query_scale: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let h = self.run(
            embeds,
            (cos, sin),
            attention_mask,
            query_scale.as_ref(),
            None,
            None,
        );
        self.head(h)
    }

    /// [`Self::forward_embeds`] where the layers' partial adapters (XComposer2's PLoRA) update
    /// the rows `row_mask` (`[B, T]` host data, nonzero = selected) selects.
    pub fn forward_embeds_masked(
        &self,
        embeds: Tensor<B, 3>,
        positions: &[i64],
        attention_mask: Option<&[i64]>,
        row_mask: &[i64],
    ) -> Tensor<B, 3> {
        let [b, t, _] = embeds.dims();
        let rope = self.rope.cos_sin::<B>(positions, b, t, &embeds.device());
        let h = self.run(embeds, rope, attention_mask, None, Some(row_mask), None);
        self.head(h)
    }

    /// Runs `embeds` `[B, T, hidden]` after the tokens in `cache` and appends them to it;
    /// the last position's logits `[B, V]` (the LM head runs on that position only).
    /// `attention_mask` is the new tokens' `[B, T]` (`None`: all real); `cos`/`sin` `[B, T,
    /// head_dim]` their rotary tables; `query_scale` and `row_mask` as in
    /// [`Self::forward_embeds_scaled`] and [`Self::forward_embeds_masked`], for the new tokens.
    /// The caller keeps [`KvCache::next_position`] up to date ([`Self::prefill`] and
    /// [`Self::decode`] do).
    pub fn forward_cached(
        &self,
        embeds: Tensor<B, 3>,
        rope: (Tensor<B, 3>, Tensor<B, 3>),
        attention_mask: Option<&[i64]>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&[i64]>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 2> {
        let h = self.run(
            embeds,
            rope,
            attention_mask,
            query_scale,
            row_mask,
            Some(cache),
        );
        let [b, t, d] = h.dims();
        let last = self.head(h.slice([0..b, t - 1..t, 0..d]));
        let v = last.dims()[2];
        last.reshape([b, v])
    }

    /// Runs a prompt's embeddings into a new cache: `rope` holds the tables of `positions`
    /// (row-major `[B, T]`, or `[k, B, T]` for multi-axis positions such as M-RoPE's), and each
    /// row's next token takes one past its largest; `attention_mask`, `query_scale` and
    /// `row_mask` as in [`Self::forward_cached`]. The last position's logits `[B, V]` and the
    /// cache.
    pub fn prefill(
        &self,
        embeds: Tensor<B, 3>,
        rope: (Tensor<B, 3>, Tensor<B, 3>),
        positions: &[i64],
        attention_mask: Option<&[i64]>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&[i64]>,
    ) -> (Tensor<B, 2>, KvCache<B>) {
        let [b, t, _] = embeds.dims();
        let mut cache = KvCache::new(self.layers.len(), b);
        let logits = self.forward_cached(
            embeds,
            rope,
            attention_mask,
            query_scale,
            row_mask,
            &mut cache,
        );
        cache.continue_after(positions, t);
        (logits, cache)
    }

    /// [`Self::prefill`] of a batch's embeddings at positions 0..T-1 with its attention mask.
    pub fn prefill_tokens(
        &self,
        embeds: Tensor<B, 3>,
        tokens: &Tokens,
    ) -> (Tensor<B, 2>, KvCache<B>) {
        let positions = tokens.default_positions();
        let (b, t) = (tokens.batch(), tokens.seq());
        let rope = self.rope.cos_sin::<B>(&positions, b, t, &embeds.device());
        let mask = tokens.attention_mask.as_ref().map(|m| m.data.as_slice());
        self.prefill(embeds, rope, &positions, mask, None, None)
    }

    /// Runs one new token per row (`ids`, `[B]`) at the rows' next positions; its logits
    /// `[B, V]`.
    pub fn decode(&self, ids: &[i64], cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let device = self.embed_tokens.weight.device();
        let b = ids.len();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, 1]), &device);
        let positions = cache.next_position.clone();
        let rope = self.rope.cos_sin::<B>(&positions, b, 1, &device);
        let logits = self.forward_cached(self.embed(ids), rope, None, None, None, cache);
        cache.next_position.iter_mut().for_each(|p| *p += 1);
        logits
    }

    /// The layers and the final norm over `embeds`, with every option of
    /// [`DecoderLayer::forward_with`]; hidden states `[B, T, hidden]`.
    fn run(
        &self,
        embeds: Tensor<B, 3>,
        (cos, sin): (Tensor<B, 3>, Tensor<B, 3>),
        attention_mask: Option<&[i64]>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&[i64]>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = embeds.dims();
        let device = embeds.device();
        let dtype = embeds.dtype();
        let (cos, sin) = (cos.cast(dtype), sin.cast(dtype));
        let rows = row_mask.map(|m| {
            let rows: Vec<f32> = m.iter().map(|&m| f32::from(u8::from(m != 0))).collect();
            Tensor::<B, 3>::from_data(TensorData::new(rows, [b, t, 1]), &device)
        });
        let mut mask = match cache.as_deref_mut() {
            Some(cache) => {
                let past = cache.len;
                let all = cache.extend_mask(attention_mask, t);
                AttentionMask::causal_after(past, Some(all), self.window, b, t, &device)
            }
            None => AttentionMask::causal(attention_mask, self.window, b, t, &device),
        };
        mask.bias = mask.bias.map(|m| m.cast(dtype));
        if let Some(first) = self.layers.first() {
            mask = mask.for_heads(first.self_attn.num_heads);
        }
        let h = match cache {
            Some(cache) => {
                let mut h = embeds;
                for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    let rope = (&cos, &sin);
                    h = layer.forward_with(h, rope, &mask, query_scale, rows.as_ref(), Some(kv));
                }
                h
            }
            None => {
                // Through a stack: layer-level checkpointing when the trainer asks for it.
                let ctx = Rc::new((cos, sin, mask, query_scale.cloned(), rows));
                let mut stack = Stack::new(embeds);
                for layer in &self.layers {
                    let ctx = ctx.clone();
                    stack.layer(layer, Vec::new(), move |layer, x, _| {
                        let (cos, sin, mask, scale, rows) = &*ctx;
                        layer.forward_with(x, (cos, sin), mask, scale.as_ref(), rows.as_ref(), None)
                    });
                }
                stack.into_hidden()
            }
        };
        self.norm.forward(h)
    }

    /// Logits from final hidden states.
    fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => h.matmul(self.embed_tokens.weight.val().transpose().unsqueeze::<3>()),
        }
    }
}
