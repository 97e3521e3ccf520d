//! [`FamilyModel`] for LLaVA-1.5 / LLaVA-Interleave: key layouts, inputs, forward.

use crate::config::LlavaConfig;
use crate::model::Llava;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::{FamilyModel, Plans, Tokens};
use lmms_core::tensor_file::{HostTensor, TensorFile};
use lmms_core::weights::{KeyRules, WeightStore};

/// Checkpoint names onto the hub layout the modules use. transformers 5 keeps the LLM under
/// `model.language_model` and the head at `lm_head`; its `save_pretrained` writes the hub layout
/// but drops the vision tower's `vision_model.` level, which hub checkpoints have.
pub fn llava_key_rules() -> KeyRules {
    KeyRules::default()
        .rename("vision_tower.vision_model.", "vision_tower.vision_model.")
        .rename("vision_tower.", "vision_tower.vision_model.")
        .rename(
            "model.vision_tower.vision_model.",
            "vision_tower.vision_model.",
        )
        .rename("model.vision_tower.", "vision_tower.vision_model.")
        .rename("model.language_model.", "language_model.model.")
        .rename("model.multi_modal_projector.", "multi_modal_projector.")
        .rename("model.image_newline", "image_newline")
        .rename("lm_head.", "language_model.lm_head.")
        .ignore_suffix("position_ids")
        .ignore_suffix("rotary_emb.inv_freq")
}

/// A LLaVA batch: tokens and `pixel_values` `[N, C, H, W]` (absent for text-only batches).
#[derive(Debug, Clone)]
pub struct LlavaInputs {
    pub tokens: Tokens,
    pub pixel_values: Option<HostTensor<f32>>,
}

#[derive(Debug, Clone, Copy)]
pub struct LlavaFamily;

impl LlavaFamily {
    fn config(dir: &ModelDir) -> Result<LlavaConfig> {
        LlavaConfig::from_value(&dir.config, &dir.path("config.json"))
    }
}

impl FamilyModel for LlavaFamily {
    type Inputs = LlavaInputs;
    type Model<B: Backend> = Llava<B>;

    fn key_rules(&self) -> KeyRules {
        llava_key_rules()
    }

    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self::Model<B>> {
        let c = Self::config(dir)?;
        Llava::load(&store.root(), c, plans, device)
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<LlavaInputs> {
        let tokens = Tokens::from_file(file)?;
        let pixel_values = if file.contains("pixel_values") {
            let p = file.f32("pixel_values")?;
            if p.shape.len() != 4 {
                return Err(Error::tensor(
                    file.path(),
                    "pixel_values",
                    format!(
                        "has shape {:?}, expected [images, channels, height, width]",
                        p.shape
                    ),
                ));
            }
            Some(p)
        } else {
            None
        };
        Ok(LlavaInputs {
            tokens,
            pixel_values,
        })
    }

    fn tokens<'a>(&self, inputs: &'a LlavaInputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn forward<B: Backend>(
        &self,
        model: &Self::Model<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let c = &model.config;
        let mut placeholders = Vec::new();
        if let Some(p) = &inputs.pixel_values {
            let [n, ch, h, w] = [p.shape[0], p.shape[1], p.shape[2], p.shape[3]];
            let pixels =
                Tensor::<B, 4>::from_data(TensorData::new(p.data.clone(), [n, ch, h, w]), device);
            let features = model.image_features(c, pixels);
            let [n, k, d] = features.dims();
            placeholders.push((c.image_token_id, features.reshape([n * k, d])));
        }
        let embeds = model.embed_with_features(&inputs.tokens, &placeholders, device)?;
        Ok(model.logits(embeds, &inputs.tokens))
    }
}
