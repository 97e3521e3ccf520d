//! 4-bit storage of frozen linear weights for QLoRA.
//!
//! Under QLoRA the frozen `nn.Linear` weights of the LLM are held in 4 bits and dequantized to
//! the compute dtype inside the forward; the LoRA adapters on top stay f32. As in
//! bitsandbytes/PEFT QLoRA only linear weights are quantized (biases, norms and embeddings stay
//! as loaded) and the LM head stays unquantized (transformers' `BitsAndBytesConfig` skips the
//! output embedding: `get_keys_to_not_convert` / `llm_int8_skip_modules`).
//!
//! # Format ([`QuantKind::Q4Block`])
//!
//! The PyTorch-layout weight `[out, in]` is flattened row-major (so blocks run along the input
//! dimension, as bitsandbytes' blocks do) and padded with zeros to whole blocks of
//! `block_size` elements. Each block has one f32 scale `s = absmax(block) / 7`; an element is
//! stored as the 4-bit code `q + 8` with `q = round(x / s)` in `[-7, 7]` (symmetric, like burn's
//! `QuantValue::Q4S`). Two codes share a byte: element `2k` in the low nibble, `2k + 1` in the
//! high one. Storage: 0.5 byte per weight plus 4 bytes per block (0.5625 byte/weight at block
//! 64, against 4 for f32). Round-trip error per element is at most half a step,
//! `|x - s*q| <= absmax(block) / 14` (see [`Q4_MAX_ERROR_OF_ABSMAX`]); on Gaussian-like weights
//! the relative L2 error of a matrix is about 10% at block 64. (bitsandbytes' QLoRA default is
//! NF4, a 16-value normal-quantile codebook with double-quantized scales, a little more
//! accurate on such weights; it would be another [`QuantKind`].)
//!
//! # Why not burn's quantization
//!
//! burn 0.21 quantizes tensors (`QuantScheme`, `QuantValue::Q4S`, `QuantLevel::Block`), but it
//! does not serve training here: the autodiff backend's `quantize`/`dequantize`
//! (`burn-autodiff-0.21.0/src/ops/qtensor.rs`) are `todo!()`, so a quantized weight cannot be
//! used inside `Autodiff<_>` at all; and the Flex CPU backend unpacks every 4-bit value to an
//! `i8` (`FlexQTensor` stores `DType::I8`), i.e. 1 byte per weight, not 0.5. So the format above
//! is ours: packed codes in a `u8` int tensor plus a float tensor of scales, dequantized with
//! plain tensor ops (bitwise and/shift, cast, multiply) that every backend implements, or, on
//! the CPU backend, whose tensors live in host memory, in one pass over the bytes.
//!
//! # Gradients and memory under autodiff
//!
//! The quantized tensors are not trainable parameters (no gradient ever reaches them). A plain
//! `x.matmul(dequantize(W))` would be correct, but burn's autodiff matmul keeps its right-hand
//! side for the backward pass: every layer's dequantized f32 weight would stay alive until the
//! backward, i.e. a training step would need the f32 weights again. On the training backends
//! ([`CpuTrain`](crate::backend::CpuTrain), and `CudaTrain` with the `cuda` feature) the matmul
//! is therefore a custom autodiff op whose saved state is the packed weight and scales; its
//! backward dequantizes again and returns `grad_x = grad_y · W` (bitsandbytes' `MatMul4Bit`
//! does the same). Backends are told apart at run time by `TypeId` (the layers are generic over
//! any `Backend`); other backends take the plain path.

use crate::error::{Error, Result};
use crate::strategy::QuantKind;
use crate::weights::{Vars, param_id};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion, Int, Tensor, TensorData, TensorPrimitive};
use std::any::Any;

/// How a part's frozen linear weights are stored under QLoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    pub kind: QuantKind,
    /// Weights that share one scale (along the input dimension).
    pub block_size: usize,
}

impl QuantSpec {
    pub fn validate(&self) -> Result<()> {
        if self.block_size == 0 || !self.block_size.is_multiple_of(2) {
            return Err(Error::Strategy(format!(
                "QLoRA block size must be a positive even number, got {}",
                self.block_size
            )));
        }
        Ok(())
    }
}

/// Largest 4-bit code magnitude: codes are `-7..=7`.
const Q4_MAX: f32 = 7.0;
/// The round-trip error bound of [`quantize_q4`] + [`dequantize_q4`], as a fraction of the
/// block's absolute maximum: half a quantization step, `(absmax / 7) / 2`.
pub const Q4_MAX_ERROR_OF_ABSMAX: f32 = 0.5 / Q4_MAX;

