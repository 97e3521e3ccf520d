//! `MllamaVisionModel` (`modeling_mllama.py`): every image arrives as `max_num_tiles` tiles
//! (zero tiles past its own count); per tile, patch embedding (a stride-equal conv, computed as a
//! matmul over flattened patches), a gated aspect-ratio embedding (`pre_tile_positional_embedding`),
//! the class token, gated position + tile-position embeddings, `layernorm_pre`, padding of the
//! token axis to a multiple of 8; then the local `transformer` over all tiles of an image at once,
//! `layernorm_post`, the gated `post_tile_positional_embedding`, and the gated
//! `global_transformer`. The output per tile token is the final state followed by the local
//! encoder's `intermediate_layers_indices` outputs, interleaved feature-major as HF's
//! `torch.stack(..., dim=-1)` lays them out. Encoder layers compose core's attention (no
//! biases), LayerNorms and MLP.

use crate::config::MllamaVisionConfig;
use lmms_core::burn;
use lmms_core::burn::module::{Module, Param};
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Int, Tensor, TensorData};
use lmms_core::error::{Error, Result};
use lmms_core::nn::{
    Attention, AttentionConfig, AttentionMask, Embedding, LayerNorm, Mlp, PartPlan,
};
use lmms_core::weights::Vars;

/// Masked attention scores, as core's masks use (finite: a fully masked row stays finite).
const MASKED: f32 = -1e30;
/// `nn.LayerNorm(hidden_size)`'s default epsilon, which `layernorm_pre` / `layernorm_post` keep.
const LAYERNORM_EPS: f64 = 1e-5;

/// `tanh(gate)` of a one-element gate, broadcastable over `D` dimensions, in `dtype`.
fn tanh_gate<B: Backend, const D: usize>(
    gate: &Param<Tensor<B, 1>>,
    dtype: burn::tensor::DType,
) -> Tensor<B, D> {
    gate.val().tanh().cast(dtype).reshape([1; D])
}

/// `MllamaVisionEncoderLayer`: pre-norm attention and MLP, each output multiplied by
/// `tanh(gate)` in the gated (global) layers.
#[derive(Module, Debug)]
pub struct VisionLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    pub input_layernorm: LayerNorm<B>,
    pub post_attention_layernorm: LayerNorm<B>,
    pub gate_attn: Option<Param<Tensor<B, 1>>>,
    pub gate_ffn: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> VisionLayer<B> {
    fn load(
        vars: &Vars<'_>,
        c: &MllamaVisionConfig,
        gated: bool,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let h = c.hidden_size;
        let attn = AttentionConfig {
            hidden: h,
            num_heads: c.attention_heads,
            num_kv_heads: c.attention_heads,
            head_dim: c.head_dim(),
            qkv_bias: false,
            o_bias: false,
            o_name: "o_proj",
            scale: None,
        };
        let norm =
            |name: &str| LayerNorm::load(&vars.pp(name), h, c.norm_eps, plan.trainable, device);
        let gate = |name: &str| -> Result<Option<Param<Tensor<B, 1>>>> {
            gated
                .then(|| vars.param(name, [1], device, plan.trainable))
                .transpose()
        };
        Ok(VisionLayer {
            self_attn: Attention::load(&vars.pp("self_attn"), &attn, plan, device)?,
            mlp: Mlp::load(
                &vars.pp("mlp"),
                ["fc1", "fc2"],
                h,
                c.intermediate_size,
                h,
                c.hidden_act,
                plan,
                device,
            )?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            gate_attn: gate("gate_attn")?,
            gate_ffn: gate("gate_ffn")?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let mut h = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), None, mask);
        if let Some(g) = &self.gate_attn {
            h = tanh_gate::<B, 3>(g, dtype) * h;
        }
        let x = x + h;
        let mut h = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        if let Some(g) = &self.gate_ffn {
            h = tanh_gate::<B, 3>(g, dtype) * h;
        }
        x + h
    }
}

