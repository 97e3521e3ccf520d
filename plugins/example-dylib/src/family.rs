//! [`FamilyModel`] for the linear-projector LLaVA: the model and forward are this crate's; key
//! layouts, PEFT names, inputs and the collator are LLaVA-1.5's, taken from `lmms-llava`.

use crate::model::LinearLlava;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::collator::CollateOptions;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::{FamilyModel, Plans, Tokens};
use lmms_core::strategy::Part;
use lmms_core::tensor_file::{AnyTensor, TensorFile};
use lmms_core::weights::{KeyRules, WeightStore};
use lmms_llava::LlavaFamily;
use lmms_llava::collate::LlavaCollator;
use lmms_llava::config::{LlavaConfig, Variant};
use lmms_llava::family::{LlavaInputs, llava_key_rules};

#[derive(Debug, Clone, Copy)]
pub struct LinearLlavaFamily;

impl FamilyModel for LinearLlavaFamily {
    type Inputs = LlavaInputs;
    type Collator = LlavaCollator;
    type Model<B: Backend> = LinearLlava<B>;

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
        let path = dir.path("config.json");
        let c = LlavaConfig::from_value(&dir.config, &path)?;
        if c.variant != Variant::Llava {
            return Err(Error::config(
                &path,
                "the linear-projector LLaVA has model_type `llava` (one tile per image)",
            ));
        }
        LinearLlava::load(&store.root(), c, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        LlavaFamily.part_of(name)
    }

    fn runtime_name(&self, canonical: &str) -> String {
        LlavaFamily.runtime_name(canonical)
    }

    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        LlavaFamily.part_modules(part)
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<LlavaCollator> {
        LlavaFamily.collator(dir, options)
    }

    fn inputs_to_tensors(&self, inputs: &LlavaInputs) -> Vec<(String, AnyTensor)> {
        LlavaFamily.inputs_to_tensors(inputs)
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<LlavaInputs> {
        LlavaFamily.read_inputs(file)
    }

    fn tokens<'a>(&self, inputs: &'a LlavaInputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn tokens_mut<'a>(&self, inputs: &'a mut LlavaInputs) -> Option<&'a mut Tokens> {
        Some(&mut inputs.tokens)
    }

    fn forward<B: Backend>(
        &self,
        model: &LinearLlava<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        if inputs.pixel_values_videos.is_some() {
            return Err(Error::Batch(
                "this model takes no pixel_values_videos".into(),
            ));
        }
        let features = match &inputs.pixel_values {
            None => None,
            Some(p) if p.shape.len() == 4 => {
                let shape = [p.shape[0], p.shape[1], p.shape[2], p.shape[3]];
                // Pixels in the dtype of the vision tower's weights.
                let dtype = model.vision_tower.patch_embedding.val().dtype();
                let pixels =
                    Tensor::<B, 4>::from_data(TensorData::new(p.data.clone(), shape), device)
                        .cast(dtype);
                Some(model.image_features(pixels))
            }
            Some(p) => {
                return Err(Error::Batch(format!(
                    "pixel_values has shape {:?}; this model takes [N, C, H, W]",
                    p.shape
                )));
            }
        };
        let embeds = model.embed(&inputs.tokens, features, device)?;
        Ok(model.logits(embeds, &inputs.tokens))
    }
}
