//! Random weights for benchmarks: a [`WeightStore`](crate::weights::WeightStore) made with
//! [`WeightStore::random`](crate::weights::WeightStore::random) answers every tensor a module
//! asks for with one of these instead of reading a file, so a model of any config's shapes can
//! be built without its checkpoint. Optional tensors (those a module only loads when the
//! checkpoint has them) are absent.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// How made-up weights are drawn (on the device, from the backend's seeded generator).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomWeights {
    /// Standard deviation of matrices, embeddings and other weights (HF's `initializer_range`).
    pub std: f64,
}

impl Default for RandomWeights {
    fn default() -> Self {
        RandomWeights { std: 0.02 }
    }
}

impl RandomWeights {
    /// The tensor `name` of `shape`: a 1-D `*.weight` is a norm's scale (ones), a `*.bias`
    /// zeros, anything else `N(0, std)`, as transformers' `_init_weights` leaves a fresh model.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        if name.ends_with(".bias") {
            Tensor::zeros(shape, device)
        } else if D == 1 && name.ends_with("weight") {
            Tensor::ones(shape, device)
        } else {
            Tensor::random(shape, Distribution::Normal(0.0, self.std), device)
        }
    }
}
