//! The ViT encoder of CLIP and SigLIP: patch embedding (a strided conv, computed as a matmul over
//! flattened patches), position embeddings, pre-norm transformer layers, post-layernorm. Weight
//! paths under the tower's prefix: `embeddings.{patch_embedding,position_embedding,class_embedding}`,
//! `pre_layrnorm` (CLIP), `encoder.layers.N.{self_attn,layer_norm1,mlp,layer_norm2}`,
//! `post_layernorm`.

use crate::error::Result;
use crate::nn::recompute::Stack;
use crate::nn::{Attention, AttentionConfig, AttentionMask, LayerNorm, Mlp, PartPlan};
use crate::vision::config::{VisionConfig, VisionKind};
use crate::weights::Vars;
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> EncoderLayer<B> {
    fn load(
        vars: &Vars<'_>,
        c: &VisionConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let head_dim = c.hidden_size / c.num_attention_heads;
        let attn = AttentionConfig {
            hidden: c.hidden_size,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_attention_heads,
            head_dim,
            qkv_bias: true,
            o_bias: true,
            o_name: "out_proj",
            scale: None,
        };
        let h = c.hidden_size;
        Ok(EncoderLayer {
            self_attn: Attention::load(&vars.pp("self_attn"), &attn, plan, device)?,
            layer_norm1: LayerNorm::load(
                &vars.pp("layer_norm1"),
                h,
                c.layer_norm_eps,
                plan.trainable,
                device,
            )?,
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
            layer_norm2: LayerNorm::load(
                &vars.pp("layer_norm2"),
                h,
                c.layer_norm_eps,
                plan.trainable,
                device,
            )?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.layer_norm1.forward(x), None, mask);
        h.clone() + self.mlp.forward(self.layer_norm2.forward(h))
    }
}

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// Patch conv weight as `[C * p * p, hidden]`.
    pub patch_embedding: Param<Tensor<B, 2>>,
    pub patch_bias: Option<Param<Tensor<B, 1>>>,
    pub class_embedding: Option<Param<Tensor<B, 1>>>,
    pub position_embedding: Param<Tensor<B, 2>>,
    pub pre_layrnorm: Option<LayerNorm<B>>,
    pub layers: Vec<EncoderLayer<B>>,
    /// Unused by the VLMs (they read hidden states); absent from XComposer2's checkpoint.
    pub post_layernorm: Option<LayerNorm<B>>,
    #[module(skip)]
    pub patch_size: usize,
    #[module(skip)]
    pub channels: usize,
}

impl<B: Backend> VisionTransformer<B> {
    /// Loads a tower from `vars` (e.g. `vision_tower.vision_model`).
    pub fn load(
        vars: &Vars<'_>,
        c: &VisionConfig,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let e = vars.pp("embeddings");
        let pe = e.pp("patch_embedding");
        let conv = pe.tensor::<B, 4>("weight", [h, ch, p, p], device)?;
        let patch_embedding = pe.wrap_transposed(
            "weight",
            conv.reshape([h, ch * p * p]).transpose(),
            plan.trainable,
        );
        let clip = c.kind() == VisionKind::Clip;
        let num_pos = c.grid() * c.grid() + usize::from(clip);
        let eps = c.layer_norm_eps;
        if c.kind() == VisionKind::Siglip && c.vision_use_head {
            // The pooling head serves SigLIP's contrastive objective; VLMs read patch features.
            vars.pp("head").mark_unused_ok();
        }
        Ok(VisionTransformer {
            patch_embedding,
            patch_bias: if clip {
                None
            } else {
                Some(pe.param("bias", [h], device, plan.trainable)?)
            },
            class_embedding: if clip {
                Some(e.param("class_embedding", [h], device, plan.trainable)?)
            } else {
                None
            },
            position_embedding: e.pp("position_embedding").param(
                "weight",
                [num_pos, h],
                device,
                plan.trainable,
            )?,
            pre_layrnorm: if clip {
                Some(LayerNorm::load(
                    &vars.pp("pre_layrnorm"),
                    h,
                    eps,
                    plan.trainable,
                    device,
                )?)
            } else {
                None
            },
            layers: (0..c.num_hidden_layers)
                .map(|i| EncoderLayer::load(&vars.pp("encoder.layers").pp(i), c, plan, device))
                .collect::<Result<_>>()?,
            post_layernorm: if vars.pp("post_layernorm").exists() {
                Some(LayerNorm::load(
                    &vars.pp("post_layernorm"),
                    h,
                    eps,
                    plan.trainable,
                    device,
                )?)
            } else {
                None
            },
            patch_size: p,
            channels: ch,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn embed(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, hgt, wid] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (hgt / p, wid / p);
        // [N, C, gh, p, gw, p] -> [N, gh, gw, C, p, p]: the conv weight's (C, ky, kx) order.
        let patches = pixels
            .reshape([n, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, gh * gw, c * p * p]);
        let mut x = patches.matmul(self.patch_embedding.val().unsqueeze::<3>());
        if let Some(b) = &self.patch_bias {
            x = x + b.val().unsqueeze::<3>();
        }
        let hidden = x.dims()[2];
        if let Some(cls) = &self.class_embedding {
            let cls = cls.val().reshape([1, 1, hidden]).expand([n, 1, hidden]);
            x = Tensor::cat(vec![cls, x], 1);
        }
        x + self.position_embedding.val().unsqueeze::<3>()
    }

    /// HF's `hidden_states[i]` for each requested `i` (0 = embeddings, negative counts from the
    /// end, as `vision_feature_layer` does). Layers past the deepest requested one are not run.
    pub fn hidden_states(&self, pixels: Tensor<B, 4>, wanted: &[isize]) -> Vec<Tensor<B, 3>> {
        let total = self.layers.len() as isize + 1;
        let idx: Vec<usize> = wanted
            .iter()
            .map(|&i| {
                if i < 0 {
                    (total + i) as usize
                } else {
                    i as usize
                }
            })
            .collect();
        let deepest = idx.iter().copied().max().unwrap_or(0);
        let mut x = self.embed(pixels);
        if let Some(norm) = &self.pre_layrnorm {
            x = norm.forward(x);
        }
        // Checkpointed like the LLM's layers while the tower trains.
        let mut stack = Stack::unless_frozen(x, self);
        let mut states = vec![stack.hidden()];
        for layer in self.layers.iter().take(deepest) {
            stack.layer(layer, Vec::new(), |layer, x, _| {
                layer.forward(x, &AttentionMask::none())
            });
            states.push(stack.hidden());
        }
        idx.iter().map(|&i| states[i].clone()).collect()
    }
}
