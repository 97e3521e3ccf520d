//! `nn.Linear` with an optional LoRA adapter. The weight is held `[in, out]` (transposed from
//! PyTorch at load time) so the forward is one matmul.

use crate::error::Result;
use crate::nn::lora::LoraAdapter;
use crate::nn::plan::PartPlan;
use crate::weights::Vars;
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<LoraAdapter<B>>,
    /// The module path in the checkpoint (`language_model.model.layers.0.self_attn.q_proj`):
    /// LoRA targeting and PEFT export name modules by it.
    #[module(skip)]
    pub path: String,
}

impl<B: Backend> Linear<B> {
    /// Loads `<vars>.weight` (`[out, in]` in the file) and, if `bias`, `<vars>.bias`; attaches
    /// LoRA where `plan` targets this layer.
    pub fn load(
        vars: &Vars<'_>,
        d_in: usize,
        d_out: usize,
        bias: bool,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let trainable = plan.trainable;
        let weight = vars.wrap_transposed(
            "weight",
            vars.linear_weight("weight", d_in, d_out, device)?,
            trainable,
        );
        let bias = if bias {
            Some(vars.param("bias", [d_out], device, trainable)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            lora: plan.lora_for(vars.prefix(), d_in, d_out, device)?,
            path: vars.prefix().to_string(),
        })
    }

    pub fn d_in(&self) -> usize {
        self.weight.val().dims()[0]
    }

    pub fn d_out(&self) -> usize {
        self.weight.val().dims()[1]
    }

    pub fn with_lora(mut self, lora: LoraAdapter<B>) -> Self {
        self.lora = Some(lora);
        self
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let delta = self.lora.as_ref().map(|l| l.delta(x.clone()));
        let y =
            burn::tensor::module::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}
