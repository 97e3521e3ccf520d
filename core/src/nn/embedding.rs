//! Token embedding table (`nn.Embedding`), `[vocab, hidden]` as in the checkpoint.

use crate::error::Result;
use crate::weights::Vars;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    pub fn load(
        vars: &Vars<'_>,
        vocab: usize,
        dim: usize,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Embedding {
            weight: vars.param("weight", [vocab, dim], device, trainable)?,
        })
    }

    /// `ids: [B, T]` -> `[B, T, hidden]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}
