//! Feed-forward blocks: the gated SwiGLU MLP of Llama/Qwen2/Mistral (`gate_proj`, `up_proj`,
//! `down_proj`; or Phi-3's fused `gate_up_proj`, [`MlpLayout`]) and the plain two-layer MLP of CLIP/SigLIP (`fc1`, `fc2`) and of the LLaVA
//! projector (`linear_1`, `linear_2`).

use crate::error::Result;
use crate::nn::activation::Activation;
use crate::nn::linear::Linear;
use crate::nn::plan::PartPlan;
use crate::weights::Vars;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// How the gate and up projections of a [`GatedMlp`] are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MlpLayout {
    /// Two linears (the first two checkpoint names given at load).
    #[default]
    Separate,
    /// One linear named `name` whose output is the gate half, then the up half (Phi-3's
    /// `gate_up_proj`: `gate, up = y.chunk(2, dim=-1)`). LoRA on it is one adapter, as PEFT
    /// targets it; the gate and up names given at load are not used.
    FusedGateUp { name: &'static str },
}

#[derive(Module, Debug)]
pub struct GatedMlp<B: Backend> {
    /// The gate projection, or with [`MlpLayout::FusedGateUp`] the fused gate+up one.
    pub gate_proj: Linear<B>,
    /// `None` with [`MlpLayout::FusedGateUp`].
    pub up_proj: Option<Linear<B>>,
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
        Self::load_with_layout(
            vars,
            MlpLayout::Separate,
            names,
            hidden,
            intermediate,
            bias,
            act,
            plan,
            device,
        )
    }

    /// [`Self::load`] with the gate and up projections stored as `layout` says.
    #[allow(clippy::too_many_arguments)]
    pub fn load_with_layout(
        vars: &Vars<'_>,
        layout: MlpLayout,
        names: [&str; 3],
        hidden: usize,
        intermediate: usize,
        bias: bool,
        act: Activation,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (gate_proj, up_proj) = match layout {
            MlpLayout::Separate => (
                Linear::load(&vars.pp(names[0]), hidden, intermediate, bias, plan, device)?,
                Some(Linear::load(
                    &vars.pp(names[1]),
                    hidden,
                    intermediate,
                    bias,
                    plan,
                    device,
                )?),
            ),
            MlpLayout::FusedGateUp { name } => (
                Linear::load(&vars.pp(name), hidden, 2 * intermediate, bias, plan, device)?,
                None,
            ),
        };
        Ok(GatedMlp {
            gate_proj,
            up_proj,
            down_proj: Linear::load(&vars.pp(names[2]), intermediate, hidden, bias, plan, device)?,
            act,
        })
    }

    /// [`Self::forward`] where the projections' partial adapters (PLoRA) update the rows
    /// `row_mask` (`[B, T, 1]`, 0/1) selects.
    pub fn forward_masked(&self, x: Tensor<B, 3>, row_mask: Option<&Tensor<B, 3>>) -> Tensor<B, 3> {
        if row_mask.is_none() {
            return self.forward(x);
        }
        let h = match &self.up_proj {
            Some(up_proj) => {
                let gate = self
                    .act
                    .forward(self.gate_proj.forward_masked(x.clone(), row_mask));
                gate * up_proj.forward_masked(x, row_mask)
            }
            None => {
                let mut halves = self.gate_proj.forward_masked(x, row_mask).chunk(2, 2);
                let up = halves.pop().expect("two halves");
                let gate = halves.pop().expect("two halves");
                self.act.forward(gate) * up
            }
        };
        self.down_proj.forward_masked(h, row_mask)
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.up_proj {
            Some(up_proj) => {
                let gate = self.act.forward(self.gate_proj.forward(x.clone()));
                self.down_proj.forward(gate * up_proj.forward(x))
            }
            None => {
                let mut halves = self.gate_proj.forward(x).chunk(2, D - 1);
                let up = halves.pop().expect("two halves");
                let gate = halves.pop().expect("two halves");
                self.down_proj.forward(self.act.forward(gate) * up)
            }
        }
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
