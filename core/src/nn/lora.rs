//! LoRA as PEFT defines it (`peft/tuners/lora/layer.py`): `y = base(x) + s * B(A(dropout(x)))`
//! with `s = lora_alpha / r` (or `/ sqrt(r)` for rsLoRA). The dense `W + s*A*B` is never built.
//! A is stored `[in, r]` and B `[r, out]` (PEFT saves `lora_A.weight` `[r, in]` and
//! `lora_B.weight` `[out, r]`; loading and saving transpose).

use crate::strategy::LoraConfig;
use crate::weights::param_id;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use std::any::TypeId;

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

    /// Inverted dropout of the adapter's input, as `nn.Dropout` (and burn's `Dropout`): only
    /// while training, each element kept with probability `1 - p` and scaled by `1 / (1 - p)`.
    /// On the CPU backends the mask is drawn on the host with a SplitMix64 generator seeded by
    /// one draw from the backend's generator (so `B::seed` still makes runs reproducible) and
    /// applied with one multiplication: burn's `Dropout` samples a Bernoulli per element
    /// through `StdRng` (ChaCha12), which took ~18% of a tiny model's step (docs/BENCHMARKS.md).
    fn dropout<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let p = self.dropout.prob;
        let device = x.device();
        if p == 0.0 || !B::ad_enabled(&device) {
            return x;
        }
        let host = [
            TypeId::of::<crate::backend::CpuTrain>(),
            TypeId::of::<crate::backend::CpuTrainCheckpointed>(),
        ];
        if !host.contains(&TypeId::of::<B>()) {
            return self.dropout.forward(x);
        }
        let seed = Tensor::<B, 1>::random([2], Distribution::Default, &device).into_data();
        let seed = seed.as_slice::<f32>().map_or(0, |s| {
            (u64::from(s[0].to_bits()) << 32) | u64::from(s[1].to_bits())
        });
        let shape = x.shape();
        let mask = dropout_mask(shape.num_elements(), p, seed);
        let mask = Tensor::<B, D>::from_data(TensorData::new(mask, shape), &device);
        x * mask
    }

    /// The update `s * B(A(dropout(x)))` for `x: [..., in]`.
    /// Computed in the adapter's own dtype (f32 even over a bf16 base), returned in `x`'s.
    pub fn delta<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let a = self.lora_a.val();
        let x = self.dropout(x.cast(a.dtype()));
        let b = self.lora_b.val();
        let xa = crate::nn::linear::linear_2d(x, a, None);
        (crate::nn::linear::linear_2d(xa, b, None) * self.scaling).cast(dtype)
    }
}

/// `n` mask values: `1 / (1 - p)` with probability `1 - p`, else 0 (16-bit resolution of `p`).
fn dropout_mask(n: usize, p: f64, seed: u64) -> Vec<f32> {
    let keep = (1.0 / (1.0 - p)) as f32;
    let threshold = (p * 65536.0).round() as u64;
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 3);
    while out.len() < n {
        // SplitMix64: four 16-bit uniform draws per step.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for k in 0..4 {
            let u = (z >> (16 * k)) & 0xFFFF;
            out.push(if u >= threshold { keep } else { 0.0 });
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};

    #[test]
    fn mask_keeps_about_one_minus_p_scaled() {
        let m = dropout_mask(100_000, 0.05, 7);
        let kept = m.iter().filter(|&&v| v > 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.95).abs() < 0.005, "{kept}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.95).abs() < 1e-6));
        // The mean is preserved in expectation.
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
    }

    #[test]
    fn dropout_only_while_training_and_reproducible() {
        let config = LoraConfig {
            dropout: 0.5,
            ..Default::default()
        };
        let dev = Default::default();
        let x = || Tensor::<CpuTrain, 2>::ones([4, 64], &dev);
        let lora = LoraAdapter::<CpuTrain>::new("l", 64, 8, &config, LoraInit::Peft, &dev);
        <CpuTrain as burn::tensor::backend::Backend>::seed(&dev, 3);
        let a = lora.dropout(x()).into_data().to_vec::<f32>().unwrap();
        <CpuTrain as burn::tensor::backend::Backend>::seed(&dev, 3);
        let b = lora.dropout(x()).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert!(a.contains(&0.0) && a.contains(&2.0));
        let plain = LoraAdapter::<Cpu>::new("l", 64, 8, &config, LoraInit::Peft, &dev);
        let y = plain.dropout(Tensor::<Cpu, 2>::ones([4, 64], &dev));
        assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![1.0; 256]);
    }
}