/// Quantizes `w` (any layout; blocks are consecutive runs of `block_size` elements, the last one
/// zero-padded) into packed codes (`ceil(len / block_size) * block_size / 2` bytes) and one
/// scale per block. `block_size` must be even. Large weights use all cores.
pub fn quantize_q4(w: &[f32], block_size: usize) -> (Vec<u8>, Vec<f32>) {
    assert!(block_size > 0 && block_size.is_multiple_of(2));
    let blocks = w.len().div_ceil(block_size);
    let mut packed = vec![0u8; blocks * block_size / 2];
    let mut scales = vec![0f32; blocks];
    let one = |w: &[f32], packed: &mut [u8], scales: &mut [f32]| {
        for ((block, out), scale) in w
            .chunks(block_size)
            .zip(packed.chunks_mut(block_size / 2))
            .zip(scales.iter_mut())
        {
            let absmax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            *scale = absmax / Q4_MAX;
            let inv = if absmax > 0.0 { Q4_MAX / absmax } else { 0.0 };
            for (i, &x) in block.iter().enumerate() {
                let code = ((x * inv).round().clamp(-Q4_MAX, Q4_MAX) as i32 + 8) as u8;
                out[i / 2] |= if i % 2 == 0 { code } else { code << 4 };
            }
            // Padding elements keep code 0 (q = -8); they are sliced away after dequantizing.
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if w.len() < (1 << 20) || threads == 1 {
        one(w, &mut packed, &mut scales);
    } else {
        let per = blocks.div_ceil(threads);
        std::thread::scope(|sc| {
            for ((w, p), s) in w
                .chunks(per * block_size)
                .zip(packed.chunks_mut(per * block_size / 2))
                .zip(scales.chunks_mut(per))
            {
                sc.spawn(move || one(w, p, s));
            }
        });
    }
    (packed, scales)
}

/// The first `len` values of what [`quantize_q4`] packed.
pub fn dequantize_q4(packed: &[u8], scales: &[f32], block_size: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; scales.len() * block_size];
    dequantize_q4_into(packed, scales, block_size, &mut out);
    out.truncate(len);
    out
}

/// [`dequantize_q4`] into `out` (`scales.len() * block_size` values), on all cores for large
/// weights.
fn dequantize_q4_into(packed: &[u8], scales: &[f32], block_size: usize, out: &mut [f32]) {
    let one = |packed: &[u8], scales: &[f32], out: &mut [f32]| {
        for ((codes, &s), out) in packed
            .chunks(block_size / 2)
            .zip(scales)
            .zip(out.chunks_mut(block_size))
        {
            let lut: [f32; 16] = std::array::from_fn(|c| (c as f32 - 8.0) * s);
            for (&byte, pair) in codes.iter().zip(out.chunks_exact_mut(2)) {
                pair[0] = lut[(byte & 15) as usize];
                pair[1] = lut[(byte >> 4) as usize];
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if out.len() < (1 << 20) || threads == 1 {
        return one(packed, scales, out);
    }
    let blocks_per = scales.len().div_ceil(threads);
    std::thread::scope(|sc| {
        for ((p, s), o) in packed
            .chunks(blocks_per * block_size / 2)
            .zip(scales.chunks(blocks_per))
            .zip(out.chunks_mut(blocks_per * block_size))
        {
            sc.spawn(move || one(p, s, o));
        }
    });
}

/// A frozen linear weight held in 4 bits (see the module docs for the format).
#[derive(Module, Debug)]
pub struct Q4Weight<B: Backend> {
    /// `u8` codes, two per byte: `[blocks * block_size / 2]`.
    pub packed: Param<Tensor<B, 1, Int>>,
    /// One scale per block: `[blocks, 1]`.
    pub scales: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub d_in: usize,
    #[module(skip)]
    pub d_out: usize,
    #[module(skip)]
    pub block_size: usize,
}

impl<B: Backend> Q4Weight<B> {
    /// Reads `<vars>.<leaf>` (`[out, in]` in the file) and quantizes it.
    pub fn load(
        vars: &Vars<'_>,
        leaf: &str,
        d_in: usize,
        d_out: usize,
        spec: QuantSpec,
        device: &B::Device,
    ) -> Result<Self> {
        spec.validate()?;
        let QuantKind::Q4Block = spec.kind;
        // Read on the CPU backend: the f32 weight never goes to the device.
        let host = vars
            .tensor::<crate::backend::Cpu, 2>(leaf, [d_out, d_in], &Default::default())?
            .into_data()
            .convert::<f32>();
        let w = host
            .as_slice::<f32>()
            .map_err(|e| Error::Unsupported(format!("{}: {e:?}", vars.name(leaf))))?;
        Ok(Self::from_host(
            &vars.name(leaf),
            w,
            d_in,
            d_out,
            spec.block_size,
            device,
        ))
    }

    /// Quantizes a host weight in PyTorch layout (`[out, in]`, row-major). Parameter ids
    /// derive from `name`.
    pub fn from_host(
        name: &str,
        w: &[f32],
        d_in: usize,
        d_out: usize,
        block_size: usize,
        device: &B::Device,
    ) -> Self {
        assert_eq!(w.len(), d_in * d_out);
        let (packed, scales) = quantize_q4(w, block_size);
        let (n_bytes, blocks) = (packed.len(), scales.len());
        let packed =
            Tensor::<B, 1, Int>::from_data(TensorData::new(packed, [n_bytes]), (device, DType::U8));
        let scales =
            Tensor::<B, 2>::from_data(TensorData::new(scales, [blocks, 1]), (device, DType::F32));
        Q4Weight {
            packed: Param::initialized(param_id(&format!("{name}.q4_codes")), packed),
            scales: Param::initialized(param_id(&format!("{name}.q4_scales")), scales)
                .set_require_grad(false),
            d_in,
            d_out,
            block_size,
        }
    }

    /// Bytes held: packed codes plus scales.
    pub fn bytes(&self) -> usize {
        let scales = self.scales.val();
        self.packed.val().dims()[0] + scales.dims()[0] * scales.dtype().size()
    }

    /// The weight in PyTorch layout `[out, in]`, f32.
    pub fn dequantize(&self) -> Tensor<B, 2> {
        dequantize_tensor(
            self.packed.val(),
            self.scales.val(),
            Meta::of(self, DType::F32),
        )
    }

    /// `x · Wᵀ` for `x: [..., in]`, in `x`'s dtype: `[..., out]`. No gradient reaches the
    /// weight; on the training backends the backward keeps only the packed weight (see the
    /// module docs).
    pub fn matmul<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let meta = Meta::of(self, x.dtype());
        let (packed, scales) = (self.packed.val(), self.scales.val());
        type Cpu = crate::backend::Cpu;
        let x = match autodiff_matmul::<B, Cpu, NoCheckpointing, D>(x, &packed, &scales, meta) {
            Ok(y) => return y,
            Err(x) => x,
        };
        #[cfg(feature = "cuda")]
        let x = {
            type Cuda = crate::backend::Cuda;
            match autodiff_matmul::<B, Cuda, NoCheckpointing, D>(x, &packed, &scales, meta) {
                Ok(y) => return y,
                Err(x) => x,
            }
        };
        let w = dequantize_tensor(packed, scales, meta);
        x.matmul(w.transpose().unsqueeze::<D>())
    }
}

/// What dequantizing needs besides the tensors.
#[derive(Debug, Clone, Copy)]
struct Meta {
    d_in: usize,
    d_out: usize,
    block_size: usize,
    dtype: DType,
}

impl Meta {
    fn of<B: Backend>(w: &Q4Weight<B>, dtype: DType) -> Self {
        Meta {
            d_in: w.d_in,
            d_out: w.d_out,
            block_size: w.block_size,
            dtype,
        }
    }
}

/// Packed codes + scales -> `[out, in]` in `meta.dtype`: with tensor ops, or on the CPU
/// backend (whose tensors live in host memory) with one pass over the bytes, several times
/// faster than the chain of element-wise tensor ops.
fn dequantize_tensor<B: Backend>(
    packed: Tensor<B, 1, Int>,
    scales: Tensor<B, 2>,
    meta: Meta,
) -> Tensor<B, 2> {
    if std::any::TypeId::of::<B>() == std::any::TypeId::of::<crate::backend::Cpu>() {
        let device = packed.device();
        let (p, s) = (packed.into_data(), scales.into_data());
        let (p, s) = (
            p.as_slice::<u8>().expect("u8 codes"),
            s.as_slice::<f32>().expect("f32 scales"),
        );
        let mut w = vec![0f32; s.len() * meta.block_size];
        dequantize_q4_into(p, s, meta.block_size, &mut w);
        w.truncate(meta.d_in * meta.d_out);
        let w = Tensor::<B, 2>::from_data(
            TensorData::new(w, [meta.d_out, meta.d_in]),
            (&device, DType::F32),
        );
        return if meta.dtype == DType::F32 {
            w
        } else {
            w.cast(meta.dtype)
        };
    }
    let blocks = scales.dims()[0];
    let lo = packed.clone().bitwise_and_scalar(15.elem());
    let hi = packed.bitwise_right_shift_scalar(4.elem());
    // [bytes, 2] row-major = element order: low nibble first.
    let codes = Tensor::stack::<2>(vec![lo, hi], 1).reshape([blocks, meta.block_size]);
    let w = (codes.float().sub_scalar(8.0) * scales).reshape([blocks * meta.block_size]);
    let n = meta.d_in * meta.d_out;
    let w = if n == blocks * meta.block_size {
        w
    } else {
        w.slice(0..n)
    };
    let w = w.reshape([meta.d_out, meta.d_in]);
    if w.dtype() == meta.dtype {
        w
    } else {
        w.cast(meta.dtype)
    }
}

/// Whether [`Q4Weight::matmul`] on backend `B` uses the custom autodiff op that keeps only the
/// packed weight for the backward pass.
pub fn saves_packed_weight<B: Backend>() -> bool {
    let id = std::any::TypeId::of::<B>();
    #[cfg(feature = "cuda")]
    if id == std::any::TypeId::of::<crate::backend::CudaTrain>() {
        return true;
    }
    id == std::any::TypeId::of::<crate::backend::CpuTrain>()
}

/// Moves a value to another type when both are the same type (a run-time check).
fn same_type<T: 'static, U: 'static>(t: T) -> std::result::Result<U, T> {
    let b: Box<dyn Any> = Box::new(t);
    match b.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(b) => Err(*b.downcast::<T>().expect("the value's own type")),
    }
}

/// The custom autodiff matmul when `B` is `Autodiff<IB, C>`; gives `x` back otherwise.
fn autodiff_matmul<B: Backend, IB: Backend, C: CheckpointStrategy, const D: usize>(
    x: Tensor<B, D>,
    packed: &Tensor<B, 1, Int>,
    scales: &Tensor<B, 2>,
    meta: Meta,
) -> std::result::Result<Tensor<B, D>, Tensor<B, D>> {
    let x = same_type::<Tensor<B, D>, Tensor<Autodiff<IB, C>, D>>(x)?;
    let packed = same_type::<_, Tensor<Autodiff<IB, C>, 1, Int>>(packed.clone())
        .expect("same backend as x")
        .inner();
    let scales = same_type::<_, Tensor<Autodiff<IB, C>, 2>>(scales.clone())
        .expect("same backend as x")
        .inner();
    let y = q4_matmul_autodiff::<IB, C, D>(x, packed, scales, meta);
    Ok(same_type::<_, Tensor<B, D>>(y).expect("same backend as x"))
}

/// Backward of `y = x · dequant(W)ᵀ` with respect to `x`: `grad_x = grad_y · dequant(W)`.
#[derive(Debug)]
struct Q4MatmulBackward<const D: usize>;

impl<IB: Backend, const D: usize> Backward<IB, 1> for Q4MatmulBackward<D> {
    type State = (Tensor<IB, 1, Int>, Tensor<IB, 2>, Meta);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (packed, scales, meta) = ops.state;
        unary::<IB, _>(ops.parents, ops.node, grads, |grad| {
            let grad = Tensor::<IB, D>::from_primitive(TensorPrimitive::Float(grad));
            let w = dequantize_tensor(
                packed,
                scales,
                Meta {
                    dtype: grad.dtype(),
                    ..meta
                },
            );
            grad.matmul(w.unsqueeze::<D>()).into_primitive().tensor()
        });
    }
}

fn q4_matmul_autodiff<IB: Backend, C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<IB, C>, D>,
    packed: Tensor<IB, 1, Int>,
    scales: Tensor<IB, 2>,
    meta: Meta,
) -> Tensor<Autodiff<IB, C>, D> {
    let x = x.into_primitive().tensor();
    let node = x.node.clone();
    let xi = Tensor::<IB, D>::from_primitive(TensorPrimitive::Float(x.primitive));
    let w = dequantize_tensor(packed.clone(), scales.clone(), meta);
    let y = xi
        .matmul(w.transpose().unsqueeze::<D>())
        .into_primitive()
        .tensor();
    let out = match Q4MatmulBackward::<D>
        .prepare::<C>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((packed, scales, meta), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use burn::tensor::Distribution;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        // A small LCG: deterministic, no extra dependency.
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for (n, bs) in [(48 * 80, 64), (37 * 5, 16), (10, 64)] {
            let w = random(n, n as u64);
            let (packed, scales) = quantize_q4(&w, bs);
            assert_eq!(packed.len(), n.div_ceil(bs) * bs / 2);
            let d = dequantize_q4(&packed, &scales, bs, n);
            for (b, (block, dq)) in w.chunks(bs).zip(d.chunks(bs)).enumerate() {
                let absmax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!((scales[b] - absmax / 7.0).abs() <= 1e-7);
                for (x, y) in block.iter().zip(dq) {
                    let bound = absmax * Q4_MAX_ERROR_OF_ABSMAX * (1.0 + 1e-5);
                    assert!((x - y).abs() <= bound, "{x} vs {y}, bound {bound}");
                }
                // The block's extreme value is exact (code ±7).
                let i = block.iter().position(|x| x.abs() == absmax).unwrap();
                assert!((block[i] - dq[i]).abs() <= absmax * 1e-6);
            }
        }
        // An all-zero block round-trips to zeros.
        let (p, s) = quantize_q4(&[0.0; 8], 8);
        assert_eq!(dequantize_q4(&p, &s, 8, 8), vec![0.0; 8]);
    }

    #[test]
    fn large_dequantize_on_threads_matches() {
        let (n, bs) = ((1 << 20) + 96, 64);
        let w = random(n, 11);
        let (packed, scales) = quantize_q4(&w, bs);
        let d = dequantize_q4(&packed, &scales, bs, n);
        for (i, (x, y)) in w.iter().zip(&d).enumerate() {
            let b = &w[i / bs * bs..((i / bs + 1) * bs).min(n)];
            let absmax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!((x - y).abs() <= absmax * Q4_MAX_ERROR_OF_ABSMAX * 1.00001);
        }
    }

    #[test]
    fn tensor_dequantize_matches_host() {
        let (d_in, d_out, bs) = (24, 5, 16);
        let w = random(d_in * d_out, 3);
        let q = Q4Weight::<Cpu>::from_host("w", &w, d_in, d_out, bs, &Default::default());
        let (packed, scales) = quantize_q4(&w, bs);
        let host = dequantize_q4(&packed, &scales, bs, w.len());
        let dev = q.dequantize().into_data().to_vec::<f32>().unwrap();
        assert_eq!(host, dev);
        // The element-wise tensor-op path (any other backend) gives the same.
        let q2 = Q4Weight::<CpuTrain>::from_host("w", &w, d_in, d_out, bs, &Default::default());
        let ops = q2.dequantize().into_data().to_vec::<f32>().unwrap();
        assert_eq!(host, ops);
        // 120 weights -> 8 blocks of 16: 64 code bytes and 8 f32 scales.
        assert_eq!(q.bytes(), 64 + 8 * 4);
    }

    /// The custom autodiff op gives the same values and input gradients as the plain
    /// dequantize-then-matmul, and no gradient to the quantized weight.
    #[test]
    fn autodiff_matmul_matches_plain_matmul() {
        let (d_in, d_out, bs) = (32, 12, 8);
        let dev = Default::default();
        let w = random(d_in * d_out, 7);
        let q = Q4Weight::<CpuTrain>::from_host("w", &w, d_in, d_out, bs, &dev);
        assert!(saves_packed_weight::<CpuTrain>() && !saves_packed_weight::<Cpu>());
        let x0 = Tensor::<CpuTrain, 3>::random([2, 3, d_in], Distribution::Default, &dev);

        let x = x0.clone().detach().require_grad();
        let y = q.matmul(x.clone());
        let g = y.clone().powi_scalar(2).sum().backward();
        let gx = x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        assert!(q.scales.val().grad(&g).is_none());

        let x2 = x0.detach().require_grad();
        let wd = q.dequantize().detach();
        let y2 = x2.clone().matmul(wd.transpose().unsqueeze::<3>());
        let g2 = y2.clone().powi_scalar(2).sum().backward();
        let gx2 = x2.grad(&g2).unwrap().into_data().to_vec::<f32>().unwrap();

        let (a, b) = (
            y.into_data().to_vec::<f32>().unwrap(),
            y2.into_data().to_vec::<f32>().unwrap(),
        );
        for (u, v) in a.iter().zip(&b).chain(gx.iter().zip(&gx2)) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }
}
