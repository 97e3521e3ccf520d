//! [`FamilyModel`] for Qwen-VL-Chat: checkpoint names as the hub's remote code saves them
//! (`transformer.*`, `lm_head`), the batch (`input_ids` with `<img>` spans, `images`
//! `[N, 3, 448, 448]`: the pixels `visual.encode` builds from the paths in the spans), forward.

use crate::collate::QwenVlCollator;
use crate::config::QwenVlConfig;
use crate::model::QwenVl;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::collator::CollateOptions;
use lmms_core::error::{Error, Result};
use lmms_core::llm::KvCache;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::{FamilyModel, Plans, Tokens};
use lmms_core::strategy::Part;
use lmms_core::tensor_file::{AnyTensor, HostTensor, TensorFile};
use lmms_core::weights::{KeyRules, WeightStore};

/// A Qwen-VL batch.
#[derive(Debug, Clone)]
pub struct QwenVlInputs {
    pub tokens: Tokens,
    /// `[N, 3, H, W]`, one image per `<img>` span in row-major order.
    pub images: Option<HostTensor<f32>>,
}

#[derive(Debug, Clone, Copy)]
pub struct QwenVlFamily;

/// Checkpoint names are used as they are; the cached rotary frequencies and the attention's
/// `masked_bias` buffer some checkpoints carry are ignored.
pub fn qwen_vl_key_rules() -> KeyRules {
    KeyRules::default()
        .ignore_suffix("rotary_emb.inv_freq")
        .ignore_suffix("attn.masked_bias")
}

impl FamilyModel for QwenVlFamily {
    type Inputs = QwenVlInputs;
    type Collator = QwenVlCollator;
    type Model<B: Backend> = QwenVl<B>;

    fn key_rules(&self) -> KeyRules {
        qwen_vl_key_rules()
    }

    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<QwenVl<B>> {
        let c = QwenVlConfig::from_value(&dir.config, &dir.path("config.json"))?;
        QwenVl::load(&store.root(), &c, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        let projector = ["attn_pool", "ln_post", "proj"].iter().any(|m| {
            name.strip_prefix("transformer.visual.")
                .is_some_and(|r| r == *m || r.starts_with(&format!("{m}.")))
        });
        if projector {
            Part::Projector
        } else if name.starts_with("transformer.visual.") {
            Part::VisionTower
        } else {
            Part::Llm
        }
    }

    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        match part {
            Part::VisionTower => &[
                "transformer.visual.conv1",
                "transformer.visual.ln_pre",
                "transformer.visual.transformer",
            ],
            Part::Projector => &["transformer.visual.attn_pool", "transformer.visual.ln_post"],
            Part::Llm => &[],
        }
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<QwenVlCollator> {
        QwenVlCollator::new(dir, options)
    }

    fn inputs_to_tensors(&self, inputs: &QwenVlInputs) -> Vec<(String, AnyTensor)> {
        let t = &inputs.tokens;
        let mut out = t.to_tensors();
        if let Some(p) = &inputs.images {
            out.push(("images".to_string(), AnyTensor::F32(p.clone())));
        }
        out
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<QwenVlInputs> {
        let tokens = Tokens::from_file(file)?;
        let name = ["images", "pixel_values"]
            .into_iter()
            .find(|n| file.contains(n));
        let images = match name {
            Some(n) => {
                let p = file.f32(n)?;
                if p.shape.len() != 4 || p.shape[1] != 3 {
                    return Err(Error::tensor(
                        file.path(),
                        n,
                        format!("has shape {:?}, expected [N, 3, H, W]", p.shape),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        Ok(QwenVlInputs { tokens, images })
    }

    fn tokens<'a>(&self, inputs: &'a QwenVlInputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn tokens_mut<'a>(&self, inputs: &'a mut QwenVlInputs) -> Option<&'a mut Tokens> {
        Some(&mut inputs.tokens)
    }

    fn forward<B: Backend>(
        &self,
        model: &QwenVl<B>,
        inputs: &QwenVlInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        model.forward(&inputs.tokens, Self::images(inputs, device), device)
    }

    fn prefill<B: Backend>(
        &self,
        model: &QwenVl<B>,
        inputs: &QwenVlInputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        model
            .prefill(&inputs.tokens, Self::images(inputs, device), device)
            .map(Some)
    }

    fn decode<B: Backend>(
        &self,
        model: &QwenVl<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(model.decode(ids, cache, device))
    }
}

impl QwenVlFamily {
    fn images<B: Backend>(inputs: &QwenVlInputs, device: &B::Device) -> Option<Tensor<B, 4>> {
        inputs.images.as_ref().map(|p| {
            let shape: [usize; 4] = [p.shape[0], p.shape[1], p.shape[2], p.shape[3]];
            Tensor::<B, 4>::from_data(TensorData::new(p.data.clone(), shape), device)
        })
    }
}
