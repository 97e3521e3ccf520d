//! `MllamaForConditionalGeneration` (`modeling_mllama.py`): the vision model's features of every
//! image slot of the batch (`[B, images, tiles, tokens, vision_output_dim]`) go through
//! `multi_modal_projector` into the text width and become, per row, the key/value sequence of
//! the cross-attention layers (`images * tiles * tokens` vision tokens); `cross_attention_mask`
//! says which tiles each text token sees. Image tokens stay ordinary tokens of the text stream.

use crate::config::MllamaConfig;
use crate::text::{CrossInputs, MllamaTextModel, cross_attention_tensors};
use crate::vision::MllamaVisionModel;
use lmms_core::burn;
use lmms_core::burn::module::Module;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::error::{Error, Result};
use lmms_core::llm::KvCache;
use lmms_core::nn::Linear;
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::tensor_file::HostTensor;
use lmms_core::weights::Vars;

/// A batch as `MllamaProcessor` returns it (HF's forward-argument names).
#[derive(Debug, Clone)]
pub struct MllamaInputs {
    pub tokens: Tokens,
    /// `[B, images, tiles, C, H, W]` (zero past each image's tiles and for empty image slots).
    pub pixel_values: Option<HostTensor<f32>>,
    /// `[B, images]`: 1 + the index of the image's tile arrangement, 0 for an empty slot.
    pub aspect_ratio_ids: Option<HostTensor<i64>>,
    /// `[B, images, tiles]`: 1 on the image's tiles (and always on the first).
    pub aspect_ratio_mask: Option<HostTensor<i64>>,
    /// `[B, T, images, tiles]`: 1 where token `t` sees the tile.
    pub cross_attention_mask: Option<HostTensor<i64>>,
}

#[derive(Module, Debug)]
pub struct Mllama<B: Backend> {
    pub vision_model: MllamaVisionModel<B>,
    pub multi_modal_projector: Linear<B>,
    pub language_model: MllamaTextModel<B>,
    #[module(skip)]
    pub config: MllamaConfig,
}

