//! The Qwen vision transformers: `Qwen2VisionTransformerPretrainedModel`
//! (`modeling_qwen2_vl.py`) and `Qwen2_5_VisionTransformerPretrainedModel`
//! (`modeling_qwen2_5_vl.py`). Patches arrive flattened (`[N, C * T * P * P]`, the image
//! processor's layout), so the stride-equal Conv3d patch embedding is one matmul. Blocks are
//! core's attention (fused `qkv`, output `proj`, 2D rotary), norms and MLPs; attention never
//! crosses a frame (2.5: a window, except in `fullatt_block_indexes`), expressed as a
//! block-diagonal mask. The merger concatenates each `merge x merge` block of patches and maps
//! it to the LLM width.

use crate::config::{Variant, VisionConfig};
use crate::positions::{self, Grid};
use lmms_core::burn;
use lmms_core::burn::module::{Module, Param};
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Int, Tensor, TensorData};
use lmms_core::error::Result;
use lmms_core::nn::mlp::GATE_UP_DOWN;
use lmms_core::nn::mrope::{axial_angles, cos_sin_tensors};
use lmms_core::nn::recompute::Stack;
use lmms_core::nn::{
    Activation, Attention, AttentionConfig, AttentionMask, GatedMlp, LayerNorm, Mlp, PartPlan,
    QkvLayout, RmsNorm,
};
use lmms_core::weights::Vars;
use std::rc::Rc;

/// Masked attention scores, as core's attention masks use.
const MASKED: f32 = -1e30;
/// Norm epsilon of every vision norm (hard-coded in HF).
const EPS: f64 = 1e-6;

/// LayerNorm (2.0) or RMSNorm (2.5).
#[derive(Module, Debug)]
pub enum VisionNorm<B: Backend> {
    Layer(LayerNorm<B>),
    Rms(RmsNorm<B>),
}

impl<B: Backend> VisionNorm<B> {
    fn load(
        vars: &Vars<'_>,
        variant: Variant,
        dim: usize,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(match variant {
            Variant::Qwen2 => {
                VisionNorm::Layer(LayerNorm::load(vars, dim, EPS, trainable, device)?)
            }
            Variant::Qwen25 => VisionNorm::Rms(RmsNorm::load(vars, dim, EPS, trainable, device)?),
        })
    }

    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            VisionNorm::Layer(n) => n.forward(x),
            VisionNorm::Rms(n) => n.forward(x),
        }
    }
}

/// `fc1 -> act -> fc2` (2.0) or biased SwiGLU `gate/up/down` (2.5).
// One per block: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VisionMlp<B: Backend> {
    Plain(Mlp<B>),
    Gated(GatedMlp<B>),
}

#[derive(Module, Debug)]
pub struct VisionBlock<B: Backend> {
    pub norm1: VisionNorm<B>,
    pub attn: Attention<B>,
    pub norm2: VisionNorm<B>,
    pub mlp: VisionMlp<B>,
}

impl<B: Backend> VisionBlock<B> {
    fn load(
        vars: &Vars<'_>,
        c: &VisionConfig,
        variant: Variant,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let e = c.embed_dim;
        let attn = AttentionConfig {
            hidden: e,
            num_heads: c.num_heads,
            num_kv_heads: c.num_heads,
            head_dim: c.head_dim(),
            qkv_bias: true,
            o_bias: true,
            o_name: "proj",
            scale: None,
        };
        let m = vars.pp("mlp");
        let mlp = match variant {
            Variant::Qwen2 => VisionMlp::Plain(Mlp::load(
                &m,
                ["fc1", "fc2"],
                e,
                c.intermediate_size,
                e,
                c.hidden_act,
                plan,
                device,
            )?),
            Variant::Qwen25 => VisionMlp::Gated(GatedMlp::load(
                &m,
                GATE_UP_DOWN,
                e,
                c.intermediate_size,
                true,
                c.hidden_act,
                plan,
                device,
            )?),
        };
        Ok(VisionBlock {
            norm1: VisionNorm::load(&vars.pp("norm1"), variant, e, plan.trainable, device)?,
            attn: Attention::load_with_layout(
                &vars.pp("attn"),
                &attn,
                QkvLayout::Concat { name: "qkv" },
                plan,
                device,
            )?,
            norm2: VisionNorm::load(&vars.pp("norm2"), variant, e, plan.trainable, device)?,
            mlp,
        })
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 3>, &Tensor<B, 3>),
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let h = x.clone() + self.attn.forward(self.norm1.forward(x), Some(rope), mask);
        let y = self.norm2.forward(h.clone());
        let y = match &self.mlp {
            VisionMlp::Plain(m) => m.forward(y),
            VisionMlp::Gated(m) => m.forward(y),
        };
        h + y
    }
}

/// `ln_q`, then `mlp.0 -> GELU -> mlp.2` over each merge block's concatenated patches.
#[derive(Module, Debug)]
pub struct PatchMerger<B: Backend> {
    pub ln_q: VisionNorm<B>,
    pub mlp: Mlp<B>,
}

#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// The Conv3d kernel flattened and held `[C * T * P * P, embed_dim]`.
    pub patch_embed: Param<Tensor<B, 2>>,
    pub blocks: Vec<VisionBlock<B>>,
    pub merger: PatchMerger<B>,
    #[module(skip)]
    pub config: VisionConfig,
    #[module(skip)]
    pub variant: Variant,
}

