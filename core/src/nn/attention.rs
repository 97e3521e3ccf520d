//! Multi-head attention with grouped-query heads, optional rotary embeddings and an additive
//! mask, as in transformers' Llama/Qwen2/Mistral (`q_proj`/`k_proj`/`v_proj`/`o_proj`) and
//! CLIP/SigLIP (`out_proj`) attention. The q/k/v projections are separate or one fused linear
//! ([`QkvLayout`]: Phi-3's `qkv_proj`, InternLM2's grouped `wqkv`); a fused one is a single
//! linear, so LoRA on it is one adapter, as PEFT targets it. The score/softmax/value product is
//! burn's fused `module::attention`.

use crate::error::Result;
use crate::llm::kv_cache::LayerKv;
use crate::nn::linear::Linear;
use crate::nn::plan::PartPlan;
use crate::nn::rope::apply_rotary;
use crate::weights::Vars;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};

/// A large negative number added to masked scores; finite (unlike -inf) so a fully masked row
/// (a padding query) gives a harmless uniform distribution instead of NaN.
const MASKED: f32 = -1e30;

#[derive(Debug, Clone)]
pub struct AttentionConfig {
    pub hidden: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Name of the output projection in the checkpoint (`o_proj`, or CLIP's `out_proj`).
    pub o_name: &'static str,
    /// Scale of the scores (defaults to `1/sqrt(head_dim)`).
    pub scale: Option<f64>,
}

/// How q, k and v are projected from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QkvLayout {
    /// Three linears, `q_proj`, `k_proj`, `v_proj`.
    #[default]
    Separate,
    /// One linear (named `name`) whose output is all q heads, then all k heads, then all v
    /// heads (Phi-3's `qkv_proj`).
    Concat { name: &'static str },
    /// One linear (named `name`) whose output is laid out per kv-head group: for each kv head,
    /// its `num_heads / num_kv_heads` q heads, then its k head, then its v head (InternLM2's
    /// `wqkv`: `rearrange(qkv, "b q (h gs d) -> b q h gs d", gs=2 + groups)`).
    Grouped { name: &'static str },
}

impl QkvLayout {
    /// Splits a fused projection `[B, T, (H + 2 KV) * D]` into q `[B, T, H, D]`, k and v
    /// `[B, T, KV, D]` (q head `h * H / KV + i` belongs to kv head `h`, as [`repeat_kv`] assumes).
    pub fn split<B: Backend>(
        &self,
        y: Tensor<B, 3>,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t, _] = y.dims();
        let (h, kv, d) = (num_heads, num_kv_heads, head_dim);
        match self {
            QkvLayout::Grouped { .. } => {
                let g = h / kv;
                let y = y.reshape([b, t, kv, g + 2, d]);
                let q = y.clone().slice([0..b, 0..t, 0..kv, 0..g, 0..d]);
                let k = y.clone().slice([0..b, 0..t, 0..kv, g..g + 1, 0..d]);
                let v = y.slice([0..b, 0..t, 0..kv, g + 1..g + 2, 0..d]);
                (
                    q.reshape([b, t, h, d]),
                    k.reshape([b, t, kv, d]),
                    v.reshape([b, t, kv, d]),
                )
            }
            QkvLayout::Concat { .. } | QkvLayout::Separate => {
                let (q_end, k_end) = (h * d, (h + kv) * d);
                let q = y.clone().slice([0..b, 0..t, 0..q_end]);
                let k = y.clone().slice([0..b, 0..t, q_end..k_end]);
                let v = y.slice([0..b, 0..t, k_end..k_end + kv * d]);
                (
                    q.reshape([b, t, h, d]),
                    k.reshape([b, t, kv, d]),
                    v.reshape([b, t, kv, d]),
                )
            }
        }
    }
}

/// Separate q/k/v projections.
#[derive(Module, Debug)]
pub struct SeparateQkv<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
}

/// The q/k/v projection(s) of an [`Attention`], per [`QkvLayout`].
// One per attention layer: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum QkvProj<B: Backend> {
    Separate(SeparateQkv<B>),
    /// One fused linear; the layout is the attention's `layout`.
    Fused(Linear<B>),
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: QkvProj<B>,
    pub o_proj: Linear<B>,
    #[module(skip)]
    pub layout: QkvLayout,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
    #[module(skip)]
    pub scale: Option<f64>,
}

/// Additive attention bias `[B, 1, Tq, Tk]` (0 = attend, very negative = masked).
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    pub bias: Option<Tensor<B, 4>>,
}

impl<B: Backend> AttentionMask<B> {
    pub fn none() -> Self {
        AttentionMask { bias: None }
    }

    /// Causal mask combined with key padding: `attention_mask` is row-major `[B, T]` with 1 for
    /// real tokens and 0 for padding (HF's convention). With a sliding `window`, a query sees
    /// only the last `window` keys (itself included), as Mistral does.
    pub fn causal(
        attention_mask: Option<&[i64]>,
        window: Option<usize>,
        batch: usize,
        seq: usize,
        device: &B::Device,
    ) -> Self {
        Self::causal_after(0, attention_mask, window, batch, seq, device)
    }

