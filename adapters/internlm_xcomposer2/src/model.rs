//! The XComposer2-VL model (`modeling_internlm_xcomposer2.py`, `InternLMXComposer2ForCausalLM`):
//! `vit` (CLIP ViT-L/14-336 run at 490px, `build_mlp.py`'s `CLIPVisionTower`: last hidden state,
//! CLS dropped, no post-layernorm) -> `vision_proj` (Linear, GELU, Linear) -> 1225 embeddings
//! per image written where `im_mask` marks image rows (`interleav_wrap`) -> InternLM2 whose
//! `wqkv`/`wo`/`w1`/`w2`/`w3` carry PLoRA, applied to the image rows only
//! (`modeling_internlm2.py`).

use crate::config::XComposer2Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lmms_core::burn;
use lmms_core::error::{Error, Result};
use lmms_core::llm::{CausalLm, LlmNames};
use lmms_core::nn::{Activation, Mlp, PartPlan, PartialLoraSpec};
use lmms_core::runtime::{Plans, Tokens};
use lmms_core::strategy::LoraConfig;
use lmms_core::vision::VisionTransformer;
use lmms_core::weights::Vars;

/// `PLoRA(lora_r=256, lora_alpha=256)` on every decoder linear; `lora_dropout` keeps the class
/// default 0.05 (active in training only).
pub fn plora_spec(training: bool) -> PartialLoraSpec {
    PartialLoraSpec {
        a_name: "Plora_A",
        b_name: "Plora_B",
        rank: 256,
        scaling: 1.0,
        dropout: if training { 0.05 } else { 0.0 },
        targets: &["wqkv", "wo", "w1", "w2", "w3"],
    }
}

#[derive(Module, Debug)]
pub struct XComposer2<B: Backend> {
    pub vit: VisionTransformer<B>,
    pub vision_proj: Mlp<B>,
    pub model: CausalLm<B>,
}

impl<B: Backend> XComposer2<B> {
    /// Loads `vit.vision_tower.vision_model.*`, `vision_proj.{0,2}`, `model.*` and `output`.
    pub fn load<'a>(
        root: &Vars<'_>,
        c: &XComposer2Config,
        plans: &Plans<'a>,
        device: &B::Device,
    ) -> Result<Self> {
        // A plan that trains something (full, or fresh LoRA) is a training run: PLoRA dropout on.
        let training =
            plans.llm.trainable || (plans.llm.lora.is_some() && plans.llm.adapter.is_none());
        // A given PEFT adapter is run as PEFT runs it in eval mode: its `lora_dropout` (the
        // official finetune saves 0.05) off, like PLoRA's. burn's dropout acts on any autodiff
        // backend, where `lmms parity` takes the LoRA gradients.
        let eval_lora = plans
            .llm
            .lora
            .filter(|l| l.dropout > 0.0 && !training)
            .map(|l| LoraConfig {
                dropout: 0.0,
                ..l.clone()
            });
        let without_dropout = |plan: &PartPlan<'a>| -> PartPlan<'_> {
            match (&eval_lora, plan.adapter) {
                (Some(l), Some(_)) => PartPlan {
                    lora: Some(l),
                    ..*plan
                },
                _ => *plan,
            }
        };
        let llm = PartPlan {
            partial: Some(plora_spec(training)),
            ..without_dropout(&plans.llm)
        };
        let text = c.text();
        Ok(XComposer2 {
            vit: VisionTransformer::load(
                &root.pp("vit.vision_tower.vision_model"),
                c.vision(),
                &without_dropout(&plans.vision_tower),
                device,
            )?,
            vision_proj: Mlp::load(
                &root.pp("vision_proj"),
                ["0", "2"],
                c.vision().hidden_size,
                c.llm.hidden_size,
                c.llm.hidden_size,
                Activation::Gelu,
                &without_dropout(&plans.projector),
                device,
            )?,
            model: CausalLm::load_named(root, &text, &LlmNames::INTERNLM2, &llm, device)?,
        })
    }

    /// `img2emb`: `[N, 3, S, S]` pixels -> `[N, grid^2, hidden]` embeddings.
    pub fn image_embeddings(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self
            .vit
            .hidden_states(pixels, &[-1])
            .pop()
            .expect("one hidden state");
        let [n, p, d] = x.dims();
        self.vision_proj.forward(x.slice([0..n, 1..p, 0..d]))
    }

    /// Token embeddings with `images` (`[K, hidden]`, in order) written over the rows
    /// `im_mask` (`[B, T]`) marks, row-major: the k-th marked row gets the k-th embedding.
    pub fn splice(
        &self,
        tokens: &Tokens,
        im_mask: &[i64],
        images: Option<Tensor<B, 2>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (b, t) = (tokens.batch(), tokens.seq());
        let mut ids = tokens.input_ids.data.clone();
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        let mut k = 0usize;
        for (i, &m) in im_mask.iter().enumerate() {
            if m != 0 {
                index[i] = (b * t + k) as i64;
                // The id at an image row is a placeholder, never looked up.
                ids[i] = 0;
                k += 1;
            }
        }
        let have = images.as_ref().map_or(0, |f| f.dims()[0]);
        if k != have {
            return Err(Error::Batch(format!(
                "im_mask marks {k} image rows but the images give {have} embeddings"
            )));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let text = self.model.embed(ids);
        let Some(images) = images else {
            return Ok(text);
        };
        let hidden = text.dims()[2];
        let dtype = text.dtype();
        let table = Tensor::cat(vec![text.reshape([b * t, hidden]), images.cast(dtype)], 0);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * t]), device);
        Ok(table.select(0, index).reshape([b, t, hidden]))
    }
}
