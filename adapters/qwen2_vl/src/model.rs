//! `Qwen2VLForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration`: the vision tower's
//! merged features written over the image / video placeholder tokens of the LLM input (in
//! row-major order, as HF's `masked_scatter`), then the Qwen2 decoder with 3D M-RoPE positions
//! from [`positions::rope_index`].

use crate::config::{QwenVlConfig, Variant};
use crate::positions::{self, Grid, RopeIndexConfig};
use crate::vision::VisionTower;
use lmms_core::burn;
use lmms_core::burn::module::Module;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::error::{Error, Result};
use lmms_core::llm::{CausalLm, KvCache};
use lmms_core::nn::mrope::{cos_sin_tensors, mrope_angles};
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::tensor_file::HostTensor;
use lmms_core::weights::Vars;

/// A batch: tokens plus the HF forward's vision tensors, where present.
#[derive(Debug, Clone)]
pub struct QwenVlInputs {
    pub tokens: Tokens,
    /// `[patches, C * T * P * P]`, every image's patches in turn.
    pub pixel_values: Option<HostTensor<f32>>,
    /// `[images, 3]`.
    pub image_grid_thw: Option<HostTensor<i64>>,
    pub pixel_values_videos: Option<HostTensor<f32>>,
    pub video_grid_thw: Option<HostTensor<i64>>,
    /// 2.5: seconds per temporal patch of each video, `[videos]`.
    pub second_per_grid_ts: Option<HostTensor<f32>>,
}

/// The rows of a `*_grid_thw` tensor.
pub fn grids(t: Option<&HostTensor<i64>>, name: &str) -> Result<Vec<Grid>> {
    let Some(t) = t else { return Ok(Vec::new()) };
    if t.shape.len() != 2 || t.shape[1] != 3 || t.data.iter().any(|&x| x <= 0) {
        return Err(Error::Batch(format!(
            "{name} must be [n, 3] positive (t, h, w) rows, got shape {:?}",
            t.shape
        )));
    }
    Ok(t.data
        .chunks(3)
        .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
        .collect())
}

#[derive(Module, Debug)]
pub struct QwenVl<B: Backend> {
    pub visual: VisionTower<B>,
    pub language_model: CausalLm<B>,
    #[module(skip)]
    pub config: QwenVlConfig,
}

impl<B: Backend> QwenVl<B> {
    /// Loads `visual.*` (the merger with the projector's plan) and the LLM's `model.*` and
    /// `lm_head` from `root` (canonical = hub names).
    pub fn load(
        root: &Vars<'_>,
        c: QwenVlConfig,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(QwenVl {
            visual: VisionTower::load(
                &root.pp("visual"),
                &c.vision,
                c.variant,
                &plans.vision_tower,
                &plans.projector,
                device,
            )?,
            language_model: CausalLm::load(root, &c.text, &plans.llm, device)?,
            config: c,
        })
    }

