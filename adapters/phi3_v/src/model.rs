//! The Phi-3-V model (`Phi3VForCausalLM` of the hub's remote code `modeling_phi3_v.py`): the
//! image embedding writes its output over the positions whose input id is negative (`-k` marks
//! image `k`; the ids are clamped to the vocabulary before the token lookup, as
//! `Phi3ImageEmbedding.forward` does), then the Phi-3 decoder (shared decoder with
//! [`LlmNames::PHI3`]) and the LM head.
//!
//! Checkpoint names (the remote code's, used as they are): `model.embed_tokens`,
//! `model.layers.N.{self_attn.qkv_proj,self_attn.o_proj,mlp.gate_up_proj,mlp.down_proj,...}`,
//! `model.norm`, `lm_head`, `model.vision_embed_tokens.{img_processor.vision_model.*,glb_GN,
//! sub_GN,img_projection.{0,2}}`.

use crate::config::Phi3VConfig;
use crate::image_embedding::Phi3ImageEmbedding;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lmms_core::burn;
use lmms_core::error::{Error, Result};
use lmms_core::llm::{CausalLm, LlmNames};
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::weights::Vars;
use std::path::Path;

#[derive(Module, Debug)]
pub struct Phi3V<B: Backend> {
    /// `model.vision_embed_tokens` (absent for a text-only Phi-3 config).
    pub vision_embed_tokens: Option<Phi3ImageEmbedding<B>>,
    pub language_model: CausalLm<B>,
    #[module(skip)]
    pub config: Phi3VConfig,
}

impl<B: Backend> Phi3V<B> {
    /// Loads the model from the checkpoint root. `tower_shape` is the checkpoint's CLIP
    /// (width, MLP width, layers), see [`Phi3VConfig::image_embd`].
    pub fn load(
        root: &Vars<'_>,
        c: Phi3VConfig,
        config_path: &Path,
        tower_shape: Option<(usize, usize, usize)>,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let vision_embed_tokens = match c.image_embd(config_path, tower_shape)? {
            Some(e) => Some(Phi3ImageEmbedding::load(
                &root.pp("model.vision_embed_tokens"),
                &e,
                c.hidden_size,
                &plans.vision_tower,
                &plans.projector,
                device,
            )?),
            None => None,
        };
        // The remote code's image embedding keeps a second handle on the token embedding
        // (`wte`); a checkpoint that saved it holds the same tensor twice.
        let wte = root.pp("model.vision_embed_tokens.wte");
        if wte.exists() {
            wte.mark_unused_ok();
        }
        Ok(Phi3V {
            vision_embed_tokens,
            language_model: CausalLm::load_named(
                root,
                &c.text(),
                &LlmNames::PHI3,
                &plans.llm,
                device,
            )?,
            config: c,
        })
    }

    /// Token embeddings `[B, T, hidden]` with `features` (`[K, hidden]`) written over the
    /// negative ids in row-major order (`hidden_states.index_put(positions, features)`).
    pub fn embed_with_images(
        &self,
        tokens: &Tokens,
        features: Option<Tensor<B, 2>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (b, t) = (tokens.batch(), tokens.seq());
        let vocab = self.config.vocab_size as i64;
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        let mut seen = 0usize;
        let mut ids = Vec::with_capacity(b * t);
        for (i, &id) in tokens.input_ids.data.iter().enumerate() {
            if id < 0 {
                index[i] = (b * t + seen) as i64;
                seen += 1;
            }
            // Negative ids become 0 for the lookup (their rows are replaced); ids past the
            // vocabulary are an error below rather than an out-of-bounds gather.
            ids.push(id.max(0));
        }
        if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
            return Err(Error::Batch(format!(
                "input id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let k = features.as_ref().map_or(0, |f| f.dims()[0]);
        if seen != k {
            return Err(Error::Batch(format!(
                "{seen} image positions (negative ids) but the images give {k} embeddings"
            )));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let text = self.language_model.embed(ids);
        let Some(features) = features else {
            return Ok(text);
        };
        let hidden = text.dims()[2];
        let dtype = text.dtype();
        let table = Tensor::cat(vec![text.reshape([b * t, hidden]), features.cast(dtype)], 0);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * t]), device);
        Ok(table.select(0, index).reshape([b, t, hidden]))
    }

    pub fn logits(&self, embeds: Tensor<B, 3>, tokens: &Tokens) -> Tensor<B, 3> {
        self.language_model.forward_embeds(
            embeds,
            &tokens.default_positions(),
            tokens.attention_mask.as_ref().map(|m| m.data.as_slice()),
        )
    }
}
