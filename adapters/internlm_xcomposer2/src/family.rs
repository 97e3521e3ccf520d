//! [`FamilyModel`] for InternLM-XComposer2-VL: checkpoint names as the hub ships them, inputs
//! as the remote code's `forward(inputs_embeds=..., im_mask=...)` takes them.

use crate::collate::XComposer2Collator;
use crate::config::XComposer2Config;
use crate::model::XComposer2;
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

/// Checkpoint names are used as they are; CLIP's `position_ids` buffer and cached rotary
/// frequencies are ignored.
pub fn xcomposer2_key_rules() -> KeyRules {
    KeyRules::default()
        .ignore_suffix("position_ids")
        .ignore_suffix("rotary_emb.inv_freq")
}

/// One batch: tokens (image rows hold a placeholder id), `im_mask` (`[B, T]`, 1 = image row),
/// `images` (`[N, 3, S, S]`, the k-th run of image rows is image k), or instead of the images
/// the finished `inputs_embeds` (`[B, T, hidden]`) as the reference's forward receives them.
#[derive(Debug, Clone)]
pub struct XComposer2Inputs {
    pub tokens: Tokens,
    pub im_mask: Option<HostTensor<i64>>,
    pub images: Option<HostTensor<f32>>,
    pub inputs_embeds: Option<HostTensor<f32>>,
}

#[derive(Debug, Clone, Copy)]
pub struct XComposer2Family;

/// `config.json`, with the fixture's `meta.json` when the directory has one.
pub fn read_config(dir: &ModelDir) -> Result<XComposer2Config> {
    let meta_path = dir.root.join("meta.json");
    let meta = if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| Error::config(&meta_path, format!("bad JSON: {e}")))?,
        )
    } else {
        None
    };
    XComposer2Config::from_value(&dir.config, &dir.path("config.json"), meta.as_ref())
}

impl FamilyModel for XComposer2Family {
    type Inputs = XComposer2Inputs;
    type Collator = XComposer2Collator;
    type Model<B: Backend> = XComposer2<B>;

    fn key_rules(&self) -> KeyRules {
        xcomposer2_key_rules()
    }

    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<XComposer2<B>> {
        XComposer2::load(&store.root(), &read_config(dir)?, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        if name.starts_with("vit.") {
            Part::VisionTower
        } else if name.starts_with("vision_proj.") {
            Part::Projector
        } else {
            Part::Llm
        }
    }

    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        match part {
            Part::VisionTower => &["vit"],
            Part::Projector => &["vision_proj"],
            Part::Llm => &[],
        }
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<XComposer2Collator> {
        XComposer2Collator::new(dir, options)
    }

    fn inputs_to_tensors(&self, inputs: &XComposer2Inputs) -> Vec<(String, AnyTensor)> {
        let t = &inputs.tokens;
        let mut out = t.to_tensors();
        for (name, v) in [("im_mask", &inputs.im_mask)] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::I64(v.clone())));
            }
        }
        for (name, v) in [
            ("images", &inputs.images),
            ("inputs_embeds", &inputs.inputs_embeds),
        ] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::F32(v.clone())));
            }
        }
        out
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<XComposer2Inputs> {
        let tokens = Tokens::from_file(file)?;
        let im_mask = if file.contains("im_mask") {
            let m = file.i64("im_mask")?;
            if m.shape != tokens.input_ids.shape {
                return Err(Error::tensor(
                    file.path(),
                    "im_mask",
                    format!(
                        "has shape {:?} but input_ids has {:?}",
                        m.shape, tokens.input_ids.shape
                    ),
                ));
            }
            Some(m)
        } else {
            None
        };
        let f32_of_rank = |name: &str, rank: usize| -> Result<Option<HostTensor<f32>>> {
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
        };
        Ok(XComposer2Inputs {
            tokens,
            im_mask,
            images: f32_of_rank("images", 4)?,
            inputs_embeds: f32_of_rank("inputs_embeds", 3)?,
        })
    }

    fn tokens<'a>(&self, inputs: &'a XComposer2Inputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn forward<B: Backend>(
        &self,
        model: &XComposer2<B>,
        inputs: &XComposer2Inputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (embeds, im_mask) = Self::embeds(model, inputs, device)?;
        let t = &inputs.tokens;
        let positions = t.default_positions();
        let attention = t.attention_mask.as_ref().map(|m| m.data.as_slice());
        Ok(if im_mask.iter().any(|&m| m != 0) {
            model
                .model
                .forward_embeds_masked(embeds, &positions, attention, &im_mask)
        } else {
            model.model.forward_embeds(embeds, &positions, attention)
        })
    }

    /// The prompt with its image rows (PLoRA on them) once; generated tokens are text rows.
    fn prefill<B: Backend>(
        &self,
        model: &XComposer2<B>,
        inputs: &XComposer2Inputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        let (embeds, im_mask) = Self::embeds(model, inputs, device)?;
        let t = &inputs.tokens;
        let lm = &model.model;
        let positions = t.default_positions();
        let rope = lm.rope.cos_sin::<B>(&positions, t.batch(), t.seq(), device);
        let attention = t.attention_mask.as_ref().map(|m| m.data.as_slice());
        let rows = im_mask
            .iter()
            .any(|&m| m != 0)
            .then_some(im_mask.as_slice());
        Ok(Some(
            lm.prefill(embeds, rope, &positions, attention, None, rows),
        ))
    }

    fn decode<B: Backend>(
        &self,
        model: &XComposer2<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        _device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(model.model.decode(ids, cache))
    }
}

impl XComposer2Family {
    /// The input embeddings (images spliced in, or the given `inputs_embeds`) and the image
    /// rows (`im_mask`, `[B, T]`).
    fn embeds<B: Backend>(
        model: &XComposer2<B>,
        inputs: &XComposer2Inputs,
        device: &B::Device,
    ) -> Result<(Tensor<B, 3>, Vec<i64>)> {
        let t = &inputs.tokens;
        let (b, s) = (t.batch(), t.seq());
        let zeros = vec![0i64; b * s];
        let im_mask = inputs.im_mask.as_ref().map_or(&zeros, |m| &m.data);
        // The images when given (the whole model is exercised), else the finished embeddings.
        let embeds = match (&inputs.images, &inputs.inputs_embeds) {
            (None, Some(e)) => {
                let dtype = model.model.embed_tokens.weight.val().dtype();
                let shape = [e.shape[0], e.shape[1], e.shape[2]];
                if shape[..2] != [b, s] {
                    return Err(Error::Batch(format!(
                        "inputs_embeds has shape {:?} but input_ids has [{b}, {s}]",
                        e.shape
                    )));
                }
                Tensor::<B, 3>::from_data(TensorData::new(e.data.clone(), shape), device)
                    .cast(dtype)
            }
            (images, _) => {
                let features = match images {
                    Some(p) => {
                        let [n, c, h, w] = [p.shape[0], p.shape[1], p.shape[2], p.shape[3]];
                        let dtype = model.vit.patch_embedding.val().dtype();
                        let pixels = Tensor::<B, 4>::from_data(
                            TensorData::new(p.data.clone(), [n, c, h, w]),
                            device,
                        )
                        .cast(dtype);
                        let f = model.image_embeddings(pixels);
                        let [n, k, d] = f.dims();
                        Some(f.reshape([n * k, d]))
                    }
                    None => None,
                };
                model.splice(t, im_mask, features, device)?
            }
        };
        Ok((embeds, im_mask.clone()))
    }
}
