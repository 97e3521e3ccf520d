//! [`FamilyModel`] for InternLM2: the shared decoder with InternLM2's module names
//! ([`LlmNames::INTERNLM2`]), checkpoint names as the hub's remote code saves them.

use crate::collate::InternLm2Collator;
use lmms_core::burn::tensor::Tensor;
use lmms_core::burn::tensor::backend::Backend;
use lmms_core::collator::CollateOptions;
use lmms_core::error::Result;
use lmms_core::llm::internlm2::InternLm2Config;
use lmms_core::llm::{CausalLm, KvCache, LlmNames};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::{FamilyModel, Plans, Tokens};
use lmms_core::strategy::Part;
use lmms_core::tensor_file::{AnyTensor, TensorFile};
use lmms_core::weights::{KeyRules, WeightStore};

/// Checkpoint names are used as they are (`model.tok_embeddings`, `model.layers.N.attention.wqkv`,
/// `output`); the cached rotary frequencies some checkpoints carry are ignored.
pub fn internlm2_key_rules() -> KeyRules {
    KeyRules::default().ignore_suffix("rotary_emb.inv_freq")
}

#[derive(Debug, Clone, Copy)]
pub struct InternLm2Family;

impl FamilyModel for InternLm2Family {
    type Inputs = Tokens;
    type Collator = InternLm2Collator;
    type Model<B: Backend> = CausalLm<B>;

    fn key_rules(&self) -> KeyRules {
        internlm2_key_rules()
    }

    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<CausalLm<B>> {
        let c = InternLm2Config::from_value(&dir.config, &dir.path("config.json"))?;
        CausalLm::load_named(
            &store.root(),
            &c.text(),
            &LlmNames::INTERNLM2,
            &plans.llm,
            device,
        )
    }

    fn part_of(&self, _name: &str) -> Part {
        Part::Llm
    }

    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<InternLm2Collator> {
        InternLm2Collator::new(dir, options)
    }

    fn inputs_to_tensors(&self, t: &Tokens) -> Vec<(String, AnyTensor)> {
        t.to_tensors()
    }

    fn read_inputs(&self, file: &TensorFile) -> Result<Tokens> {
        Tokens::from_file(file)
    }

    fn tokens<'a>(&self, inputs: &'a Tokens) -> &'a Tokens {
        inputs
    }

    fn tokens_mut<'a>(&self, inputs: &'a mut Tokens) -> Option<&'a mut Tokens> {
        Some(inputs)
    }

    fn forward<B: Backend>(
        &self,
        model: &CausalLm<B>,
        t: &Tokens,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        Ok(model.forward_embeds(
            model.embed(t.ids(device)),
            &t.default_positions(),
            t.attention_mask.as_ref().map(|m| m.data.as_slice()),
        ))
    }

    fn prefill<B: Backend>(
        &self,
        model: &CausalLm<B>,
        t: &Tokens,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        let (logits, cache) = model.prefill_tokens(model.embed(t.ids(device)), t);
        Ok(Some((logits, cache)))
    }

    fn decode<B: Backend>(
        &self,
        model: &CausalLm<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        _device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(model.decode(ids, cache))
    }
}