    /// Merged features of one kind of media, `[tokens, hidden]`, or `None` without pixels.
    fn media(
        &self,
        pixels: Option<&HostTensor<f32>>,
        grids: &[Grid],
        name: &str,
        device: &B::Device,
    ) -> Result<Option<Tensor<B, 2>>> {
        let Some(p) = pixels else { return Ok(None) };
        let c = &self.config.vision;
        let want: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if p.shape != [want, c.patch_values()] {
            return Err(Error::Batch(format!(
                "{name} has shape {:?} but its grids give [{want}, {}]",
                p.shape,
                c.patch_values()
            )));
        }
        if grids.iter().any(|g| {
            !g[1].is_multiple_of(c.spatial_merge_size) || !g[2].is_multiple_of(c.spatial_merge_size)
        }) {
            return Err(Error::Batch(format!(
                "{name}: a grid is not a multiple of spatial_merge_size {}",
                c.spatial_merge_size
            )));
        }
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(p.data.clone(), [want, p.shape[1]]), device);
        Ok(Some(self.visual.forward(x, grids)))
    }

    /// Logits `[B, T, V]`.
    pub fn forward(&self, inputs: &QwenVlInputs, device: &B::Device) -> Result<Tensor<B, 3>> {
        let (embeds, rope, _) = self.prepare(inputs, device)?;
        let mask = inputs.tokens.attention_mask.as_ref();
        Ok(self.language_model.forward_embeds_rope(
            embeds,
            rope.0,
            rope.1,
            mask.map(|m| m.data.as_slice()),
        ))
    }

    /// Runs a prompt into a new KV cache: the last position's logits `[B, V]` and the cache.
    /// Later tokens take one position on all three axes, one past the prompt's largest
    /// (HF's `rope_deltas`), which is plain RoPE: [`CausalLm::decode`] continues.
    pub fn prefill(
        &self,
        inputs: &QwenVlInputs,
        device: &B::Device,
    ) -> Result<(Tensor<B, 2>, KvCache<B>)> {
        let (embeds, rope, pos) = self.prepare(inputs, device)?;
        let tokens = &inputs.tokens;
        let mask = tokens.attention_mask.as_ref().map(|m| m.data.as_slice());
        Ok(self
            .language_model
            .prefill(embeds, rope, &pos.concat(), mask, None, None))
    }

    /// Token embeddings with the media features spliced in, the M-RoPE tables and the 3-axis
    /// positions.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        inputs: &QwenVlInputs,
        device: &B::Device,
    ) -> Result<(Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>), [Vec<i64>; 3])> {
        let c = &self.config;
        let tokens = &inputs.tokens;
        let image_grids = grids(inputs.image_grid_thw.as_ref(), "image_grid_thw")?;
        let video_grids = grids(inputs.video_grid_thw.as_ref(), "video_grid_thw")?;
        let mut placeholders = Vec::new();
        if let Some(f) = self.media(
            inputs.pixel_values.as_ref(),
            &image_grids,
            "pixel_values",
            device,
        )? {
            placeholders.push((c.image_token_id, f));
        }
        if let Some(f) = self.media(
            inputs.pixel_values_videos.as_ref(),
            &video_grids,
            "pixel_values_videos",
            device,
        )? {
            placeholders.push((c.video_token_id, f));
        }
        let embeds = self
            .language_model
            .embed_with_features(tokens, &placeholders, device)?;
        let (b, t) = (tokens.batch(), tokens.seq());
        let mask = tokens.attention_mask.as_ref().map(|m| m.data.as_slice());
        // HF builds 3D positions whenever a grid is given; otherwise arange(T) on every row.
        let pos = if inputs.image_grid_thw.is_some() || inputs.video_grid_thw.is_some() {
            let rc = RopeIndexConfig {
                image_token_id: c.image_token_id,
                video_token_id: c.video_token_id,
                spatial_merge_size: c.vision.spatial_merge_size,
                tokens_per_second: (c.variant == Variant::Qwen25)
                    .then_some(c.vision.tokens_per_second),
            };
            positions::rope_index(
                &tokens.input_ids.data,
                mask,
                b,
                t,
                &image_grids,
                &video_grids,
                inputs
                    .second_per_grid_ts
                    .as_ref()
                    .map(|s| s.data.as_slice()),
                &rc,
            )?
        } else {
            let p = tokens.default_positions();
            [p.clone(), p.clone(), p]
        };
        let max_pos = pos.iter().flatten().copied().max().unwrap_or(0).max(0) as usize + 1;
        let inv = c.text.rope().inv_freq(max_pos);
        let angles = mrope_angles(&inv, &c.mrope_section, [&pos[0], &pos[1], &pos[2]]);
        let (cos, sin) = cos_sin_tensors::<B, 3>(&angles, [b, t, 2 * inv.len()], device);
        Ok((embeds, (cos, sin), pos))
    }
}
