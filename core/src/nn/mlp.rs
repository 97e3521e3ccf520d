//! Feed-forward blocks: the gated SwiGLU MLP of Llama/Qwen2/Mistral (`gate_proj`, `up_proj`,
//! `down_proj`) and the plain two-layer MLP of CLIP/SigLIP (`fc1`, `fc2`) and of the LLaVA
//! projector (`linear_1`, `linear_2`).

use crate::error::Result;
use crate::nn::activation::Activation;
use crate::nn::linear::Linear;
use crate::nn::plan::PartPlan;
use crate::weights::Vars;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct GatedMlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    #[module(skip)]
    pub act: Activation,
}

/// Checkpoint names of the gate, up and down projections of Llama-style models.
pub const GATE_UP_DOWN: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

impl<B: Backend> GatedMlp<B> {
    /// Loads the gate, up and down projections under the checkpoint names `names` (in that
    /// order: [`GATE_UP_DOWN`] for Llama-style models, InternLM2's `w1`, `w3`, `w2`).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vars: &Vars<'_>,
        names: [&str; 3],
        hidden: usize,
        intermediate: usize,
        bias: bool,
        act: Activation,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(GatedMlp {
            gate_proj: Linear::load(&vars.pp(names[0]), hidden, intermediate, bias, plan, device)?,
            up_proj: Linear::load(&vars.pp(names[1]), hidden, intermediate, bias, plan, device)?,
            down_proj: Linear::load(&vars.pp(names[2]), intermediate, hidden, bias, plan, device)?,
            act,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gate = self.act.forward(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// `fc2(act(fc1(x)))`, with the two layers' checkpoint names given at load.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vars: &Vars<'_>,
        names: [&str; 2],
        d_in: usize,
        d_hidden: usize,
        d_out: usize,
        act: Activation,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::load(&vars.pp(names[0]), d_in, d_hidden, true, plan, device)?,
            fc2: Linear::load(&vars.pp(names[1]), d_hidden, d_out, true, plan, device)?,
            act,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.fc2.forward(self.act.forward(self.fc1.forward(x)))
    }
}
