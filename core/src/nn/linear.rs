//! `nn.Linear` with an optional LoRA adapter. The weight is held `[in, out]` (transposed from
//! PyTorch at load time) so the forward is one matmul; under QLoRA a frozen weight is held
//! 4-bit instead ([`Q4Weight`], PyTorch layout) and dequantized inside the forward. A layer may
//! also carry a partial adapter ([`PartialLora`], XComposer2's PLoRA) whose update only the
//! rows of a mask get ([`Linear::forward_masked`]).

use crate::error::Result;
use crate::nn::lora::LoraAdapter;
use crate::nn::partial_lora::PartialLora;
use crate::nn::plan::PartPlan;
use crate::nn::quant::Q4Weight;
use crate::weights::Vars;
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]`; `None` when the weight is held quantized (`quantized`).
    pub weight: Option<Param<Tensor<B, 2>>>,
    /// The frozen weight in 4 bits (QLoRA).
    pub quantized: Option<Q4Weight<B>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<LoraAdapter<B>>,
    /// A partial adapter of the base model (PLoRA), applied to masked rows only.
    pub partial: Option<PartialLora<B>>,
    /// The module path in the checkpoint (`language_model.model.layers.0.self_attn.q_proj`):
    /// LoRA targeting and PEFT export name modules by it.
    #[module(skip)]
    pub path: String,
}

impl<B: Backend> Linear<B> {
    /// Loads `<vars>.weight` (`[out, in]` in the file) and, if `bias`, `<vars>.bias`; attaches
    /// LoRA where `plan` targets this layer, and quantizes the weight where it asks for QLoRA.
    pub fn load(
        vars: &Vars<'_>,
        d_in: usize,
        d_out: usize,
        bias: bool,
        plan: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let trainable = plan.trainable;
        let (weight, quantized) = match plan.quant_for(vars.prefix()) {
            Some(spec) => (
                None,
                Some(Q4Weight::load(vars, "weight", d_in, d_out, spec, device)?),
            ),
            None => (
                Some(vars.wrap_transposed(
                    "weight",
                    vars.linear_weight("weight", d_in, d_out, device)?,
                    trainable,
                )),
                None,
            ),
        };
        let bias = if bias {
            Some(vars.param("bias", [d_out], device, trainable)?)
        } else {
            None
        };
        let partial = match plan.partial.filter(|p| p.targets(vars.prefix())) {
            Some(spec) => Some(PartialLora::load(
                vars, &spec, d_in, d_out, trainable, device,
            )?),
            None => None,
        };
        Ok(Linear {
            weight,
            quantized,
            bias,
            lora: plan.lora_for(vars.prefix(), d_in, d_out, device)?,
            partial,
            path: vars.prefix().to_string(),
        })
    }

    pub fn d_in(&self) -> usize {
        match (&self.weight, &self.quantized) {
            (Some(w), _) => w.val().dims()[0],
            (None, Some(q)) => q.d_in,
            (None, None) => unreachable!("a linear layer has a weight"),
        }
    }

    pub fn d_out(&self) -> usize {
        match (&self.weight, &self.quantized) {
            (Some(w), _) => w.val().dims()[1],
            (None, Some(q)) => q.d_out,
            (None, None) => unreachable!("a linear layer has a weight"),
        }
    }

    /// Bytes the base weight occupies (packed codes + scales when quantized).
    pub fn weight_bytes(&self) -> usize {
        match (&self.weight, &self.quantized) {
            (Some(w), _) => {
                let w = w.val();
                w.shape().num_elements() * w.dtype().size()
            }
            (None, Some(q)) => q.bytes(),
            (None, None) => 0,
        }
    }

    pub fn with_lora(mut self, lora: LoraAdapter<B>) -> Self {
        self.lora = Some(lora);
        self
    }

    /// [`Self::forward`] plus the partial adapter's update on the rows `row_mask` (`[B, T, 1]`,
    /// 0/1) selects; without a mask or a partial adapter it is [`Self::forward`].
    pub fn forward_masked(&self, x: Tensor<B, 3>, row_mask: Option<&Tensor<B, 3>>) -> Tensor<B, 3> {
        match (&self.partial, row_mask) {
            (Some(p), Some(mask)) => {
                let delta = p.delta(x.clone(), mask);
                self.forward(x) + delta
            }
            _ => self.forward(x),
        }
    }

    /// Under mixed precision a trained layer keeps f32 weights while activations are bf16: the
    /// layer computes in its weights' dtype and answers in the input's.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let delta = self.lora.as_ref().map(|l| l.delta(x.clone()));
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = match (&self.weight, &self.quantized) {
            (Some(w), _) => {
                let (w, dtype) = (w.val(), x.dtype());
                if w.dtype() == dtype {
                    linear_2d(x, w, bias)
                } else {
                    let wd = w.dtype();
                    linear_2d(x.cast(wd), w, bias.map(|b| b.cast(wd))).cast(dtype)
                }
            }
            (None, Some(q)) => {
                let y = q.matmul(x);
                match bias {
                    Some(b) => y + b.unsqueeze::<D>(),
                    None => y,
                }
            }
            (None, None) => unreachable!("a linear layer has a weight"),
        };
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}

/// `x · w + b` for `x: [..., in]`, `w: [in, out]`, as one 2-D matmul over all rows.
///
/// Rather than `burn::tensor::module::linear`: its backward (burn-backend's default
/// `linear_x_backward`) reshapes the transposed weight, which the CPU backend turns into a full
/// strided copy of every weight matrix in every backward pass; and a batched `[B, T, in]` times
/// `[1, in, out]` matmul makes the weight's gradient `[B, in, out]` before summing it. Here the
/// backward is `grad · wᵀ` on a transposed view (the CPU GEMM reads strides) and `xᵀ · grad` in
/// one GEMM. Same products, so the same values up to float rounding.
pub fn linear_2d<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = x.reshape([rows, d_in]).matmul(w);
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}