impl<B: Backend> VisionTower<B> {
    /// Loads `<vars>.{patch_embed.proj, blocks.N, merger}`; the merger follows `merger_plan`.
    pub fn load(
        vars: &Vars<'_>,
        c: &VisionConfig,
        variant: Variant,
        plan: &PartPlan<'_>,
        merger_plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (e, k) = (c.embed_dim, c.patch_values());
        let (p, t) = (c.patch_size, c.temporal_patch_size);
        let pe = vars.pp("patch_embed").pp("proj");
        let conv = pe.tensor::<B, 5>("weight", [e, c.in_channels, t, p, p], device)?;
        let patch_embed =
            pe.wrap_transposed("weight", conv.reshape([e, k]).transpose(), plan.trainable);
        let blocks = (0..c.depth)
            .map(|i| VisionBlock::load(&vars.pp("blocks").pp(i), c, variant, plan, device))
            .collect::<Result<Vec<_>>>()?;
        let m = vars.pp("merger");
        let wide = e * c.merge_unit();
        let merger = PatchMerger {
            ln_q: VisionNorm::load(&m.pp("ln_q"), variant, e, merger_plan.trainable, device)?,
            mlp: Mlp::load(
                &m.pp("mlp"),
                ["0", "2"],
                wide,
                wide,
                c.out_dim,
                Activation::Gelu,
                merger_plan,
                device,
            )?,
        };
        Ok(VisionTower {
            patch_embed,
            blocks,
            merger,
            config: c.clone(),
            variant,
        })
    }

    /// Features `[sum(t * h * w) / merge^2, out_dim]` of the patches `pixels` (`[N, C*T*P*P]`)
    /// of the images or videos `grids`, in the order of `grids`.
    pub fn forward(&self, pixels: Tensor<B, 2>, grids: &[Grid]) -> Tensor<B, 2> {
        let c = &self.config;
        let device = pixels.device();
        let weight = self.patch_embed.val();
        let x = pixels.cast(weight.dtype()).matmul(weight);
        let n = x.dims()[0];
        let unit = c.merge_unit();
        let mut hw = positions::patch_positions(grids, c.spatial_merge_size);
        let full = segment_mask::<B>(&positions::frame_segments(grids), n, &device);
        // 2.5: patches reordered so that every window is contiguous.
        let (x, windowed) = match self.variant {
            Variant::Qwen2 => (x, None),
            Variant::Qwen25 => {
                let cells = c.window_size / c.spatial_merge_size / c.patch_size;
                let (order, lengths) = positions::window_index(grids, c.spatial_merge_size, cells);
                let perm: Vec<usize> = order
                    .iter()
                    .flat_map(|&u| (0..unit).map(move |k| u * unit + k))
                    .collect();
                hw = perm.iter().map(|&i| hw[i]).collect();
                let x = x.select(0, index_tensor::<B>(&perm, &device));
                (x, Some((order, segment_mask::<B>(&lengths, n, &device))))
            }
        };
        let half = c.head_dim() / 2;
        let inv: Vec<f32> = (0..half / 2)
            .map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / half as f32))
            .collect();
        let dtype = x.dtype();
        let (cos, sin) =
            cos_sin_tensors::<B, 3>(&axial_angles(&inv, &hw), [1, n, 2 * half], &device);
        let (cos, sin) = (cos.cast(dtype), sin.cast(dtype));
        let heads = c.num_heads;
        let cast = |m: AttentionMask<B>| {
            AttentionMask {
                bias: m.bias.map(|b| b.cast(dtype)),
            }
            .for_heads(heads)
        };
        let full = cast(full);
        let windowed = windowed.map(|(o, m)| (o, cast(m)));
        // Checkpointed like the LLM's layers while the tower trains.
        let mut stack = Stack::unless_frozen(x.unsqueeze::<3>(), self);
        let windowed_mask = windowed.as_ref().map(|(_, w)| w.clone());
        let ctx = Rc::new((cos, sin, full, windowed_mask));
        for (i, block) in self.blocks.iter().enumerate() {
            let windowed = !c.fullatt_block_indexes.contains(&i);
            let ctx = ctx.clone();
            stack.layer(block, Vec::new(), move |block, h, _| {
                let (cos, sin, full, windowed_mask) = &*ctx;
                let mask = match windowed_mask {
                    Some(w) if windowed => w,
                    _ => full,
                };
                block.forward(h, (cos, sin), mask)
            });
        }
        let h = stack.into_hidden();
        let e = c.embed_dim;
        let h = self.merger.ln_q.forward(h).reshape([n / unit, e * unit]);
        let merged = self.merger.mlp.forward(h);
        match windowed {
            Some((order, _)) => {
                let mut reverse = vec![0; order.len()];
                for (at, &u) in order.iter().enumerate() {
                    reverse[u] = at;
                }
                merged.select(0, index_tensor::<B>(&reverse, &device))
            }
            None => merged,
        }
    }
}

fn index_tensor<B: Backend>(index: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = index.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [index.len()]), device)
}

/// A block-diagonal additive mask `[1, 1, n, n]`: position pairs in the same segment attend.
fn segment_mask<B: Backend>(lengths: &[usize], n: usize, device: &B::Device) -> AttentionMask<B> {
    let mut segment = Vec::with_capacity(n);
    for (s, &len) in lengths.iter().enumerate() {
        segment.extend(std::iter::repeat_n(s, len));
    }
    segment.resize(n, usize::MAX);
    let mut bias = vec![MASKED; n * n];
    for q in 0..n {
        for k in 0..n {
            if segment[q] == segment[k] {
                bias[q * n + k] = 0.0;
            }
        }
    }
    AttentionMask {
        bias: Some(Tensor::from_data(
            TensorData::new(bias, [1, 1, n, n]),
            device,
        )),
    }
}