    /// [`Self::causal`] for `seq` queries that follow `past` cached tokens: `[B, 1, seq,
    /// past + seq]`, `attention_mask` `[B, past + seq]`. `None` when nothing is masked (one new
    /// token per row and no padding or window edge), which spares the add.
    pub fn causal_after(
        past: usize,
        attention_mask: Option<&[i64]>,
        window: Option<usize>,
        batch: usize,
        seq: usize,
        device: &B::Device,
    ) -> Self {
        let keys = past + seq;
        let mut bias = vec![0f32; batch * seq * keys];
        let mut any = false;
        for b in 0..batch {
            for q in 0..seq {
                let at = past + q;
                for k in 0..keys {
                    let padded = attention_mask.is_some_and(|m| m[b * keys + k] == 0);
                    let outside = window.is_some_and(|w| at >= k + w);
                    if k > at || padded || outside {
                        bias[(b * seq + q) * keys + k] = MASKED;
                        any = true;
                    }
                }
            }
        }
        if !any && past > 0 {
            return AttentionMask { bias: None };
        }
        AttentionMask {
            bias: Some(Tensor::from_data(
                TensorData::new(bias, [batch, 1, seq, keys]),
                device,
            )),
        }
    }

    /// The bias materialised for `heads` heads, to build once and share across layers:
    /// burn-flex adds a stride-0 (expanded) operand element by element through a strided
    /// iterator, several times slower than a dense add.
    pub fn for_heads(self, heads: usize) -> Self {
        AttentionMask {
            bias: self.bias.map(|m| {
                if m.dims()[1] == 1 {
                    m.repeat_dim(1, heads)
                } else {
                    m
                }
            }),
        }
    }

    /// Key padding only (bidirectional attention).
    pub fn padding(attention_mask: &[i64], batch: usize, seq: usize, device: &B::Device) -> Self {
        let mut bias = vec![0f32; batch * seq];
        for (i, m) in attention_mask.iter().enumerate() {
            if *m == 0 {
                bias[i] = MASKED;
            }
        }
        let bias = Tensor::<B, 2>::from_data(TensorData::new(bias, [batch, seq]), device)
            .reshape([batch, 1, 1, seq])
            .expand([batch, 1, seq, seq]);
        AttentionMask { bias: Some(bias) }
    }
}

impl<B: Backend> Attention<B> {
    /// Loads separate `q_proj`/`k_proj`/`v_proj` projections.
    pub fn load(
        vars: &Vars<'_>,
        c: &AttentionConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::load_with_layout(vars, c, QkvLayout::Separate, plan, device)
    }

    /// Loads the q/k/v projection(s) in `layout`.
    pub fn load_with_layout(
        vars: &Vars<'_>,
        c: &AttentionConfig,
        layout: QkvLayout,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let q = c.num_heads * c.head_dim;
        let kv = c.num_kv_heads * c.head_dim;
        let bias = c.qkv_bias;
        let qkv = match layout {
            QkvLayout::Separate => QkvProj::Separate(SeparateQkv {
                q_proj: Linear::load(&vars.pp("q_proj"), c.hidden, q, bias, plan, device)?,
                k_proj: Linear::load(&vars.pp("k_proj"), c.hidden, kv, bias, plan, device)?,
                v_proj: Linear::load(&vars.pp("v_proj"), c.hidden, kv, bias, plan, device)?,
            }),
            QkvLayout::Concat { name } | QkvLayout::Grouped { name } => QkvProj::Fused(
                Linear::load(&vars.pp(name), c.hidden, q + 2 * kv, bias, plan, device)?,
            ),
        };
        Ok(Attention {
            qkv,
            o_proj: Linear::load(&vars.pp(c.o_name), q, c.hidden, c.o_bias, plan, device)?,
            layout,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: c.scale,
        })
    }

