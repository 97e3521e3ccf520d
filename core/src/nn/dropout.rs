//! Inverted dropout for the adapters (LoRA, XComposer2's partial LoRA), as `nn.Dropout`: only
//! while training (an autodiff backend), each element kept with probability `1 - p` and scaled
//! by `1 / (1 - p)`.
//!
//! On the CPU training backend the mask is drawn on the host with a SplitMix64 generator seeded
//! by one draw from the backend's generator (so `B::seed` still makes runs reproducible) and
//! applied with one multiplication: burn's `Dropout` samples a Bernoulli per element through
//! `StdRng` (ChaCha12), which took ~18% of a tiny model's step (docs/BENCHMARKS.md). Inside a
//! checkpointed layer ([`crate::nn::recompute`]) the seed is recorded and replayed, so that the
//! layer's rerun draws the same mask, on every backend.

use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use std::any::TypeId;

/// `x` with dropout of probability `p`.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    let device = x.device();
    if p == 0.0 || !B::ad_enabled(&device) {
        return x;
    }
    let host = TypeId::of::<B>() == TypeId::of::<crate::backend::CpuTrain>();
    if !host && !crate::nn::recompute::seeds_tracked() {
        return Dropout { prob: p }.forward(x);
    }
    let seed = crate::nn::recompute::dropout_seed(|| {
        let seed = Tensor::<B, 1>::random([2], Distribution::Default, &device).into_data();
        seed.as_slice::<f32>().map_or(0, |s| {
            (u64::from(s[0].to_bits()) << 32) | u64::from(s[1].to_bits())
        })
    });
    if !host {
        // The backend's own generator, restarted from the recorded seed.
        B::seed(&device, seed);
        let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
        return x * keep / (1.0 - p);
    }
    let shape = x.shape();
    let mask = dropout_mask(shape.num_elements(), p, seed);
    x * Tensor::<B, D>::from_data(TensorData::new(mask, shape), &device)
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
    fn only_while_training_and_reproducible() {
        let dev = Default::default();
        let x = || Tensor::<CpuTrain, 2>::ones([4, 64], &dev);
        <CpuTrain as Backend>::seed(&dev, 3);
        let a = dropout(x(), 0.5).into_data().to_vec::<f32>().unwrap();
        <CpuTrain as Backend>::seed(&dev, 3);
        let b = dropout(x(), 0.5).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert!(a.contains(&0.0) && a.contains(&2.0));
        let y = dropout(Tensor::<Cpu, 2>::ones([4, 64], &dev), 0.5);
        assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![1.0; 256]);
    }
}