/// `MllamaPrecomputedAspectRatioEmbedding` (gated): one vector per tile, chosen by the image's
/// aspect-ratio id.
#[derive(Module, Debug)]
pub struct TileEmbedding<B: Backend> {
    pub embedding: Embedding<B>,
    pub gate: Param<Tensor<B, 1>>,
}

impl<B: Backend> TileEmbedding<B> {
    fn load(
        vars: &Vars<'_>,
        c: &MllamaVisionConfig,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(TileEmbedding {
            embedding: Embedding::load(
                &vars.pp("embedding"),
                c.max_aspect_ratio_id() + 1,
                c.max_num_tiles * c.hidden_size,
                trainable,
                device,
            )?,
            gate: vars.param("gate", [1], device, trainable)?,
        })
    }

    /// `x` `[N, tiles, tokens, D]` plus each image's tile vectors.
    fn forward(&self, x: Tensor<B, 4>, ids: Tensor<B, 2, Int>) -> Tensor<B, 4> {
        let [n, tiles, _, d] = x.dims();
        let dtype = x.dtype();
        let e = self
            .embedding
            .forward(ids)
            .reshape([n, tiles, 1, d])
            .cast(dtype);
        x + e * tanh_gate::<B, 4>(&self.gate, dtype)
    }
}

/// `MllamaPrecomputedPositionEmbedding`: `(1 - tanh(gate))` times the position embedding of a
/// tile's tokens, plus `tanh(gate)` times a per-(aspect ratio, tile, token) embedding.
#[derive(Module, Debug)]
pub struct PositionEmbedding<B: Backend> {
    pub embedding: Param<Tensor<B, 2>>,
    pub gate: Param<Tensor<B, 1>>,
    pub tile_embedding: Embedding<B>,
}

