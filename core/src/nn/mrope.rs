//! Rotary tables built from several position axes, in HF's rotate-half convention:
//! - multimodal RoPE (M-RoPE, transformers' `Qwen2VLRotaryEmbedding`): three position ids per
//!   token (temporal, height, width); the `head_dim / 2` frequencies are split into
//!   `mrope_section` chunks and chunk `i` rotates by axis `i % 3`;
//! - the axial 2D RoPE of the Qwen2-VL vision tower (`Qwen2VLVisionRotaryEmbedding`): the
//!   frequencies of the height position followed by the same frequencies of the width position.
//!
//! Both end like 1D RoPE: `cat(angles, angles)` per token, then cos and sin, all in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// cos and sin of `cat(a, a)` for each row `a` of `angles` (row-major `[N, half]`).
pub fn duplicated_cos_sin(angles: &[f32], half: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(angles.len() * 2);
    let mut sin = Vec::with_capacity(angles.len() * 2);
    for row in angles.chunks(half.max(1)) {
        for _ in 0..2 {
            for &a in row {
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    (cos, sin)
}

/// M-RoPE angles `[N, inv.len()]`: frequency `k` uses the axis of the section it falls in
/// (`section[i]` frequencies for section `i`, axis `i % 3`). `positions` are the three axes,
/// each row-major `[N]`.
pub fn mrope_angles(inv: &[f32], section: &[usize], positions: [&[i64]; 3]) -> Vec<f32> {
    let axis: Vec<usize> = section
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i % 3, n))
        .chain(std::iter::repeat(0))
        .take(inv.len())
        .collect();
    let axis = &axis;
    (0..positions[0].len())
        .flat_map(|t| {
            inv.iter()
                .zip(axis)
                .map(move |(&f, &a)| positions[a][t] as f32 * f)
        })
        .collect()
}

/// Axial 2D angles `[N, 2 * inv.len()]`: the height position times every frequency, then the
/// width position times every frequency.
pub fn axial_angles(inv: &[f32], hw: &[(i64, i64)]) -> Vec<f32> {
    let mut out = Vec::with_capacity(hw.len() * inv.len() * 2);
    for &(h, w) in hw {
        out.extend(inv.iter().map(|&f| h as f32 * f));
        out.extend(inv.iter().map(|&f| w as f32 * f));
    }
    out
}

/// `(cos, sin)` tensors of shape `shape` (last dim `2 * half`) from angles `[.., half]`.
pub fn cos_sin_tensors<B: Backend, const D: usize>(
    angles: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let (cos, sin) = duplicated_cos_sin(angles, shape[D - 1] / 2);
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_pick_the_axis() {
        let inv = [1.0, 0.5, 0.25, 0.125];
        let (t, h, w) = ([2i64], [3i64], [5i64]);
        let a = mrope_angles(&inv, &[2, 1, 1], [&t, &h, &w]);
        assert_eq!(a, vec![2.0, 1.0, 0.75, 0.625]);
        let (cos, _) = duplicated_cos_sin(&a, 4);
        assert_eq!(cos.len(), 8);
        assert_eq!(cos[0], cos[4]);
    }

    #[test]
    fn equal_axes_are_plain_rope() {
        let inv = [1.0, 0.1, 0.01];
        let p = [7i64];
        let a = mrope_angles(&inv, &[1, 1, 1], [&p, &p, &p]);
        let (cos, sin) = crate::nn::rope::tables(&inv, &p);
        assert_eq!(duplicated_cos_sin(&a, 3), (cos, sin));
        assert_eq!(
            axial_angles(&[1.0, 2.0], &[(3, 4)]),
            vec![3.0, 6.0, 4.0, 8.0]
        );
    }
}
