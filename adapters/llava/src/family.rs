//! [`FamilyModel`] for the LLaVA variants: key layouts, inputs, forward.

use crate::collate::LlavaCollator;
use crate::config::{LlavaConfig, Variant};
use crate::model::Llava;
use crate::pack;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::collator::CollateOptions;
use lmms_core::error::{Error, Result};
use lmms_core::llm::KvCache;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::{FamilyModel, Plans, Tokens};
use lmms_core::strategy::Part;
use lmms_core::tensor_file::{AnyTensor, HostTensor, TensorFile};
use lmms_core::vision::anyres;
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

/// A LLaVA batch: tokens plus, where present, `pixel_values` (`[N, C, H, W]`, or
/// `[N, tiles, C, H, W]` for anyres), `image_sizes` (`[N, 2]`, original height and width) and
/// `pixel_values_videos` (`[V, frames, C, H, W]`).
#[derive(Debug, Clone)]
pub struct LlavaInputs {
    pub tokens: Tokens,
    pub pixel_values: Option<HostTensor<f32>>,
    pub image_sizes: Option<HostTensor<i64>>,
    pub pixel_values_videos: Option<HostTensor<f32>>,
    /// Images per sample. OneVision tiles an image only when it is its sample's only one (HF's
    /// `batch_num_images`); without it every image is tiled.
    pub batch_num_images: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Copy)]
pub struct LlavaFamily;

fn optional_f32(file: &TensorFile, name: &str, ranks: &[usize]) -> Result<Option<HostTensor<f32>>> {
    if !file.contains(name) {
        return Ok(None);
    }
    let t = file.f32(name)?;
    if !ranks.contains(&t.shape.len()) {
        return Err(Error::tensor(
            file.path(),
            name,
            format!(
                "has {} dimensions, expected one of {ranks:?}",
                t.shape.len()
            ),
        ));
    }
    Ok(Some(t))
}

/// Pixels on the device, in the dtype the vision tower's weights have.
fn upload<B: Backend, const D: usize>(
    model: &Llava<B>,
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let dtype = model.vision_tower.patch_embedding.val().dtype();
    Tensor::<B, D>::from_data(TensorData::new(data, shape), device).cast(dtype)
}