impl<B: Backend> PositionEmbedding<B> {
    fn load(
        vars: &Vars<'_>,
        c: &MllamaVisionConfig,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let (p, d) = (c.num_patches(), c.hidden_size);
        Ok(PositionEmbedding {
            embedding: vars.param("embedding", [p, d], device, trainable)?,
            gate: vars.param("gate", [1], device, trainable)?,
            tile_embedding: Embedding::load(
                &vars.pp("tile_embedding"),
                c.max_aspect_ratio_id() + 1,
                c.max_num_tiles * p * d,
                trainable,
                device,
            )?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>, ids: Tensor<B, 2, Int>) -> Tensor<B, 4> {
        let [n, tiles, p, d] = x.dims();
        let dtype = x.dtype();
        let gate = tanh_gate::<B, 4>(&self.gate, dtype);
        let pos = self.embedding.val().cast(dtype).reshape([1, 1, p, d]);
        let tile = self
            .tile_embedding
            .forward(ids)
            .reshape([n, tiles, p, d])
            .cast(dtype);
        x + (gate.clone().neg() + 1.0) * pos + gate * tile
    }
}

#[derive(Module, Debug)]
pub struct MllamaVisionModel<B: Backend> {
    /// Patch conv weight as `[C * p * p, hidden]`.
    pub patch_embedding: Param<Tensor<B, 2>>,
    pub class_embedding: Param<Tensor<B, 1>>,
    pub gated_positional_embedding: PositionEmbedding<B>,
    pub pre_tile_positional_embedding: TileEmbedding<B>,
    pub post_tile_positional_embedding: TileEmbedding<B>,
    pub layernorm_pre: LayerNorm<B>,
    pub layernorm_post: LayerNorm<B>,
    pub transformer: Vec<VisionLayer<B>>,
    pub global_transformer: Vec<VisionLayer<B>>,
    #[module(skip)]
    pub config: MllamaVisionConfig,
}

impl<B: Backend> MllamaVisionModel<B> {
    /// Loads `vision_model.*` (at `vars`).
    pub fn load(
        vars: &Vars<'_>,
        c: &MllamaVisionConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let t = plan.trainable;
        let pe = vars.pp("patch_embedding");
        let conv = pe.tensor::<B, 4>("weight", [h, ch, p, p], device)?;
        let patch_embedding =
            pe.wrap_transposed("weight", conv.reshape([h, ch * p * p]).transpose(), t);
        let layers = |name: &str, n: usize, gated: bool| -> Result<Vec<VisionLayer<B>>> {
            let v = vars.pp(name).pp("layers");
            (0..n)
                .map(|i| VisionLayer::load(&v.pp(i), c, gated, plan, device))
                .collect()
        };
        Ok(MllamaVisionModel {
            patch_embedding,
            class_embedding: vars.param("class_embedding", [h], device, t)?,
            gated_positional_embedding: PositionEmbedding::load(
                &vars.pp("gated_positional_embedding"),
                c,
                t,
                device,
            )?,
            pre_tile_positional_embedding: TileEmbedding::load(
                &vars.pp("pre_tile_positional_embedding"),
                c,
                t,
                device,
            )?,
            post_tile_positional_embedding: TileEmbedding::load(
                &vars.pp("post_tile_positional_embedding"),
                c,
                t,
                device,
            )?,
            layernorm_pre: LayerNorm::load(&vars.pp("layernorm_pre"), h, LAYERNORM_EPS, t, device)?,
            layernorm_post: LayerNorm::load(
                &vars.pp("layernorm_post"),
                h,
                LAYERNORM_EPS,
                t,
                device,
            )?,
            transformer: layers("transformer", c.num_hidden_layers, false)?,
            global_transformer: layers("global_transformer", c.num_global_layers, true)?,
            config: c.clone(),
        })
    }

    /// Features `[N, tiles, num_patches, vision_output_dim]` of `N` images given as `pixels`
    /// `[N * tiles, C, H, W]`, their aspect-ratio ids (`[N]`) and tile masks (`[N * tiles]`,
    /// 1 = a real tile).
    pub fn forward(
        &self,
        pixels: Tensor<B, 4>,
        aspect_ratio_ids: &[i64],
        aspect_ratio_mask: &[i64],
    ) -> Result<Tensor<B, 4>> {
        let c = &self.config;
        let n = aspect_ratio_ids.len();
        let tiles = c.max_num_tiles;
        let device = pixels.device();
        if let Some(bad) = aspect_ratio_ids
            .iter()
            .find(|&&i| i < 0 || i as usize > c.max_aspect_ratio_id())
        {
            return Err(Error::Batch(format!(
                "aspect_ratio_ids holds {bad}, outside 0..={} (the model's supported_aspect_ratios)",
                c.max_aspect_ratio_id()
            )));
        }
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(aspect_ratio_ids.to_vec(), [n, 1]),
            &device,
        );
        let x = self.patches(pixels); // [N * tiles, P, D]
        let [_, p, d] = x.dims();
        let dtype = x.dtype();
        let x = self
            .pre_tile_positional_embedding
            .forward(x.reshape([n, tiles, p, d]), ids.clone());
        let cls = self
            .class_embedding
            .val()
            .cast(dtype)
            .reshape([1, 1, d])
            .expand([n * tiles, 1, d]);
        let x = Tensor::cat(vec![cls, x.reshape([n * tiles, p, d])], 1);
        let p = p + 1;
        let x = self
            .gated_positional_embedding
            .forward(x.reshape([n, tiles, p, d]), ids.clone());
        let x = self.layernorm_pre.forward(x);
        // The token axis is padded to a multiple of 8 (HF does so for kernel efficiency; the
        // mask below is what makes it matter).
        let pad = (8 - p % 8) % 8;
        let padded = p + pad;
        let x = if pad > 0 {
            Tensor::cat(
                vec![
                    x,
                    Tensor::<B, 4>::zeros([n, tiles, pad, d], &device).cast(dtype),
                ],
                2,
            )
        } else {
            x
        };
        let mask = self.mask(aspect_ratio_mask, n, padded, pad, dtype, &device)?;
        let mut x = x.reshape([n, tiles * padded, d]);
        let mut kept = Vec::with_capacity(c.intermediate_layers_indices.len());
        let deepest = c.intermediate_layers_indices.iter().copied().max();
        for (i, layer) in self.transformer.iter().enumerate() {
            x = layer.forward(x, &mask);
            if deepest.is_some_and(|m| i <= m) {
                kept.push(x.clone());
            }
        }
        let x = self.layernorm_post.forward(x);
        let x = self
            .post_tile_positional_embedding
            .forward(x.reshape([n, tiles, padded, d]), ids);
        let mut x = x.reshape([n, tiles * padded, d]);
        for layer in &self.global_transformer {
            x = layer.forward(x, &mask);
        }
        let x = x
            .reshape([n, tiles, padded, d])
            .slice([0..n, 0..tiles, 0..p, 0..d]);
        if c.intermediate_layers_indices.is_empty() {
            return Ok(x);
        }
        // stack(dim=-1) then flatten: feature-major, layer-minor.
        let states: Vec<Tensor<B, 3>> = c
            .intermediate_layers_indices
            .iter()
            .map(|&i| kept[i].clone())
            .collect();
        let k = states.len();
        let inter = Tensor::stack::<4>(states, 3)
            .reshape([n, tiles, padded, d * k])
            .slice([0..n, 0..tiles, 0..p, 0..d * k]);
        Ok(Tensor::cat(vec![x, inter], 3))
    }

    /// `[N, C, H, W]` -> `[N, patches, hidden]` (the conv as a matmul over flattened patches).
    fn patches(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, hgt, wid] = pixels.dims();
        let p = self.config.patch_size;
        let (gh, gw) = (hgt / p, wid / p);
        // [N, C, gh, p, gw, p] -> [N, gh, gw, C, p, p]: the conv weight's (C, ky, kx) order.
        let patches = pixels
            .reshape([n, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, gh * gw, c * p * p]);
        patches.matmul(self.patch_embedding.val().unsqueeze::<3>())
    }

