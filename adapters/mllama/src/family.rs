//! [`FamilyModel`] for Mllama: key layouts, inputs, forward.

use crate::collate::MllamaCollator;
use crate::config::MllamaConfig;
use crate::model::{Mllama, MllamaInputs};
use lmms_core::burn::tensor::Tensor;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::collator::CollateOptions;
use lmms_core::error::{Error, Result};
use lmms_core::llm::KvCache;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::{FamilyModel, Plans, Tokens};
use lmms_core::strategy::Part;
use lmms_core::tensor_file::{AnyTensor, HostTensor, TensorFile};
use lmms_core::weights::{KeyRules, WeightStore};

/// Checkpoint names onto the hub layout the modules use (what the hub ships and transformers
/// 5.23's `save_pretrained` writes: `language_model.model.*`, `language_model.lm_head`,
/// `vision_model.*`, `multi_modal_projector.*`); transformers 5 names them
/// `model.language_model.*`, `lm_head`, `model.vision_model.*`, `model.multi_modal_projector.*`
/// in memory.
pub fn mllama_key_rules() -> KeyRules {
    KeyRules::default()
        .rename("model.language_model.", "language_model.model.")
        .rename("model.vision_model.", "vision_model.")
        .rename("model.multi_modal_projector.", "multi_modal_projector.")
        .rename("lm_head.", "language_model.lm_head.")
        .ignore_suffix("rotary_emb.inv_freq")
}

/// Canonical (hub) prefix -> transformers 5's run-time module name.
const RUNTIME_NAMES: [(&str, &str); 4] = [
    ("language_model.model", "model.language_model"),
    ("language_model.lm_head", "lm_head"),
    ("vision_model", "model.vision_model"),
    ("multi_modal_projector", "model.multi_modal_projector"),
];

#[derive(Debug, Clone, Copy)]
pub struct MllamaFamily;

pub static MLLAMA_RUNTIME: MllamaFamily = MllamaFamily;

impl MllamaFamily {
    pub fn config(&self, dir: &ModelDir) -> Result<MllamaConfig> {
        MllamaConfig::from_value(&dir.config, &dir.path("config.json"))
    }
}

fn optional<T>(
    file: &TensorFile,
    name: &str,
    rank: usize,
    read: impl Fn(&str) -> Result<HostTensor<T>>,
) -> Result<Option<HostTensor<T>>> {
    if !file.contains(name) {
        return Ok(None);
    }
    let t = read(name)?;
    if t.shape.len() != rank {
        return Err(Error::tensor(
            file.path(),
            name,
            format!("has {} dimensions, expected {rank}", t.shape.len()),
        ));
    }
    Ok(Some(t))
}

impl FamilyModel for MllamaFamily {
    type Inputs = MllamaInputs;
    type Collator = MllamaCollator;
    type Model<B: Backend> = Mllama<B>;

    fn key_rules(&self) -> KeyRules {
        mllama_key_rules()
    }

    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self::Model<B>> {
        Mllama::load(&store.root(), self.config(dir)?, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        if name.starts_with("vision_model.") {
            Part::VisionTower
        } else if name.starts_with("multi_modal_projector") {
            Part::Projector
        } else {
            Part::Llm
        }
    }

    fn runtime_name(&self, canonical: &str) -> String {
        for (from, to) in RUNTIME_NAMES {
            if canonical == from {
                return to.to_string();
            }
            if let Some(rest) = canonical
                .strip_prefix(from)
                .and_then(|r| r.strip_prefix('.'))
            {
                return format!("{to}.{rest}");
            }
        }
        canonical.to_string()
    }

    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        match part {
            Part::VisionTower => &["vision_model"],
            Part::Projector => &["multi_modal_projector"],
            Part::Llm => &[],
        }
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<MllamaCollator> {
        MllamaCollator::new(dir, self.config(dir)?, options)
    }

    fn inputs_to_tensors(&self, inputs: &MllamaInputs) -> Vec<(String, AnyTensor)> {
        let mut out = inputs.tokens.to_tensors();
        if let Some(p) = &inputs.pixel_values {
            out.push(("pixel_values".to_string(), AnyTensor::F32(p.clone())));
        }
        for (name, v) in [
            ("aspect_ratio_ids", &inputs.aspect_ratio_ids),
            ("aspect_ratio_mask", &inputs.aspect_ratio_mask),
            ("cross_attention_mask", &inputs.cross_attention_mask),
        ] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::I64(v.clone())));
            }
        }
        out
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<MllamaInputs> {
        let i64s = |n: &str| file.i64(n);
        Ok(MllamaInputs {
            tokens: Tokens::from_file(file)?,
            pixel_values: optional(file, "pixel_values", 6, |n| file.f32(n))?,
            aspect_ratio_ids: optional(file, "aspect_ratio_ids", 2, i64s)?,
            aspect_ratio_mask: optional(file, "aspect_ratio_mask", 3, i64s)?,
            cross_attention_mask: optional(file, "cross_attention_mask", 4, i64s)?,
        })
    }

    fn tokens<'a>(&self, inputs: &'a MllamaInputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn forward<B: Backend>(
        &self,
        model: &Mllama<B>,
        inputs: &MllamaInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        model.forward(inputs, device)
    }

    fn prefill<B: Backend>(
        &self,
        model: &Mllama<B>,
        inputs: &MllamaInputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        model.prefill(inputs, device).map(Some)
    }

    fn decode<B: Backend>(
        &self,
        model: &Mllama<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        model.language_model.decode(ids, cache, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_are_transformers5_module_names() {
        let f = MllamaFamily;
        assert_eq!(
            f.runtime_name("language_model.model.layers.3.cross_attn.q_proj"),
            "model.language_model.layers.3.cross_attn.q_proj"
        );
        assert_eq!(f.runtime_name("language_model.lm_head"), "lm_head");
        assert_eq!(
            f.runtime_name("vision_model.global_transformer.layers.0.self_attn.o_proj"),
            "model.vision_model.global_transformer.layers.0.self_attn.o_proj"
        );
        assert_eq!(f.part_of("multi_modal_projector.weight"), Part::Projector);
        assert_eq!(f.part_of("vision_model.class_embedding"), Part::VisionTower);
        assert_eq!(
            f.part_of("language_model.model.layers.1.cross_attn_attn_gate"),
            Part::Llm
        );
    }
}
