//! The LLaVA model (`modeling_llava.py`, `LlavaForConditionalGeneration`): vision tower ->
//! selected hidden states -> 2-layer projector -> features written over the image placeholder
//! tokens of the LLM input, then the LLM. Shared by the NeXT / OneVision / NeXT-Video variants,
//! which differ in how image features are arranged.

use crate::config::{LlavaConfig, SelectStrategy};
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use lmms_core::burn;
use lmms_core::error::Result;
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

    pub fn logits(&self, embeds: Tensor<B, 3>, tokens: &Tokens) -> Tensor<B, 3> {
        self.language_model.forward_embeds(
            embeds,
            &tokens.default_positions(),
            tokens.attention_mask.as_ref().map(|m| m.data.as_slice()),
        )
    }
}
