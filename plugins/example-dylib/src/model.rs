//! The model: CLIP/SigLIP vision tower -> selected hidden states -> ONE linear layer -> image
//! features written over the image placeholder tokens -> the LLM. Like LLaVA-1.5 but with
//! `multi_modal_projector` a plain `nn.Linear(vision_hidden, text_hidden)`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use lmms_core::burn;
use lmms_core::error::{Error, Result};
use lmms_core::llm::CausalLm;
use lmms_core::nn::Linear;
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::vision::VisionTransformer;
use lmms_core::weights::Vars;
use lmms_llava::config::{LlavaConfig, SelectStrategy};

#[derive(Module, Debug)]
pub struct LinearLlava<B: Backend> {
    pub vision_tower: VisionTransformer<B>,
    pub multi_modal_projector: Linear<B>,
    pub language_model: CausalLm<B>,
    #[module(skip)]
    pub config: LlavaConfig,
}

impl<B: Backend> LinearLlava<B> {
    pub fn load(
        root: &Vars<'_>,
        c: LlavaConfig,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(LinearLlava {
            vision_tower: VisionTransformer::load(
                &root.pp("vision_tower.vision_model"),
                &c.vision,
                &plans.vision_tower,
                device,
            )?,
            multi_modal_projector: Linear::load(
                &root.pp("multi_modal_projector"),
                c.vision_feature_dim(),
                c.text.hidden_size,
                true,
                &plans.projector,
                device,
            )?,
            language_model: CausalLm::load(
                &root.pp("language_model"),
                &c.text,
                &plans.llm,
                device,
            )?,
            config: c,
        })
    }

    /// Projected image features `[N * P, hidden]` for pixel values `[N, C, H, W]`.
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let c = &self.config;
        let states = self
            .vision_tower
            .hidden_states(pixels, &c.vision_feature_layers);
        let x = Tensor::cat(states, 2);
        let x = match c.select_strategy {
            SelectStrategy::Default => {
                let [n, p, d] = x.dims();
                x.slice([0..n, 1..p, 0..d])
            }
            SelectStrategy::Full => x,
        };
        let f = self.multi_modal_projector.forward(x);
        let [n, p, d] = f.dims();
        f.reshape([n * p, d])
    }

    /// Token embeddings with `features` (`[K, hidden]`) written over the `image_token` positions
    /// in row-major order, as HF's `masked_scatter` does.
    pub fn embed(
        &self,
        tokens: &Tokens,
        features: Option<Tensor<B, 2>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let image_token = self.config.image_token_id;
        let placeholders: Vec<(i64, Tensor<B, 2>)> = match features {
            Some(f) => vec![(image_token, f)],
            None if tokens.input_ids.data.contains(&image_token) => {
                return Err(Error::Batch(format!(
                    "image tokens (id {image_token}) but no images"
                )));
            }
            None => vec![],
        };
        self.language_model
            .embed_with_features(tokens, &placeholders, device)
    }

    pub fn logits(&self, embeds: Tensor<B, 3>, tokens: &Tokens) -> Tensor<B, 3> {
        self.language_model.forward_embeds(
            embeds,
            &tokens.default_positions(),
            tokens.attention_mask.as_ref().map(|m| m.data.as_slice()),
        )
    }
}
