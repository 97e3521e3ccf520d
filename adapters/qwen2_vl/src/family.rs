//! [`FamilyModel`] for Qwen2-VL and Qwen2.5-VL: key layouts, inputs, forward. One runtime per
//! family, each refusing the other's config, so that a 2.5 checkpoint never loads into the 2.0
//! vision tower.

use crate::collate::QwenVlCollator;
use crate::config::{QwenVlConfig, Variant};
use crate::model::{QwenVl, QwenVlInputs};
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

/// Checkpoint names onto the hub layout (what `save_pretrained` writes: `model.layers.N`,
/// `model.embed_tokens`, `visual.blocks.N`, `lm_head`); transformers 5 names the same modules
/// `model.language_model.*` and `model.visual.*` in memory.
pub fn qwen_vl_key_rules() -> KeyRules {
    KeyRules::default()
        .rename("model.language_model.", "model.")
        .rename("model.visual.", "visual.")
        .ignore_suffix("rotary_emb.inv_freq")
        .ignore_suffix("rotary_pos_emb.inv_freq")
}

#[derive(Debug, Clone, Copy)]
pub struct QwenVlFamily {
    pub variant: Variant,
}

pub static QWEN2_VL_RUNTIME: QwenVlFamily = QwenVlFamily {
    variant: Variant::Qwen2,
};
pub static QWEN2_5_VL_RUNTIME: QwenVlFamily = QwenVlFamily {
    variant: Variant::Qwen25,
};

impl QwenVlFamily {
    /// The model's config, refused when it is the other generation's.
    pub fn config(&self, dir: &ModelDir) -> Result<QwenVlConfig> {
        let path = dir.path("config.json");
        let c = QwenVlConfig::from_value(&dir.config, &path)?;
        if c.variant != self.variant {
            return Err(Error::config(
                &path,
                format!(
                    "model_type `{}` loaded as `{}`: Qwen2-VL and Qwen2.5-VL have different vision towers",
                    c.variant.model_type(),
                    self.variant.model_type()
                ),
            ));
        }
        Ok(c)
    }
}

fn optional_f32(file: &TensorFile, name: &str, rank: usize) -> Result<Option<HostTensor<f32>>> {
    if !file.contains(name) {
        return Ok(None);
    }
    let t = file.f32(name)?;
    if t.shape.len() != rank {
        return Err(Error::tensor(
            file.path(),
            name,
            format!("has {} dimensions, expected {rank}", t.shape.len()),
        ));
    }
    Ok(Some(t))
}

fn optional_i64(file: &TensorFile, name: &str) -> Result<Option<HostTensor<i64>>> {
    if file.contains(name) {
        Ok(Some(file.i64(name)?))
    } else {
        Ok(None)
    }
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
    ) -> Result<Self::Model<B>> {
        QwenVl::load(&store.root(), self.config(dir)?, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        if name.starts_with("visual.merger") {
            Part::Projector
        } else if name.starts_with("visual.") {
            Part::VisionTower
        } else {
            Part::Llm
        }
    }

    fn runtime_name(&self, canonical: &str) -> String {
        if let Some(rest) = canonical.strip_prefix("visual.") {
            format!("model.visual.{rest}")
        } else if let Some(rest) = canonical.strip_prefix("model.") {
            format!("model.language_model.{rest}")
        } else {
            canonical.to_string()
        }
    }

    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        match part {
            Part::VisionTower => &["visual.patch_embed", "visual.blocks"],
            Part::Projector => &["visual.merger"],
            Part::Llm => &[],
        }
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<QwenVlCollator> {
        QwenVlCollator::new(dir, self.config(dir)?, options)
    }

    fn inputs_to_tensors(&self, inputs: &QwenVlInputs) -> Vec<(String, AnyTensor)> {
        let t = &inputs.tokens;
        let mut out = t.to_tensors();
        for (name, v) in [
            ("image_grid_thw", &inputs.image_grid_thw),
            ("video_grid_thw", &inputs.video_grid_thw),
        ] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::I64(v.clone())));
            }
        }
        for (name, v) in [
            ("pixel_values", &inputs.pixel_values),
            ("pixel_values_videos", &inputs.pixel_values_videos),
            ("second_per_grid_ts", &inputs.second_per_grid_ts),
        ] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::F32(v.clone())));
            }
        }
        out
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<QwenVlInputs> {
        Ok(QwenVlInputs {
            tokens: Tokens::from_file(file)?,
            pixel_values: optional_f32(file, "pixel_values", 2)?,
            image_grid_thw: optional_i64(file, "image_grid_thw")?,
            pixel_values_videos: optional_f32(file, "pixel_values_videos", 2)?,
            video_grid_thw: optional_i64(file, "video_grid_thw")?,
            second_per_grid_ts: optional_f32(file, "second_per_grid_ts", 1)?,
        })
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
        model.forward(inputs, device)
    }

    fn prefill<B: Backend>(
        &self,
        model: &QwenVl<B>,
        inputs: &QwenVlInputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        model.prefill(inputs, device).map(Some)
    }

    fn decode<B: Backend>(
        &self,
        model: &QwenVl<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        _device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(model.language_model.decode(ids, cache))
    }
}