    /// `x: [B, T, hidden]`; `rope`: cos/sin `[B, T, head_dim]` to rotate q and k with.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: Option<(&Tensor<B, 3>, &Tensor<B, 3>)>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        self.forward_scaled(x, rope, mask, None)
    }

    /// [`Self::forward`] with the queries multiplied, after RoPE, by a per-position factor
    /// `query_scale` `[1, 1, T, 1]` (QWen's log-scaled attention, [`logn_query_scale`]).
    pub fn forward_scaled(
        &self,
        x: Tensor<B, 3>,
        rope: Option<(&Tensor<B, 3>, &Tensor<B, 3>)>,
        mask: &AttentionMask<B>,
        query_scale: Option<&Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, rope, mask, query_scale, None)
    }

    /// [`Self::forward`] where the projections' partial adapters (XComposer2's PLoRA) update
    /// the rows `row_mask` (`[B, T, 1]`, 0/1) selects.
    pub fn forward_masked(
        &self,
        x: Tensor<B, 3>,
        rope: Option<(&Tensor<B, 3>, &Tensor<B, 3>)>,
        mask: &AttentionMask<B>,
        row_mask: Option<&Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, rope, mask, None, row_mask)
    }

    /// The forward with every option: a query scale and a row mask for partial adapters.
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        rope: Option<(&Tensor<B, 3>, &Tensor<B, 3>)>,
        mask: &AttentionMask<B>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        self.attend(x, rope, mask, query_scale, row_mask, None)
    }

    /// [`Self::forward_with`] for tokens that follow those in `cache`, whose keys and values
    /// it attends to as well and to which it appends its own; `mask` covers `[B, 1, T, past +
    /// T]` ([`AttentionMask::causal_after`]).
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: Option<(&Tensor<B, 3>, &Tensor<B, 3>)>,
        mask: &AttentionMask<B>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&Tensor<B, 3>>,
        cache: &mut LayerKv<B>,
    ) -> Tensor<B, 3> {
        self.attend(x, rope, mask, query_scale, row_mask, Some(cache))
    }

    fn attend(
        &self,
        x: Tensor<B, 3>,
        rope: Option<(&Tensor<B, 3>, &Tensor<B, 3>)>,
        mask: &AttentionMask<B>,
        query_scale: Option<&Tensor<B, 4>>,
        row_mask: Option<&Tensor<B, 3>>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (q, k, v) = self.project_masked(x, row_mask);
        let (mut q, mut k, mut v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        if let Some((cos, sin)) = rope {
            q = apply_rotary(q, cos, sin);
            k = apply_rotary(k, cos, sin);
        }
        if let Some(s) = query_scale {
            let dtype = q.dtype();
            q = q * s.clone().cast(dtype);
        }
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v);
        }
        let keys = k.dims()[2];
        let k = repeat_kv(k, self.num_heads / self.num_kv_heads);
        let v = repeat_kv(v, self.num_heads / self.num_kv_heads);
        let bias = mask
            .bias
            .clone()
            .map(|m| m.expand([b, self.num_heads, t, keys]));
        let options = AttentionModuleOptions {
            scale: self.scale,
            softcap: None,
            is_causal: false,
        };
        let y = attention(q, k, v, None, bias, options);
        let y = y
            .swap_dims(1, 2)
            .reshape([b, t, self.num_heads * self.head_dim]);
        self.o_proj.forward_masked(y, row_mask)
    }
}

impl<B: Backend> Attention<B> {
    /// q `[B, T, H, D]`, k and v `[B, T, KV, D]`.
    pub fn project(&self, x: Tensor<B, 3>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        self.project_masked(x, None)
    }

    /// [`Self::project`] with the partial adapters' updates on the rows `row_mask` selects.
    pub fn project_masked(
        &self,
        x: Tensor<B, 3>,
        row_mask: Option<&Tensor<B, 3>>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        match &self.qkv {
            QkvProj::Separate(p) => (
                p.q_proj
                    .forward_masked(x.clone(), row_mask)
                    .reshape([b, t, h, d]),
                p.k_proj
                    .forward_masked(x.clone(), row_mask)
                    .reshape([b, t, kv, d]),
                p.v_proj.forward_masked(x, row_mask).reshape([b, t, kv, d]),
            ),
            QkvProj::Fused(l) => self.layout.split(l.forward_masked(x, row_mask), h, kv, d),
        }
    }

    /// The linear layers, q/k/v projection(s) first, then the output projection.
    pub fn linears(&self) -> Vec<&Linear<B>> {
        let mut out = match &self.qkv {
            QkvProj::Separate(p) => vec![&p.q_proj, &p.k_proj, &p.v_proj],
            QkvProj::Fused(l) => vec![l],
        };
        out.push(&self.o_proj);
        out
    }
}

/// QWen's log-scaled attention (`use_logn_attn` in `modeling_qwen.py`): the query at 0-based
/// position `p` is multiplied by `log(p + 1) / log(seq_length)` once `p + 1 > seq_length`, which
/// keeps attention entropy steady past the trained context. `[1, 1, T, 1]`, `None` when no
/// position of a `seq`-token sequence is past `seq_length`.
pub fn logn_query_scale<B: Backend>(
    seq: usize,
    seq_length: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
    if seq <= seq_length {
        return None;
    }
    let base = (seq_length as f64).ln();
    let scale: Vec<f32> = (1..=seq)
        .map(|i| {
            if i > seq_length {
                ((i as f64).ln() / base) as f32
            } else {
                1.0
            }
        })
        .collect();
    Some(Tensor::from_data(
        TensorData::new(scale, [1, 1, seq, 1]),
        device,
    ))
}

/// `[B, KV, T, D]` -> `[B, KV * n, T, D]`, each kv head repeated for its `n` query heads.
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    if n == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n, t, d])
        .reshape([b, kv * n, t, d])
}
