//! Qwen-VL's vision encoder (`visual.py`, `VisionTransformer`): a bias-free patch conv, a
//! learned 16x16 position table interpolated bicubically to the patch grid, `ln_pre`, pre-norm
//! blocks (`transformer.resblocks.N`: `ln_1`, `attn.in_proj` packed per head as q|k|v,
//! `attn.out_proj`, `ln_2`, `mlp.c_fc` -> GELU -> `mlp.c_proj`), then the resampler
//! (`attn_pool`: `n_queries` learned queries cross-attending to the patches with 2-D sin-cos
//! position tables), `ln_post` and `x @ proj`.

use crate::config::VisualConfig;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};
use lmms_core::burn;
use lmms_core::error::Result;
use lmms_core::nn::{
    Activation, Attention, AttentionConfig, AttentionMask, LayerNorm, Linear, Mlp, PartPlan,
    QkvLayout,
};
use lmms_core::weights::Vars;

/// `norm_layer = partial(nn.LayerNorm, eps=1e-6)` everywhere in `visual.py`.
const EPS: f64 = 1e-6;

/// `VisualAttentionBlock`.
#[derive(Module, Debug)]
pub struct VisualBlock<B: Backend> {
    pub ln_1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub ln_2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> VisualBlock<B> {
    fn load(
        vars: &Vars<'_>,
        c: &VisualConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let w = c.width;
        let attn = AttentionConfig {
            hidden: w,
            num_heads: c.heads,
            num_kv_heads: c.heads,
            head_dim: w / c.heads,
            qkv_bias: true,
            o_bias: true,
            o_name: "out_proj",
            scale: None,
        };
        let t = plan.trainable;
        Ok(VisualBlock {
            ln_1: LayerNorm::load(&vars.pp("ln_1"), w, EPS, t, device)?,
            // `in_proj` viewed as [heads, 3 * head_dim]: per head q, k, v, which is the grouped
            // layout with one query head per kv head.
            attn: Attention::load_with_layout(
                &vars.pp("attn"),
                &attn,
                QkvLayout::Grouped { name: "in_proj" },
                plan,
                device,
            )?,
            ln_2: LayerNorm::load(&vars.pp("ln_2"), w, EPS, t, device)?,
            mlp: Mlp::load(
                &vars.pp("mlp"),
                ["c_fc", "c_proj"],
                w,
                c.mlp_width(),
                w,
                Activation::Gelu,
                plan,
                device,
            )?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let h = x.clone() + self.attn.forward(self.ln_1.forward(x), None, mask);
        h.clone() + self.mlp.forward(self.ln_2.forward(h))
    }
}

/// `Resampler` (`attn_pool`): one `nn.MultiheadAttention` from the learned queries to the
/// patch features.
#[derive(Module, Debug)]
pub struct Resampler<B: Backend> {
    /// The fixed 2-D sin-cos table `[n_queries, output_dim]` (a frozen parameter).
    pub pos_embed: Param<Tensor<B, 2>>,
    pub query: Param<Tensor<B, 2>>,
    /// `None` when `width == output_dim` (`nn.Identity`).
    pub kv_proj: Option<Linear<B>>,
    /// `attn.in_proj_weight` as `[output_dim, 3 * output_dim]` (q, k, v columns).
    pub in_proj_weight: Param<Tensor<B, 2>>,
    pub in_proj_bias: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    pub ln_q: LayerNorm<B>,
    pub ln_kv: LayerNorm<B>,
    /// Bicubic interpolation of `pos_embed` onto the patch grid, `[grid^2, n_queries]`.
    pub key_pos: Tensor<B, 2>,
    #[module(skip)]
    pub heads: usize,
}

impl<B: Backend> Resampler<B> {
    fn load(
        vars: &Vars<'_>,
        c: &VisualConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (e, n, t) = (c.output_dim, c.n_queries, plan.trainable);
        let a = vars.pp("attn");
        let side = (n as f64).sqrt() as usize;
        Ok(Resampler {
            // `requires_grad_(False)` in `visual.py`: the table never trains.
            pos_embed: vars.param("pos_embed", [n, e], device, false)?,
            query: vars.param("query", [n, e], device, t)?,
            kv_proj: if c.width != e {
                Some(Linear::load(
                    &vars.pp("kv_proj"),
                    c.width,
                    e,
                    false,
                    plan,
                    device,
                )?)
            } else {
                None
            },
            in_proj_weight: a.wrap_transposed(
                "in_proj_weight",
                a.linear_weight("in_proj_weight", e, 3 * e, device)?,
                t,
            ),
            in_proj_bias: a.param("in_proj_bias", [3 * e], device, t)?,
            out_proj: Linear::load(&a.pp("out_proj"), e, e, true, plan, device)?,
            ln_q: LayerNorm::load(&vars.pp("ln_q"), e, EPS, t, device)?,
            ln_kv: LayerNorm::load(&vars.pp("ln_kv"), e, EPS, t, device)?,
            key_pos: bicubic_matrix::<B>(side, c.grid(), device),
            heads: c.resampler_heads(),
        })
    }

    /// `x: [N, L, width]` -> `[N, n_queries, output_dim]`.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = match &self.kv_proj {
            Some(p) => p.forward(x),
            None => x,
        };
        let x = self.ln_kv.forward(x);
        let [n, l, e] = x.dims();
        let pos = self.pos_embed.val();
        let nq = pos.dims()[0];
        let key_pos = self.key_pos.clone().cast(pos.dtype()).matmul(pos.clone());
        let q = self.ln_q.forward(self.query.val()) + pos;
        let w = self.in_proj_weight.val();
        let bias = self.in_proj_bias.val();
        let proj = |input: Tensor<B, 3>, i: usize| {
            let rows = input.dims()[1];
            let wi = w.clone().slice([0..e, i * e..(i + 1) * e]);
            let bi = bias.clone().narrow(0, i * e, e);
            (input.matmul(wi.unsqueeze::<3>()) + bi.unsqueeze::<3>())
                .reshape([n, rows, self.heads, e / self.heads])
                .swap_dims(1, 2)
        };
        let q = proj(q.unsqueeze::<3>().expand([n, nq, e]), 0);
        let k = proj(x.clone() + key_pos.unsqueeze::<3>().expand([n, l, e]), 1);
        let v = proj(x, 2);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let y = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([n, nq, e]);
        self.out_proj.forward(y)
    }
}

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// `conv1.weight` as `[3 * p * p, width]`.
    pub conv1: Param<Tensor<B, 2>>,
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub ln_pre: LayerNorm<B>,
    pub resblocks: Vec<VisualBlock<B>>,
    pub attn_pool: Resampler<B>,
    pub ln_post: LayerNorm<B>,
    /// `[output_dim, output_dim]`, used as `x @ proj`.
    pub proj: Param<Tensor<B, 2>>,
    /// Bicubic interpolation of the position table onto the patch grid (`None`: same size).
    pub patch_pos: Option<Tensor<B, 2>>,
    #[module(skip)]
    pub patch_size: usize,
}

