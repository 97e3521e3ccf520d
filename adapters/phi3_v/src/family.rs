//! [`FamilyModel`] for Phi-3-V: checkpoint names, the batch (`input_ids` with negative image
//! ids, `pixel_values` `[N, crops, 3, 336, 336]`, `image_sizes` `[N, 2]`), forward.

use crate::collate::Phi3VCollator;
use crate::config::Phi3VConfig;
use crate::model::Phi3V;
use lmms_collators::image::phi3_v::{CROP, Phi3VImageProcessor};
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

/// The CLIP tower's prefix in the checkpoint.
const TOWER: &str = "model.vision_embed_tokens.img_processor.vision_model";

/// Checkpoint names are used as they are; cached rotary frequencies and CLIP's position ids
/// are ignored.
pub fn phi3_v_key_rules() -> KeyRules {
    KeyRules::default()
        .ignore_suffix("rotary_emb.inv_freq")
        .ignore_suffix("position_ids")
}

/// A Phi-3-V batch.
#[derive(Debug, Clone)]
pub struct Phi3VInputs {
    /// Image positions hold `-k` for image `k` (1-based), as the HF processor writes them.
    pub tokens: Tokens,
    /// `[N, crop slots, 3, 336, 336]`: per image the global image, its crops, zero padding.
    pub pixel_values: Option<HostTensor<f32>>,
    /// `[N, 2]`: height and width of each image after the HD transform.
    pub image_sizes: Option<HostTensor<i64>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Phi3VFamily;

/// The checkpoint's CLIP width, MLP width and depth (for towers other than ViT-L/14-336).
fn tower_shape(dir: &ModelDir) -> Result<Option<(usize, usize, usize)>> {
    for path in dir.weights()?.files() {
        let file = TensorFile::open(path)?;
        let cls = format!("{TOWER}.embeddings.class_embedding");
        if !file.contains(&cls) {
            continue;
        }
        let width = file.shape(&cls)?[0];
        let mlp = file.shape(&format!("{TOWER}.encoder.layers.0.mlp.fc1.weight"))?[0];
        let layers = (0..)
            .take_while(|i| {
                file.contains(&format!("{TOWER}.encoder.layers.{i}.layer_norm1.weight"))
            })
            .count();
        return Ok(Some((width, mlp, layers)));
    }
    Ok(None)
}

/// Crops `(h, w)` of each image from `image_sizes`.
fn crops_of(sizes: &HostTensor<i64>) -> Vec<(usize, usize)> {
    sizes
        .data
        .chunks(2)
        .map(|s| (s[0] as usize / CROP, s[1] as usize / CROP))
        .collect()
}

/// Fixtures saved after the reference forward hold 0 where the image ids were: the remote
/// code clamps `input_ids` in place (`input_ids.clamp_min_(0)`). When `pixel_values` come with
/// no negative id, each image's positions are taken from the first run of at least its token
/// count of 0 ids that attend (`attention_mask` 1, so padding is never taken; row-major, images
/// in order) and marked `-k` again.
fn restore_clamped_image_ids(
    file: &TensorFile,
    tokens: &mut Tokens,
    sizes: &HostTensor<i64>,
) -> Result<()> {
    let ids = &mut tokens.input_ids.data;
    if ids.iter().any(|&i| i < 0) {
        return Ok(());
    }
    let mask = tokens.attention_mask.as_ref().map(|m| m.data.as_slice());
    let free = |p: usize, ids: &[i64]| ids[p] == 0 && mask.is_none_or(|m| m[p] != 0);
    let t = tokens.input_ids.shape[1];
    let mut at = 0;
    for (k, &(h, w)) in crops_of(sizes).iter().enumerate() {
        let n = Phi3VImageProcessor::num_img_tokens((h * CROP, w * CROP));
        let start = (at..ids.len().saturating_sub(n - 1))
            .find(|&s| s / t == (s + n - 1) / t && (s..s + n).all(|p| free(p, ids)));
        let Some(start) = start else {
            return Err(Error::tensor(
                file.path(),
                "input_ids",
                format!(
                    "has no negative image ids and no run of {n} zero ids for image {} \
                     (pixel_values are given)",
                    k + 1
                ),
            ));
        };
        ids[start..start + n].fill(-(k as i64 + 1));
        at = start + n;
    }
    Ok(())
}

impl FamilyModel for Phi3VFamily {
    type Inputs = Phi3VInputs;
    type Collator = Phi3VCollator;
    type Model<B: Backend> = Phi3V<B>;

    fn key_rules(&self) -> KeyRules {
        phi3_v_key_rules()
    }

    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Phi3V<B>> {
        let path = dir.path("config.json");
        let c = Phi3VConfig::from_value(&dir.config, &path)?;
        let small_tower = c
            .img_processor
            .as_ref()
            .is_some_and(|p| p.image_dim_out != 1024);
        let shape = if small_tower { tower_shape(dir)? } else { None };
        Phi3V::load(&store.root(), c, &path, shape, plans, device)
    }