impl LlavaFamily {
    /// Image features, per image packed as the variant does, concatenated: `[K, hidden]`.
    fn images<B: Backend>(
        model: &Llava<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Option<Tensor<B, 2>>> {
        let c = &model.config;
        let Some(p) = &inputs.pixel_values else {
            return Ok(None);
        };
        if p.shape.len() == 4 {
            let [n, ch, h, w] = [p.shape[0], p.shape[1], p.shape[2], p.shape[3]];
            let f = model.image_features(c, upload(model, p.data.clone(), [n, ch, h, w], device));
            let [n, k, d] = f.dims();
            if c.variant == Variant::Llava {
                return Ok(Some(f.reshape([n * k, d])));
            }
            let per_image = (0..n)
                .map(|i| {
                    pack::pack_image(
                        c,
                        f.clone().slice([i..i + 1, 0..k, 0..d]),
                        (0, 0),
                        model.newline(),
                    )
                })
                .collect();
            return Ok(Some(Tensor::cat(per_image, 0)));
        }
        // Anyres: [N, max_tiles, C, H, W], zero-padded past each image's own tile count.
        let [n, max_tiles, ch, h, w] = [p.shape[0], p.shape[1], p.shape[2], p.shape[3], p.shape[4]];
        let sizes = inputs
            .image_sizes
            .as_ref()
            .ok_or_else(|| Error::Batch("anyres pixel_values need image_sizes".into()))?;
        if sizes.shape != [n, 2] {
            return Err(Error::Batch(format!(
                "image_sizes has shape {:?}, expected [{n}, 2]",
                sizes.shape
            )));
        }
        let tile_len = ch * h * w;
        let mut data = Vec::new();
        let mut counts = Vec::with_capacity(n);
        // OneVision: images of multi-image samples keep only their base tile.
        let single: Vec<bool> = match (&inputs.batch_num_images, c.variant) {
            (Some(per_sample), Variant::OneVision) => per_sample
                .iter()
                .flat_map(|&k| std::iter::repeat_n(k == 1, k))
                .collect(),
            _ => vec![true; n],
        };
        if single.len() != n {
            return Err(Error::Batch(format!(
                "batch_num_images counts {} images but pixel_values holds {n}",
                single.len()
            )));
        }
        for (i, &alone) in single.iter().enumerate() {
            let original = (sizes.data[2 * i] as usize, sizes.data[2 * i + 1] as usize);
            let tiles = if alone {
                anyres::num_tiles(original, &c.image_grid_pinpoints, c.vision.image_size)
            } else {
                1
            };
            if tiles > max_tiles {
                return Err(Error::Batch(format!(
                    "image {i} of size {original:?} needs {tiles} tiles but pixel_values holds {max_tiles}"
                )));
            }
            let start = i * max_tiles * tile_len;
            data.extend_from_slice(&p.data[start..start + tiles * tile_len]);
            counts.push((tiles, original));
        }
        let total: usize = counts.iter().map(|(t, _)| t).sum();
        let f = model.image_features(c, upload(model, data, [total, ch, h, w], device));
        let [_, k, d] = f.dims();
        let mut at = 0;
        let mut packed = Vec::with_capacity(n);
        for (tiles, original) in counts {
            let one = f.clone().slice([at..at + tiles, 0..k, 0..d]);
            packed.push(pack::pack_image(c, one, original, model.newline()));
            at += tiles;
        }
        Ok(Some(Tensor::cat(packed, 0)))
    }

    /// Video features `[K, hidden]`, all videos' frames in order.
    fn videos<B: Backend>(
        model: &Llava<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Option<Tensor<B, 2>>> {
        let c = &model.config;
        let Some(v) = &inputs.pixel_values_videos else {
            return Ok(None);
        };
        let [n, frames, ch, h, w] = [v.shape[0], v.shape[1], v.shape[2], v.shape[3], v.shape[4]];
        let pixels = upload(model, v.data.clone(), [n * frames, ch, h, w], device);
        let per_frame = match c.variant {
            Variant::NextVideo => {
                let pooled = pack::pool_before_projector(c, model.select_features(c, pixels));
                model.multi_modal_projector.forward(pooled)
            }
            Variant::OneVision => pack::pool_after_projector(c, model.image_features(c, pixels)),
            // LLaVA-Interleave and NeXT take videos as images, through the image token.
            _ => {
                return Err(Error::Batch(
                    "this model takes no pixel_values_videos".into(),
                ));
            }
        };
        let [_, k, d] = per_frame.dims();
        let per_video = per_frame.reshape([n, frames * k, d]);
        let per_video = match (c.variant, model.newline()) {
            (Variant::OneVision, Some(nl)) => Tensor::cat(
                vec![
                    per_video.clone(),
                    nl.cast(per_video.dtype())
                        .reshape([1, 1, d])
                        .expand([n, 1, d]),
                ],
                1,
            ),
            _ => per_video,
        };
        let [n, k, d] = per_video.dims();
        Ok(Some(per_video.reshape([n * k, d])))
    }
}

impl FamilyModel for LlavaFamily {
    type Inputs = LlavaInputs;
    type Collator = LlavaCollator;
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
        let c = LlavaConfig::from_value(&dir.config, &dir.path("config.json"))?;
        Llava::load(&store.root(), c, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        if name.starts_with("vision_tower.") {
            Part::VisionTower
        } else if name.starts_with("multi_modal_projector.") || name == "image_newline" {
            Part::Projector
        } else {
            Part::Llm
        }
    }

    fn runtime_name(&self, canonical: &str) -> String {
        const MAP: [(&str, &str); 5] = [
            ("language_model.model", "model.language_model"),
            ("language_model.lm_head", "lm_head"),
            ("vision_tower.vision_model", "model.vision_tower"),
            ("multi_modal_projector", "model.multi_modal_projector"),
            ("image_newline", "model.image_newline"),
        ];
        for (from, to) in MAP {
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
            Part::VisionTower => &["vision_tower.vision_model"],
            Part::Projector => &["multi_modal_projector"],
            Part::Llm => &[],
        }
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<LlavaCollator> {
        LlavaCollator::new(dir, options)
    }

    fn inputs_to_tensors(&self, inputs: &LlavaInputs) -> Vec<(String, AnyTensor)> {
        let t = &inputs.tokens;
        let mut out = t.to_tensors();
        for (name, v) in [
            ("pixel_values", &inputs.pixel_values),
            ("pixel_values_videos", &inputs.pixel_values_videos),
        ] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::F32(v.clone())));
            }
        }
        if let Some(v) = &inputs.image_sizes {
            out.push(("image_sizes".to_string(), AnyTensor::I64(v.clone())));
        }
        if let Some(n) = &inputs.batch_num_images {
            let data: Vec<i64> = n.iter().map(|&k| k as i64).collect();
            out.push((
                "batch_num_images".to_string(),
                AnyTensor::I64(HostTensor {
                    shape: vec![data.len()],
                    data,
                }),
            ));
        }
        out
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<LlavaInputs> {
        Ok(LlavaInputs {
            tokens: Tokens::from_file(file)?,
            pixel_values: optional_f32(file, "pixel_values", &[4, 5])?,
            image_sizes: if file.contains("image_sizes") {
                Some(file.i64("image_sizes")?)
            } else {
                None
            },
            pixel_values_videos: optional_f32(file, "pixel_values_videos", &[5])?,
            batch_num_images: if file.contains("batch_num_images") {
                Some(
                    file.i64("batch_num_images")?
                        .data
                        .iter()
                        .map(|&n| n as usize)
                        .collect(),
                )
            } else {
                None
            },
        })
    }

    fn tokens<'a>(&self, inputs: &'a LlavaInputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn tokens_mut<'a>(&self, inputs: &'a mut LlavaInputs) -> Option<&'a mut Tokens> {
        Some(&mut inputs.tokens)
    }

    fn forward<B: Backend>(
        &self,
        model: &Llava<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let embeds = Self::embeds(model, inputs, device)?;
        Ok(model.logits(embeds, &inputs.tokens))
    }

    fn prefill<B: Backend>(
        &self,
        model: &Llava<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        let embeds = Self::embeds(model, inputs, device)?;
        let (logits, cache) = model.language_model.prefill_tokens(embeds, &inputs.tokens);
        Ok(Some((logits, cache)))
    }

    fn decode<B: Backend>(
        &self,
        model: &Llava<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        _device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(model.language_model.decode(ids, cache))
    }
}

impl LlavaFamily {
    /// Token embeddings with the image and video features in place of their placeholders.
    fn embeds<B: Backend>(
        model: &Llava<B>,
        inputs: &LlavaInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let c = &model.config;
        let mut placeholders = Vec::new();
        if let Some(f) = Self::images(model, inputs, device)? {
            placeholders.push((c.image_token_id, f));
        }
        if let Some(f) = Self::videos(model, inputs, device)? {
            let id = c
                .video_token_id
                .ok_or_else(|| Error::Batch("config.json has no video_token_index".into()))?;
            placeholders.push((id, f));
        }
        model
            .language_model
            .embed_with_features(&inputs.tokens, &placeholders, device)
    }
}
