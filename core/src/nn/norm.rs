//! RMSNorm (Llama/Qwen2/InternLM2: `w * x / sqrt(mean(x^2) + eps)`, computed in f32 as HF does)
//! and LayerNorm (CLIP/SigLIP).

use crate::error::Result;
use crate::weights::Vars;
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn load(
        vars: &Vars<'_>,
        dim: usize,
        eps: f64,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(RmsNorm {
            weight: vars.param("weight", [dim], device, trainable)?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x.cast(burn::tensor::DType::F32);
        let var = x.clone().powi_scalar(2).mean_dim(D - 1);
        let x = x * (var + self.eps).sqrt().recip();
        let w = self.weight.val();
        // HF: weight * x.to(input_dtype); a trained f32 weight over bf16 activations answers bf16.
        (x.cast(dtype).cast(w.dtype()) * w.unsqueeze::<D>()).cast(dtype)
    }
}

#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(
        vars: &Vars<'_>,
        dim: usize,
        eps: f64,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(LayerNorm {
            weight: vars.param("weight", [dim], device, trainable)?,
            bias: vars.param("bias", [dim], device, trainable)?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let (w, b) = (self.weight.val(), self.bias.val());
        let x = x.cast(w.dtype());
        let mean = x.clone().mean_dim(D - 1);
        let x = x - mean;
        let var = x.clone().powi_scalar(2).mean_dim(D - 1);
        let x = x * (var + self.eps).sqrt().recip();
        (x * w.unsqueeze::<D>() + b.unsqueeze::<D>()).cast(dtype)
    }
}
