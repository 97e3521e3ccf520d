//! The "anyres" grid arithmetic of LLaVA-NeXT / OneVision, shared by the image processors (how
//! many tiles, how many tokens) and the models (how tile features are packed):
//! `select_best_resolution` (`image_processing_utils.py`), `image_size_to_num_patches`,
//! `get_anyres_image_grid_shape`, `unpad_image` (`modeling_llava_next.py`) and the
//! `anyres_max_N` reduction (`modeling_llava_onevision.py`). Sizes are `(height, width)`.

/// The pinpoint resolution that keeps most of the image while wasting least padding.
pub fn select_best_resolution(original: (usize, usize), pinpoints: &[[usize; 2]]) -> [usize; 2] {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let mut best = pinpoints[0];
    let mut max_effective = 0f64;
    let mut min_wasted = f64::INFINITY;
    for &[h, w] in pinpoints {
        let scale = (w as f64 / ow).min(h as f64 / oh);
        let (dw, dh) = ((ow * scale) as i64 as f64, (oh * scale) as i64 as f64);
        let effective = (dw * dh).min(ow * oh);
        let wasted = (w * h) as f64 - effective;
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = [h, w];
        }
    }
    best
}

/// Tiles per side `(rows, cols)` of the best resolution, for tiles of `tile` pixels.
pub fn grid_shape(
    original: (usize, usize),
    pinpoints: &[[usize; 2]],
    tile: usize,
) -> (usize, usize) {
    let [h, w] = select_best_resolution(original, pinpoints);
    (h / tile, w / tile)
}

/// Tiles the processor makes for an image: the grid plus the whole-image base tile.
pub fn num_tiles(original: (usize, usize), pinpoints: &[[usize; 2]], tile: usize) -> usize {
    let [h, w] = select_best_resolution(original, pinpoints);
    h.div_ceil(tile) * w.div_ceil(tile) + 1
}

/// Python's `int(round(x, 7))` for the non-negative values used here.
fn round7_trunc(x: f64) -> usize {
    ((x * 1e7).round_ties_even() / 1e7) as usize
}

/// The rows and columns of a `current` `(h, w)` feature map that hold the image rather than the
/// padding added to reach the pinpoint aspect ratio: `(row_range, col_range)`.
pub fn unpad_ranges(
    original: (usize, usize),
    current: (usize, usize),
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let (ch, cw) = current;
    if ow / oh > cw as f64 / ch as f64 {
        let new_h = round7_trunc(oh * (cw as f64 / ow));
        let pad = (ch.saturating_sub(new_h)) / 2;
        (pad..ch - pad, 0..cw)
    } else {
        let new_w = round7_trunc(ow * (ch as f64 / oh));
        let pad = (cw.saturating_sub(new_w)) / 2;
        (0..ch, pad..cw - pad)
    }
}

/// Python's `a // b` on floats: CPython's `float_floor_div` works from `fmod`, which can differ
/// from `floor(a / b)` by one when `a / b` rounds up to an integer.
pub fn py_floordiv(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 { f + 1.0 } else { f }
    } else {
        0.0
    }
}

/// OneVision's `anyres_max_N`: the size a `(h, w)` feature map is bilinearly reduced to when it
/// holds more than about `max_tiles` tiles of `side x side` features, else `None`.
pub fn anyres_max_size(
    h: usize,
    w: usize,
    max_tiles: usize,
    side: usize,
) -> Option<(usize, usize)> {
    let ratio = ((h * w) as f64 / (max_tiles * side * side) as f64).sqrt();
    (ratio > 1.1).then(|| {
        (
            py_floordiv(h as f64, ratio) as usize,
            py_floordiv(w as f64, ratio) as usize,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cases from the committed fixtures, whose counts transformers 5.23 computed (see their
    // meta.json).
    #[test]
    fn llava_next_fixture_grids() {
        let pins = [[32, 64], [64, 32], [64, 64]];
        assert_eq!(select_best_resolution((30, 70), &pins), [32, 64]);
        assert_eq!(num_tiles((30, 70), &pins, 32), 3);
        assert_eq!(select_best_resolution((90, 50), &pins), [64, 64]);
        assert_eq!(num_tiles((90, 50), &pins, 32), 5);
        assert_eq!(unpad_ranges((30, 70), (4, 8)), (0..4, 0..8));
        assert_eq!(unpad_ranges((90, 50), (8, 8)), (0..8, 2..6));
    }

    #[test]
    fn floordiv_follows_python() {
        assert_eq!(py_floordiv(6.0, 1.3416407864998738), 4.0);
        assert_eq!(py_floordiv(15.0, 1.3416407864998738), 11.0);
        // Python: 1 // 0.1 == 9.0, where floor(1 / 0.1) is 10.
        assert_eq!(py_floordiv(1.0, 0.1), 9.0);
    }

    #[test]
    fn onevision_fixture_grid() {
        let pins: Vec<[usize; 2]> = [40, 80, 120]
            .iter()
            .flat_map(|&h| [40, 80, 120].map(|w| [h, w]))
            .collect();
        assert_eq!(select_best_resolution((50, 110), &pins), [80, 120]);
        assert_eq!(grid_shape((50, 110), &pins, 40), (2, 3));
        assert_eq!(unpad_ranges((50, 110), (10, 15)), (2..8, 0..15));
        assert_eq!(anyres_max_size(6, 15, 2, 5), Some((4, 11)));
        assert_eq!(anyres_max_size(5, 5, 2, 5), None);
    }
}
