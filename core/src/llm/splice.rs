//! Media features spliced into the token embeddings: the rows whose id is a placeholder (an
//! image or video token) are replaced, in row-major order, by the media's features, as HF's
//! `inputs_embeds.masked_scatter(special_image_mask, image_features)` does in the LLaVA and
//! Qwen2-VL models.

use crate::error::{Error, Result};
use crate::llm::CausalLm;
use crate::runtime::Tokens;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

impl<B: Backend> CausalLm<B> {
    /// Token embeddings with each `(placeholder id, features [K, hidden])` pair's features over
    /// the positions holding that id. The count of such positions must equal `K`. A placeholder
    /// id may lie outside the vocabulary: its rows are never looked up.
    pub fn embed_with_features(
        &self,
        tokens: &Tokens,
        placeholders: &[(i64, Tensor<B, 2>)],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (b, t) = (tokens.batch(), tokens.seq());
        let mut ids = tokens.input_ids.data.clone();
        // Row i of the result is row index[i] of [text embeddings; features of each pair].
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        let mut offset = (b * t) as i64;
        for (token, features) in placeholders {
            let k = features.dims()[0];
            let mut seen = 0usize;
            for (i, id) in ids.iter_mut().enumerate() {
                if *id == *token {
                    if seen < k {
                        index[i] = offset + seen as i64;
                    }
                    seen += 1;
                    *id = 0;
                }
            }
            if seen != k {
                return Err(Error::Batch(format!(
                    "{seen} placeholder tokens (id {token}) but the media give {k} features"
                )));
            }
            offset += k as i64;
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let text = self.embed(ids);
        if placeholders.is_empty() {
            return Ok(text);
        }
        let hidden = text.dims()[2];
        let dtype = text.dtype();
        let mut all = vec![text.reshape([b * t, hidden])];
        all.extend(placeholders.iter().map(|(_, f)| f.clone().cast(dtype)));
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * t]), device);
        Ok(Tensor::cat(all, 0).select(0, index).reshape([b, t, hidden]))
    }
}