impl<B: Backend> VisionTransformer<B> {
    /// Loads `transformer.visual`: the tower with `tower`'s plan, the resampler, `ln_post` and
    /// `proj` with `projector`'s.
    pub fn load(
        vars: &Vars<'_>,
        c: &VisualConfig,
        tower: &PartPlan<'_>,
        projector: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (w, p) = (c.width, c.patch_size);
        let conv = vars.tensor::<B, 4>("conv1.weight", [w, 3, p, p], device)?;
        let conv1 = vars.pp("conv1").wrap_transposed(
            "weight",
            conv.reshape([w, 3 * p * p]).transpose(),
            tower.trainable,
        );
        // The checkpoint's table is 16x16 (256 rows) whatever the image size.
        let rows = 256;
        let side = 16;
        let grid = c.grid();
        Ok(VisionTransformer {
            conv1,
            positional_embedding: vars.param(
                "positional_embedding",
                [rows, w],
                device,
                tower.trainable,
            )?,
            ln_pre: LayerNorm::load(&vars.pp("ln_pre"), w, EPS, tower.trainable, device)?,
            resblocks: (0..c.layers)
                .map(|i| {
                    VisualBlock::load(&vars.pp("transformer.resblocks").pp(i), c, tower, device)
                })
                .collect::<Result<_>>()?,
            attn_pool: Resampler::load(&vars.pp("attn_pool"), c, projector, device)?,
            ln_post: LayerNorm::load(
                &vars.pp("ln_post"),
                c.output_dim,
                EPS,
                projector.trainable,
                device,
            )?,
            proj: vars.param(
                "proj",
                [c.output_dim, c.output_dim],
                device,
                projector.trainable,
            )?,
            patch_pos: (grid != side).then(|| bicubic_matrix::<B>(side, grid, device)),
            patch_size: p,
        })
    }

