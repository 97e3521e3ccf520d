//! `QWenLMHeadModel` (`modeling_qwen.py`): the shared decoder with QWen's module names
//! ([`LlmNames::QWEN`]), the visual encoder under `transformer.visual`, and QWen's forward:
//! image features written over the 256 positions inside each `<img>...</img>` span, stepwise
//! NTK RoPE and log-scaled queries past `seq_length`.

use crate::config::QwenVlConfig;
use crate::visual::VisionTransformer;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lmms_core::burn;
use lmms_core::error::{Error, Result};
use lmms_core::llm::{CausalLm, KvCache, LlmNames};
use lmms_core::nn::attention::logn_query_scale;
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::weights::Vars;

#[derive(Module, Debug)]
pub struct QwenVl<B: Backend> {
    pub llm: CausalLm<B>,
    /// `None` for a config without `visual`.
    pub visual: Option<VisionTransformer<B>>,
    #[module(skip)]
    pub image_start_id: i64,
    /// `seq_length` when `use_logn_attn`.
    #[module(skip)]
    pub logn_seq_length: Option<usize>,
}

/// An image span: row, position of `<img>`, position of `</img>`.
pub type ImageSpan = (usize, usize, usize);

impl<B: Backend> QwenVl<B> {
    pub fn load(
        vars: &Vars<'_>,
        c: &QwenVlConfig,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let llm = CausalLm::load_named(vars, &c.text(), &LlmNames::QWEN, &plans.llm, device)?;
        let visual = match &c.visual {
            Some(v) => Some(VisionTransformer::load(
                &vars.pp("transformer.visual"),
                v,
                &plans.vision_tower,
                &plans.projector,
                device,
            )?),
            None => None,
        };
        Ok(QwenVl {
            llm,
            visual,
            image_start_id: c.visual.as_ref().map_or(-1, |v| v.image_start_id),
            logn_seq_length: c.use_logn_attn.then_some(c.seq_length),
        })
    }

    /// The `<img>`/`</img>` pairs in row-major order, as `torch.where` finds them; every pair
    /// must enclose `n_queries` positions.
    pub fn image_spans(&self, t: &Tokens, n_queries: usize) -> Result<Vec<ImageSpan>> {
        let (b, seq) = (t.batch(), t.seq());
        let ids = &t.input_ids.data;
        let (start, end) = (self.image_start_id, self.image_start_id + 1);
        let mut spans = Vec::new();
        for r in 0..b {
            let row = &ids[r * seq..(r + 1) * seq];
            let starts: Vec<usize> = (0..seq).filter(|&i| row[i] == start).collect();
            let ends: Vec<usize> = (0..seq).filter(|&i| row[i] == end).collect();
            if starts.len() != ends.len() {
                return Err(Error::Batch(format!(
                    "row {r} has {} <img> (id {start}) but {} </img> (id {end})",
                    starts.len(),
                    ends.len()
                )));
            }
            for (a, e) in starts.into_iter().zip(ends) {
                if e != a + n_queries + 1 {
                    return Err(Error::Batch(format!(
                        "row {r}: the image span <img> at {a} .. </img> at {e} holds {} \
                         positions, the resampler gives {n_queries}",
                        e.saturating_sub(a + 1)
                    )));
                }
                spans.push((r, a, e));
            }
        }
        Ok(spans)
    }

    /// Logits `[B, T, V]`; `images` `[N, 3, H, W]` belong to the spans in row-major order.
    pub fn forward(
        &self,
        t: &Tokens,
        images: Option<Tensor<B, 4>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (b, seq) = (t.batch(), t.seq());
        let embeds = self.embeds(t, images, device)?;
        let (cos, sin) = self
            .llm
            .rope
            .cos_sin::<B>(&t.default_positions(), b, seq, device);
        let scale = self
            .logn_seq_length
            .and_then(|s| logn_query_scale::<B>(seq, s, device));
        Ok(self.llm.forward_embeds_scaled(
            embeds,
            cos,
            sin,
            t.attention_mask.as_ref().map(|m| m.data.as_slice()),
            scale,
        ))
    }

    /// Runs a prompt into a new KV cache: the last position's logits `[B, V]` and the cache.
    pub fn prefill(
        &self,
        t: &Tokens,
        images: Option<Tensor<B, 4>>,
        device: &B::Device,
    ) -> Result<(Tensor<B, 2>, KvCache<B>)> {
        let (b, seq) = (t.batch(), t.seq());
        let embeds = self.embeds(t, images, device)?;
        let positions = t.default_positions();
        let rope = self.llm.rope.cos_sin::<B>(&positions, b, seq, device);
        let scale = self
            .logn_seq_length
            .and_then(|s| logn_query_scale::<B>(seq, s, device));
        let mask = t.attention_mask.as_ref().map(|m| m.data.as_slice());
        Ok(self
            .llm
            .prefill(embeds, rope, &positions, mask, scale.as_ref(), None))
    }

    /// One new token per row after `cache`. As `modeling_qwen.py` decodes: the NTK scaling
    /// stays the one the prompt's length chose; log-scaling follows each query's position.
    pub fn decode(&self, ids: &[i64], cache: &mut KvCache<B>, device: &B::Device) -> Tensor<B, 2> {
        let b = ids.len();
        let ids_t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, 1]), device);
        let positions = cache.next_position.clone();
        let rope = self
            .llm
            .rope
            .cos_sin_at::<B>(&positions, cache.prompt_len, b, 1, device);
        let scale = self.logn_seq_length.and_then(|s| {
            let base = (s as f64).ln();
            let per_row: Vec<f32> = positions
                .iter()
                .map(|&p| {
                    let n = p as usize + 1;
                    if n > s {
                        ((n as f64).ln() / base) as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            per_row
                .iter()
                .any(|&x| x != 1.0)
                .then(|| Tensor::<B, 4>::from_data(TensorData::new(per_row, [b, 1, 1, 1]), device))
        });
        let logits = self.llm.forward_cached(
            self.llm.embed(ids_t),
            rope,
            None,
            scale.as_ref(),
            None,
            cache,
        );
        cache.next_position.iter_mut().for_each(|p| *p += 1);
        logits
    }

    /// Token embeddings with each image's resampled features inside its `<img>` span.
    fn embeds(
        &self,
        t: &Tokens,
        images: Option<Tensor<B, 4>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (b, seq) = (t.batch(), t.seq());
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(t.input_ids.data.clone(), [b, seq]),
            device,
        );
        let mut embeds = self.llm.embed(ids);
        if let Some(visual) = &self.visual {
            let n_queries = visual.attn_pool.query.dims()[0];
            let spans = self.image_spans(t, n_queries)?;
            if !spans.is_empty() {
                let images = images.ok_or_else(|| {
                    Error::Batch(format!(
                        "the batch has {} <img> spans but no images",
                        spans.len()
                    ))
                })?;
                if images.dims()[0] != spans.len() {
                    return Err(Error::Batch(format!(
                        "the batch has {} <img> spans but {} images",
                        spans.len(),
                        images.dims()[0]
                    )));
                }
                let features = visual.forward(images).cast(embeds.dtype());
                let hidden = embeds.dims()[2];
                for (k, &(r, a, e)) in spans.iter().enumerate() {
                    let f = features.clone().slice([k..k + 1, 0..n_queries, 0..hidden]);
                    embeds = embeds.slice_assign([r..r + 1, a + 1..e, 0..hidden], f);
                }
            }
        }
        Ok(embeds)
    }
}
