//! Partial LoRA ("PLoRA", InternLM-XComposer2's `build_mlp.py`): a low-rank update that only
//! some rows of the input get, `y = W x + b + [row selected] * s * B(A(dropout(x)))`. In
//! XComposer2 the selected rows are the image tokens (`im_mask`), and the adapter is part of the
//! base checkpoint (`<linear>.Plora_A.weight` `[r, in]`, `<linear>.Plora_B.weight` `[out, r]`),
//! not a PEFT adapter: it trains with the base weights and stays frozen under LoRA.
//!
//! The reference adds the update to the masked rows only (`res[im_mask] += ...`); multiplying
//! the update by a 0/1 row mask gives the same values and gradients without a gather.

use crate::error::Result;
use crate::weights::Vars;
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Which linear layers of a part carry a partial adapter, and how it is named and scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialLoraSpec {
    /// Leaf names under the linear's path (`Plora_A`, `Plora_B`).
    pub a_name: &'static str,
    pub b_name: &'static str,
    /// The rank `r` (the remote code fixes it at 256 rather than writing it to `config.json`).
    pub rank: usize,
    /// `lora_alpha / lora_r`.
    pub scaling: f64,
    /// Dropout on the adapter's input (only while training).
    pub dropout: f64,
    /// The last path component of the linears that have one (`wqkv`, `wo`, `w1`, `w2`, `w3`).
    pub targets: &'static [&'static str],
}

impl PartialLoraSpec {
    /// Whether the linear at `path` carries a partial adapter.
    pub fn targets(&self, path: &str) -> bool {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        self.targets.contains(&leaf)
    }
}

#[derive(Module, Debug)]
pub struct PartialLora<B: Backend> {
    /// `[in, r]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[r, out]`.
    pub b: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
    #[module(skip)]
    pub scaling: f64,
}

impl<B: Backend> PartialLora<B> {
    /// Loads `<vars>.<a_name>.weight` and `<vars>.<b_name>.weight` (trainable with the base).
    pub fn load(
        vars: &Vars<'_>,
        spec: &PartialLoraSpec,
        d_in: usize,
        d_out: usize,
        trainable: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let (va, vb) = (vars.pp(spec.a_name), vars.pp(spec.b_name));
        let a = va.linear_weight("weight", d_in, spec.rank, device)?;
        let b = vb.linear_weight("weight", spec.rank, d_out, device)?;
        Ok(PartialLora {
            a: va.wrap_transposed("weight", a, trainable),
            b: vb.wrap_transposed("weight", b, trainable),
            dropout: Dropout { prob: spec.dropout },
            scaling: spec.scaling,
        })
    }

    /// The update for `x: [B, T, in]` on the rows `mask` (`[B, T, 1]`, 0/1) selects, computed
    /// in the adapter's dtype and returned in `x`'s.
    pub fn delta(&self, x: Tensor<B, 3>, mask: &Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let a = self.a.val();
        let x = crate::nn::dropout::dropout(x.cast(a.dtype()), self.dropout.prob);
        let y = x
            .matmul(a.clone().unsqueeze::<3>())
            .matmul(self.b.val().unsqueeze::<3>());
        (y * self.scaling * mask.clone().cast(a.dtype())).cast(dtype)
    }
}