    /// `images: [N, 3, H, W]` (normalised pixels) -> `[N, n_queries, output_dim]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, hgt, wid] = images.dims();
        let p = self.patch_size;
        let (gh, gw) = (hgt / p, wid / p);
        // [N, C, gh, p, gw, p] -> [N, gh, gw, C, p, p]: the conv weight's (C, ky, kx) order.
        let patches = images
            .cast(self.conv1.val().dtype())
            .reshape([n, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, gh * gw, c * p * p]);
        let x = patches.matmul(self.conv1.val().unsqueeze::<3>());
        let table = self.positional_embedding.val();
        let pos = match &self.patch_pos {
            Some(m) => m.clone().cast(table.dtype()).matmul(table),
            None => table,
        };
        let mut x = self.ln_pre.forward(x + pos.unsqueeze::<3>());
        let mask = AttentionMask::none();
        for block in &self.resblocks {
            x = block.forward(x, &mask);
        }
        let x = self.ln_post.forward(self.attn_pool.forward(x));
        x.matmul(self.proj.val().unsqueeze::<3>())
    }
}

/// PyTorch's `F.interpolate(mode="bicubic", align_corners=False)` (`A = -0.75`, source indices
/// clamped at the border) from an `src x src` grid to `dst x dst`, as a `[dst^2, src^2]` matrix
/// over row-major grids, so interpolating a `[src^2, C]` table is one matmul (and its gradient
/// flows to the table).
pub fn bicubic_matrix<B: Backend>(src: usize, dst: usize, device: &B::Device) -> Tensor<B, 2> {
    let w = bicubic_weights(src, dst);
    let mut m = vec![0f32; dst * dst * src * src];
    for y in 0..dst {
        for x in 0..dst {
            let row = (y * dst + x) * src * src;
            for ky in 0..src {
                for kx in 0..src {
                    m[row + ky * src + kx] = w[y * src + ky] * w[x * src + kx];
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [dst * dst, src * src]), device)
}

/// The 1-D bicubic weights `[dst, src]` (f32, as ATen's `upsample_bicubic2d` computes them).
pub fn bicubic_weights(src: usize, dst: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = src as f32 / dst as f32;
    let mut w = vec![0f32; dst * src];
    for i in 0..dst {
        let real = scale * (i as f32 + 0.5) - 0.5;
        let base = real.floor();
        let t = real - base;
        let coeffs = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)];
        for (k, c) in coeffs.iter().enumerate() {
            let idx = (base as isize - 1 + k as isize).clamp(0, src as isize - 1) as usize;
            w[i * src + idx] += c;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows sum to one; same-size interpolation is the identity.
    #[test]
    fn bicubic_weights_are_an_interpolation() {
        let w = bicubic_weights(16, 32);
        for r in w.chunks(16) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let id = bicubic_weights(4, 4);
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(id[i * 4 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
    }
}
