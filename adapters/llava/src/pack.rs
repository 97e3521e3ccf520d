//! How NeXT / OneVision / NeXT-Video arrange vision features before they replace the
//! placeholder tokens: anyres tile grids unpadded, reduced (`anyres_max`) and closed by
//! `image_newline` per row (`pack_image_features`), and video frames pooled
//! (`LlavaNextVideoPooler`, OneVision's `apply_pooling`).

use crate::config::{LlavaConfig, PoolMode, Variant};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use lmms_core::burn;
use lmms_core::vision::anyres;

fn bilinear<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    interpolate(
        x,
        size,
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
    )
}

/// Packs one image's projected tile features `[tiles, P, D]` (base tile first) into its token
/// sequence `[K, D]`. `original` is the image's `(height, width)`; `newline` is `[D]`.
pub fn pack_image<B: Backend>(
    c: &LlavaConfig,
    features: Tensor<B, 3>,
    original: (usize, usize),
    newline: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let [tiles, p, d] = features.dims();
    let newline = newline.map(|n| n.cast(features.dtype()));
    if tiles == 1 {
        let f = features.reshape([p, d]);
        return match newline {
            Some(n) => Tensor::cat(vec![f, n.reshape([1, d])], 0),
            None => f,
        };
    }
    let side = c.tile_side();
    let base = features.clone().slice([0..1, 0..p, 0..d]).reshape([p, d]);
    let (rows, cols) = anyres::grid_shape(original, &c.image_grid_pinpoints, c.vision.image_size);
    // [rows*cols, side*side, D] -> [D, rows*side, cols*side]: the tiles laid out as one map.
    let map = features
        .slice([1..tiles, 0..p, 0..d])
        .reshape([rows, cols, side, side, d])
        .permute([4, 0, 2, 1, 3])
        .reshape([d, rows * side, cols * side]);
    let (r, cl) = anyres::unpad_ranges(original, (rows * side, cols * side));
    let mut map = map.slice([0..d, r.clone(), cl.clone()]);
    let (mut h, mut w) = (r.len(), cl.len());
    if c.variant == Variant::OneVision
        && let Some((nh, nw)) = anyres::anyres_max_size(h, w, c.anyres_max, side)
    {
        map = bilinear(map.reshape([1, d, h, w]), [nh, nw]).reshape([d, nh, nw]);
        (h, w) = (nh, nw);
    }
    if let Some(n) = newline {
        let column = n.reshape([d, 1, 1]).expand([d, h, 1]);
        map = Tensor::cat(vec![map, column], 2);
        w += 1;
    }
    let packed = map.reshape([d, h * w]).transpose();
    Tensor::cat(vec![base, packed], 0)
}

/// NeXT-Video's resampler, applied to frame features `[F, side*side, D]` before the projector.
pub fn pool_before_projector<B: Backend>(c: &LlavaConfig, frames: Tensor<B, 3>) -> Tensor<B, 3> {
    let [f, p, d] = frames.dims();
    let side = (p as f64).sqrt() as usize;
    let (mode, stride) = c.spatial_pool;
    let map = frames.reshape([f, side, side, d]).permute([0, 3, 1, 2]);
    let pooled = match mode {
        PoolMode::Average => {
            avg_pool2d(map, [stride, stride], [stride, stride], [0, 0], true, false)
        }
        PoolMode::Max => max_pool2d(
            map,
            [stride, stride],
            [stride, stride],
            [0, 0],
            [1, 1],
            false,
        ),
    };
    let [_, _, h, w] = pooled.dims();
    pooled.reshape([f, d, h * w]).swap_dims(1, 2)
}

/// OneVision's `apply_pooling`, on projected frame features `[F, side*side, D]`: bilinear
/// reduction to half the side, rounded up.
pub fn pool_after_projector<B: Backend>(c: &LlavaConfig, frames: Tensor<B, 3>) -> Tensor<B, 3> {
    let [f, _, d] = frames.dims();
    let side = c.tile_side();
    let map = frames.reshape([f, side, side, d]).permute([0, 3, 1, 2]);
    let half = side.div_ceil(2);
    bilinear(map, [half, half])
        .permute([0, 2, 3, 1])
        .reshape([f, half * half, d])
}
