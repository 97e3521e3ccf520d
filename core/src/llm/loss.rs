//! Causal LM loss as transformers' `ForCausalLMLoss`: logits at position t predict the label at
//! t+1, labels of -100 are ignored, and the loss is the mean over the counted tokens.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

pub const IGNORE_INDEX: i64 = -100;

/// `logits: [B, T, V]`, `labels` row-major `[B, T]` on the host. Returns the mean loss `[1]`
/// and the number of tokens it averages over (0 gives a zero loss).
pub fn causal_lm_loss<B: Backend>(logits: Tensor<B, 3>, labels: &[i64]) -> (Tensor<B, 1>, usize) {
    let [b, t, v] = logits.dims();
    let device = logits.device();
    // Shifted targets: position i predicts labels[i + 1]; the last position predicts nothing.
    let mut targets = vec![0i64; b * t];
    let mut weights = vec![0f32; b * t];
    let mut count = 0usize;
    for row in 0..b {
        for i in 0..t.saturating_sub(1) {
            let label = labels[row * t + i + 1];
            if label != IGNORE_INDEX {
                targets[row * t + i] = label;
                weights[row * t + i] = 1.0;
                count += 1;
            }
        }
    }
    let logp = log_softmax(logits.reshape([b * t, v]).cast(burn::tensor::DType::F32), 1);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [b * t, 1]), &device);
    let picked = logp.gather(1, targets).reshape([b * t]);
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [b * t]), &device);
    let total = (picked * weights).sum().neg();
    (total / count.max(1) as f64, count)
}