impl<B: Backend> Mllama<B> {
    /// Loads `vision_model.*`, `multi_modal_projector.*` and `language_model.{model.*,lm_head}`
    /// from `root` (canonical = hub names).
    pub fn load(
        root: &Vars<'_>,
        c: MllamaConfig,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Mllama {
            vision_model: MllamaVisionModel::load(
                &root.pp("vision_model"),
                &c.vision,
                &plans.vision_tower,
                device,
            )?,
            multi_modal_projector: Linear::load(
                &root.pp("multi_modal_projector"),
                c.vision.vision_output_dim,
                c.text.llm.hidden_size,
                true,
                &plans.projector,
                device,
            )?,
            language_model: MllamaTextModel::load(
                &root.pp("language_model"),
                &c.text,
                &plans.llm,
                device,
            )?,
            config: c,
        })
    }

    /// Logits `[B, T, V]`.
    pub fn forward(&self, inputs: &MllamaInputs, device: &B::Device) -> Result<Tensor<B, 3>> {
        let tokens = &inputs.tokens;
        let (b, t) = (tokens.batch(), tokens.seq());
        let embeds = self
            .language_model
            .embed(&tokens.input_ids.data, b, t, device);
        let cross = match &inputs.pixel_values {
            Some(p) => Some(self.cross_inputs(inputs, p, b, t, embeds.dtype(), device)?),
            None => None,
        };
        let mask = tokens.attention_mask.as_ref().map(|m| m.data.as_slice());
        self.language_model
            .forward(embeds, &tokens.default_positions(), mask, cross.as_ref())
    }

    /// Runs a prompt into a new KV cache (the vision encoder once): the last position's
    /// logits `[B, V]` and the cache.
    pub fn prefill(
        &self,
        inputs: &MllamaInputs,
        device: &B::Device,
    ) -> Result<(Tensor<B, 2>, KvCache<B>)> {
        let tokens = &inputs.tokens;
        let (b, t) = (tokens.batch(), tokens.seq());
        let embeds = self
            .language_model
            .embed(&tokens.input_ids.data, b, t, device);
        let cross = match &inputs.pixel_values {
            Some(p) => Some(self.cross_inputs(inputs, p, b, t, embeds.dtype(), device)?),
            None => None,
        };
        let mask = tokens.attention_mask.as_ref().map(|m| m.data.as_slice());
        let mut cache = self.language_model.new_cache(b);
        let logits = self.language_model.prefill(
            embeds,
            &tokens.default_positions(),
            mask,
            cross.as_ref(),
            &mut cache,
        )?;
        Ok((logits, cache))
    }

    /// The projected vision tokens of every image slot, and the masks from
    /// `cross_attention_mask`.
    fn cross_inputs(
        &self,
        inputs: &MllamaInputs,
        p: &HostTensor<f32>,
        b: usize,
        t: usize,
        dtype: lmms_core::burn::tensor::DType,
        device: &B::Device,
    ) -> Result<CrossInputs<B>> {
        let c = &self.config.vision;
        let tiles = c.max_num_tiles;
        let &[pb, images, pt, ch, h, w] = p.shape.as_slice() else {
            return Err(Error::Batch(format!(
                "pixel_values must be [batch, images, tiles, channels, height, width], got {:?}",
                p.shape
            )));
        };
        if pb != b || pt != tiles || ch != c.num_channels || h != c.image_size || w != c.image_size
        {
            return Err(Error::Batch(format!(
                "pixel_values has shape {:?}, expected [{b}, images, {tiles}, {}, {}, {}] \
                 (batch, max_num_tiles, num_channels, image_size from config.json)",
                p.shape, c.num_channels, c.image_size, c.image_size
            )));
        }
        let ids = inputs.aspect_ratio_ids.as_ref().ok_or_else(|| {
            Error::Batch("pixel_values are given without aspect_ratio_ids".into())
        })?;
        if ids.shape != [b, images] {
            return Err(Error::Batch(format!(
                "aspect_ratio_ids has shape {:?}, expected [{b}, {images}]",
                ids.shape
            )));
        }
        let tile_mask = match &inputs.aspect_ratio_mask {
            Some(m) if m.shape == [b, images, tiles] => m.data.as_slice(),
            Some(m) => {
                return Err(Error::Batch(format!(
                    "aspect_ratio_mask has shape {:?}, expected [{b}, {images}, {tiles}]",
                    m.shape
                )));
            }
            None => {
                return Err(Error::Batch(
                    "pixel_values are given without aspect_ratio_mask".into(),
                ));
            }
        };
        let weight_dtype = self.vision_model.patch_embedding.val().dtype();
        let pixels = Tensor::<B, 4>::from_data(
            TensorData::new(p.data.clone(), [b * images * tiles, ch, h, w]),
            device,
        )
        .cast(weight_dtype);
        let features = self.vision_model.forward(pixels, &ids.data, tile_mask)?;
        let [_, _, tokens, _] = features.dims();
        let hidden = self.config.text.llm.hidden_size;
        let states = self
            .multi_modal_projector
            .forward(features)
            .reshape([b, images * tiles * tokens, hidden])
            .cast(dtype);
        let (bias, rows) = match &inputs.cross_attention_mask {
            Some(m) => {
                if m.shape != [b, t, images, tiles] {
                    return Err(Error::Batch(format!(
                        "cross_attention_mask has shape {:?}, expected [{b}, {t}, {images}, \
                         {tiles}] (batch, tokens, images, tiles)",
                        m.shape
                    )));
                }
                let (bias, rows) = cross_attention_tensors::<B>(
                    &m.data,
                    [b, t, images, tiles],
                    tokens,
                    dtype,
                    device,
                );
                (Some(bias), Some(rows))
            }
            None => (None, None),
        };
        Ok(CrossInputs { states, bias, rows })
    }
}