    fn part_of(&self, name: &str) -> Part {
        if name.starts_with("model.vision_embed_tokens.img_processor.") {
            Part::VisionTower
        } else if name.starts_with("model.vision_embed_tokens.") {
            Part::Projector
        } else {
            Part::Llm
        }
    }

    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        match part {
            Part::VisionTower => &["model.vision_embed_tokens.img_processor"],
            Part::Projector => &["model.vision_embed_tokens.img_projection"],
            Part::Llm => &[],
        }
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<Phi3VCollator> {
        Phi3VCollator::new(dir, options)
    }

    fn inputs_to_tensors(&self, inputs: &Phi3VInputs) -> Vec<(String, AnyTensor)> {
        let t = &inputs.tokens;
        let mut out = t.to_tensors();
        if let Some(p) = &inputs.pixel_values {
            out.push(("pixel_values".to_string(), AnyTensor::F32(p.clone())));
        }
        if let Some(s) = &inputs.image_sizes {
            out.push(("image_sizes".to_string(), AnyTensor::I64(s.clone())));
        }
        out
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<Phi3VInputs> {
        let mut tokens = Tokens::from_file(file)?;
        let pixel_values = if file.contains("pixel_values") {
            let p = file.f32("pixel_values")?;
            if p.shape.len() != 5 {
                return Err(Error::tensor(
                    file.path(),
                    "pixel_values",
                    format!("has shape {:?}, expected [N, crops, 3, H, W]", p.shape),
                ));
            }
            Some(p)
        } else {
            None
        };
        let image_sizes = if file.contains("image_sizes") {
            Some(file.i64("image_sizes")?)
        } else {
            None
        };
        if let (Some(p), Some(s)) = (&pixel_values, &image_sizes) {
            if s.shape != [p.shape[0], 2] {
                return Err(Error::tensor(
                    file.path(),
                    "image_sizes",
                    format!("has shape {:?}, expected [{}, 2]", s.shape, p.shape[0]),
                ));
            }
            restore_clamped_image_ids(file, &mut tokens, s)?;
        }
        Ok(Phi3VInputs {
            tokens,
            pixel_values,
            image_sizes,
        })
    }

    fn tokens<'a>(&self, inputs: &'a Phi3VInputs) -> &'a Tokens {
        &inputs.tokens
    }

    fn tokens_mut<'a>(&self, inputs: &'a mut Phi3VInputs) -> Option<&'a mut Tokens> {
        Some(&mut inputs.tokens)
    }

    fn forward<B: Backend>(
        &self,
        model: &Phi3V<B>,
        inputs: &Phi3VInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let embeds = Self::embeds(model, inputs, device)?;
        Ok(model.logits(embeds, &inputs.tokens))
    }

    fn prefill<B: Backend>(
        &self,
        model: &Phi3V<B>,
        inputs: &Phi3VInputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        let embeds = Self::embeds(model, inputs, device)?;
        Ok(Some(
            model.language_model.prefill_tokens(embeds, &inputs.tokens),
        ))
    }

    fn decode<B: Backend>(
        &self,
        model: &Phi3V<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        _device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(model.language_model.decode(ids, cache))
    }
}

impl Phi3VFamily {
    /// Token embeddings with the images' HD features at their (negative-id) positions.
    fn embeds<B: Backend>(
        model: &Phi3V<B>,
        inputs: &Phi3VInputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let has_images = inputs.tokens.input_ids.data.iter().any(|&i| i < 0);
        let features = match (&inputs.pixel_values, &inputs.image_sizes, has_images) {
            (Some(p), Some(sizes), true) => {
                let embd = model.vision_embed_tokens.as_ref().ok_or_else(|| {
                    Error::Batch("the batch has images but config.json has no embd_layer".into())
                })?;
                let [n, slots, ch, h, w] =
                    [p.shape[0], p.shape[1], p.shape[2], p.shape[3], p.shape[4]];
                let crops = crops_of(sizes);
                // Only the global image and the real crops go through CLIP (the padding
                // slots' features are never read).
                let slot = ch * h * w;
                let mut data = Vec::new();
                for (i, &(hc, wc)) in crops.iter().enumerate() {
                    let used = 1 + hc * wc;
                    if used > slots {
                        return Err(Error::Batch(format!(
                            "image {i} of size {:?} needs {used} crops but pixel_values holds {slots}",
                            (sizes.data[2 * i], sizes.data[2 * i + 1])
                        )));
                    }
                    let start = i * slots * slot;
                    data.extend_from_slice(&p.data[start..start + used * slot]);
                }
                let total = data.len() / slot;
                let dtype = embd.img_processor.patch_embedding.val().dtype();
                let pixels =
                    Tensor::<B, 4>::from_data(TensorData::new(data, [total, ch, h, w]), device)
                        .cast(dtype);
                debug_assert_eq!(crops.len(), n);
                let f = embd.crop_features(pixels);
                Some(embd.hd_embeddings(f, &crops))
            }
            (_, _, true) => {
                return Err(Error::Batch(
                    "input_ids mark image positions (negative ids) but the batch has no \
                     pixel_values / image_sizes"
                        .into(),
                ));
            }
            _ => None,
        };
        model.embed_with_images(&inputs.tokens, features, device)
    }
}