    /// HF's `_prepare_aspect_ratio_attention_mask`: a token is padding when its tile is masked
    /// out or it is one of the `pad` tokens added per tile (with `pad == 0`, HF's
    /// `[-0:]` slice marks every token); a (query, key) pair is masked only when BOTH are
    /// padding (the product of the two inverted masks), so real tokens still see padding keys.
    fn mask(
        &self,
        aspect_ratio_mask: &[i64],
        n: usize,
        padded: usize,
        pad: usize,
        dtype: burn::tensor::DType,
        device: &B::Device,
    ) -> Result<AttentionMask<B>> {
        let tiles = self.config.max_num_tiles;
        if aspect_ratio_mask.len() != n * tiles {
            return Err(Error::Batch(format!(
                "aspect_ratio_mask has {} entries, expected {n} images x {tiles} tiles",
                aspect_ratio_mask.len()
            )));
        }
        let s = tiles * padded;
        let mut bias = vec![0f32; n * s * s];
        for img in 0..n {
            let is_pad: Vec<bool> = (0..s)
                .map(|i| {
                    let (t, tok) = (i / padded, i % padded);
                    aspect_ratio_mask[img * tiles + t] == 0 || pad == 0 || tok >= padded - pad
                })
                .collect();
            let block = &mut bias[img * s * s..(img + 1) * s * s];
            for (q, &pq) in is_pad.iter().enumerate() {
                if !pq {
                    continue;
                }
                for (k, &pk) in is_pad.iter().enumerate() {
                    if pk {
                        block[q * s + k] = MASKED;
                    }
                }
            }
        }
        let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [n, 1, s, s]), device);
        Ok(AttentionMask {
            bias: Some(bias.cast(dtype)),
        })
    }
}
