//! LoRA as PEFT defines it (`peft/tuners/lora/layer.py`): `y = base(x) + s * B(A(dropout(x)))`
//! with `s = lora_alpha / r` (or `/ sqrt(r)` for rsLoRA). The dense `W + s*A*B` is never built.
//! A is stored `[in, r]` and B `[r, out]` (PEFT saves `lora_A.weight` `[r, in]` and
//! `lora_B.weight` `[out, r]`; loading and saving transpose).

use crate::strategy::LoraConfig;
use crate::weights::param_id;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    pub lora_a: Param<Tensor<B, 2>>,
    pub lora_b: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
    #[module(skip)]
    pub scaling: f64,
}

/// How a fresh adapter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoraInit {
    /// PEFT's default: A Kaiming-uniform (a = sqrt(5)), B zero, so training starts at the base.
    Peft,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter for the linear layer at `path`.
    pub fn new(
        path: &str,
        d_in: usize,
        d_out: usize,
        config: &LoraConfig,
        init: LoraInit,
        device: &B::Device,
    ) -> Self {
        let LoraInit::Peft = init;
        // kaiming_uniform_(a=sqrt(5)) on a [r, in] weight: bound = 1 / sqrt(in).
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = Tensor::random(
            [d_in, config.r],
            Distribution::Uniform(-bound, bound),
            device,
        );
        let b = Tensor::zeros([config.r, d_out], device);
        Self::from_tensors(path, a, b, config)
    }

    /// An adapter with given weights; parameter ids derive from `path` (see
    /// [`param_id`](crate::weights::param_id)).
    pub fn from_tensors(path: &str, a: Tensor<B, 2>, b: Tensor<B, 2>, config: &LoraConfig) -> Self {
        LoraAdapter {
            lora_a: Param::initialized(param_id(&format!("{path}.lora_A.weight")), a)
                .set_require_grad(true),
            lora_b: Param::initialized(param_id(&format!("{path}.lora_B.weight")), b)
                .set_require_grad(true),
            dropout: Dropout {
                prob: config.dropout,
            },
            scaling: config.scaling(),
        }
    }

    pub fn rank(&self) -> usize {
        self.lora_a.val().dims()[1]
    }

    /// The update `s * B(A(dropout(x)))` for `x: [..., in]`.
    /// Computed in the adapter's own dtype (f32 even over a bf16 base), returned in `x`'s.
    pub fn delta<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let a = self.lora_a.val();
        let x = crate::nn::dropout::dropout(x.cast(a.dtype()), self.dropout.prob);
        let b = self.lora_b.val();
        let xa = crate::nn::linear::linear_2d(x, a, None);
        (crate::nn::linear::linear_2d(xa, b, None) * self.scaling).cast(dtype)
    }
}
