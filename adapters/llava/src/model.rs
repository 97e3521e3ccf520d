//! The LLaVA model (`modeling_llava.py`, `LlavaForConditionalGeneration`): vision tower ->
//! selected hidden states -> 2-layer projector -> features written over the image placeholder
//! tokens of the LLM input, then the LLM. Shared by the NeXT / OneVision / NeXT-Video variants,
//! which differ in how image features are arranged.

use crate::config::{LlavaConfig, SelectStrategy};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lmms_core::burn;
use lmms_core::error::{Error, Result};
use lmms_core::llm::CausalLm;
use lmms_core::nn::Mlp;
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::vision::VisionTransformer;
use lmms_core::weights::Vars;

#[derive(Module, Debug)]
pub struct Llava<B: Backend> {
    pub vision_tower: VisionTransformer<B>,
    pub multi_modal_projector: Mlp<B>,
    pub language_model: CausalLm<B>,
    /// The learned row separator of NeXT / OneVision / NeXT-Video (trains with the projector).
    pub image_newline: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    pub config: LlavaConfig,
}

impl<B: Backend> Llava<B> {
    pub fn load(
        root: &Vars<'_>,
        c: LlavaConfig,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Llava {
            vision_tower: VisionTransformer::load(
                &root.pp("vision_tower.vision_model"),
                &c.vision,
                &plans.vision_tower,
                device,
            )?,
            multi_modal_projector: Mlp::load(
                &root.pp("multi_modal_projector"),
                ["linear_1", "linear_2"],
                c.vision_feature_dim(),
                c.text.hidden_size,
                c.text.hidden_size,
                c.projector_hidden_act,
                &plans.projector,
                device,
            )?,
            language_model: CausalLm::load(
                &root.pp("language_model"),
                &c.text,
                &plans.llm,
                device,
            )?,
            image_newline: if c.has_image_newline() {
                Some(root.param(
                    "image_newline",
                    [c.text.hidden_size],
                    device,
                    plans.projector.trainable,
                )?)
            } else {
                None
            },
            config: c,
        })
    }

    /// Vision features before the projector: `[N, P, vision_feature_dim]`.
    pub fn select_features(&self, c: &LlavaConfig, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let states = self
            .vision_tower
            .hidden_states(pixels, &c.vision_feature_layers);
        let x = Tensor::cat(states, 2);
        match c.select_strategy {
            SelectStrategy::Default => {
                let [n, p, d] = x.dims();
                x.slice([0..n, 1..p, 0..d])
            }
            SelectStrategy::Full => x,
        }
    }

    pub fn newline(&self) -> Option<Tensor<B, 1>> {
        self.image_newline.as_ref().map(|p| p.val())
    }

    /// Projected image features `[N, P, hidden]` for pixel values `[N, C, H, W]`.
    pub fn image_features(&self, c: &LlavaConfig, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.multi_modal_projector
            .forward(self.select_features(c, pixels))
    }

    /// Token embeddings with `features` (`[K, hidden]`, in order) written over the positions
    /// whose id is one of `placeholders`, in row-major order as HF's `masked_scatter` does.
    pub fn embed_with_features(
        &self,
        tokens: &Tokens,
        placeholders: &[(i64, Tensor<B, 2>)],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (b, t) = (tokens.batch(), tokens.seq());
        let mut ids = tokens.input_ids.data.clone();
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        let mut tables = Vec::new();
        let mut offset = (b * t) as i64;
        for (token, features) in placeholders {
            let k = features.dims()[0];
            let mut seen = 0usize;
            for (i, id) in ids.iter_mut().enumerate() {
                if *id == *token {
                    if seen < k {
                        index[i] = offset + seen as i64;
                    }
                    seen += 1;
                    // The placeholder id may lie outside the vocabulary; its row is replaced.
                    *id = 0;
                }
            }
            if seen != k {
                return Err(Error::Batch(format!(
                    "{seen} placeholder tokens (id {token}) but the media give {k} features"
                )));
            }
            offset += k as i64;
            tables.push(features.clone());
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let text = self.language_model.embed(ids);
        if tables.is_empty() {
            return Ok(text);
        }
        let hidden = text.dims()[2];
        let dtype = text.dtype();
        let mut all = vec![text.reshape([b * t, hidden])];
        all.extend(tables.into_iter().map(|f| f.cast(dtype)));
        let table = Tensor::cat(all, 0);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * t]), device);
        Ok(table.select(0, index).reshape([b, t, hidden]))
    }

    pub fn logits(&self, embeds: Tensor<B, 3>, tokens: &Tokens) -> Tensor<B, 3> {
        self.language_model.forward_embeds(
            embeds,
            &tokens.default_positions(),
            tokens.attention_mask.as_ref().map(|m| m.data.as_slice()),
        )
    }
}
