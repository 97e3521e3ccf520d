//! The model: CLIP/SigLIP vision tower -> selected hidden states -> ONE linear layer -> image
//! features written over the image placeholder tokens -> the LLM. Like LLaVA-1.5 but with
//! `multi_modal_projector` a plain `nn.Linear(vision_hidden, text_hidden)`.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
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
        let (b, t) = (tokens.batch(), tokens.seq());
        let image_token = self.config.image_token_id;
        let mut ids = tokens.input_ids.data.clone();
        // Row i of the [B*T + K, hidden] table: a token's own embedding or an image feature.
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        let k = features.as_ref().map_or(0, |f| f.dims()[0]);
        let mut seen = 0usize;
        for (i, id) in ids.iter_mut().enumerate() {
            if *id == image_token {
                if seen < k {
                    index[i] = (b * t + seen) as i64;
                }
                seen += 1;
                // The placeholder id may lie outside the vocabulary; its row is replaced.
                *id = 0;
            }
        }
        if seen != k {
            return Err(Error::Batch(format!(
                "{seen} image tokens (id {image_token}) but the images give {k} features"
            )));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let text = self.language_model.embed(ids);
        let Some(features) = features else {
            return Ok(text);
        };
        let hidden = text.dims()[2];
        let dtype = text.dtype();
        let table = Tensor::cat(vec![text.reshape([b * t, hidden]), features.cast(dtype)], 0);
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
