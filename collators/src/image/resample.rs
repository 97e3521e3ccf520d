//! Pillow's `Image.resize` for 8-bit RGB images, which is what `transformers/image_transforms.py`
//! (`resize`, used by every `*ImageProcessorPil`) calls. Reimplemented (no code taken) from how
//! Pillow 13's libImaging `Resample.c` computes:
//!
//! - separable: two passes through an 8-bit intermediate image, horizontal first (over only the
//!   source rows the vertical pass reads) unless the height shrinks by more than twice as many
//!   pixels as the width (Pillow 13's rule; older Pillows always start horizontally); a pass
//!   whose size does not change is skipped, and an unchanged size is a plain copy;
//! - per output pixel, the filter is centred on `(i + 0.5) * scale` and, when downscaling, widened
//!   by the scale factor (antialiasing); taps are normalised to sum 1 and turned into 22-bit fixed
//!   point (rounded half away from zero);
//! - accumulation in integers starting at one half, then `>> 22` and clipping to 0..=255.
//!
//! Filters are Pillow's: bicubic with a = -0.5 (support 2), bilinear (1), Lanczos-3 (3),
//! box (0.5), Hamming (1). Nearest (`resample` 0) uses Pillow's pixel-centre mapping.
//!
//! Measured against Pillow 13 on the fixtures of `tools/fixtures/processors.py`: bit-identical for
//! every filter (see `collators/tests/image_processors.rs`).
//!
//! Speed, same arithmetic: [`resize_window`] computes only the pixels a center crop keeps; the
//! horizontal pass works on blocks of rows transposed to `[x][row][channel]` so both passes are
//! contiguous multiply-adds, and both are compiled a second time for AVX2 (picked at run time).

use ::image::RgbImage;

/// Pillow's resampling filters, numbered as `PIL.Image.Resampling` (the `resample` key of HF configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Nearest = 0,
    Lanczos = 1,
    Bilinear = 2,
    Bicubic = 3,
    Box = 4,
    Hamming = 5,
}

impl Resample {
    /// The filter for a `resample` code of an HF config, `None` when the code is unknown.
    pub fn from_pil(code: i64) -> Option<Self> {
        Some(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Resample::Nearest | Resample::Box => 0.5,
            Resample::Bilinear | Resample::Hamming => 1.0,
            Resample::Bicubic => 2.0,
            Resample::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Resample::Nearest | Resample::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Resample::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Resample::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * std::f64::consts::PI;
                    // Pillow writes the window's constants as C `float`s.
                    px.sin() / px * (0.54f32 as f64 + 0.46f32 as f64 * px.cos())
                }
            }
            Resample::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Resample::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point taps of one pass: for output `i`, source indices `start[i]..start[i] + len[i]`
/// with weights `taps[i * ksize..][..len[i]]`.
struct Taps {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    taps: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize, filter: Resample) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut taps = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        // C casts truncate toward zero; negative values are clamped to 0 anyway.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = hi.saturating_sub(lo);
        let mut total = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = filter.weight(((x + lo) as f64 - center + 0.5) * inv);
            total += *wx;
        }
        let row = &mut taps[i * ksize..(i + 1) * ksize];
        for (t, &wx) in row.iter_mut().zip(&w[..n]) {
            let v = if total != 0.0 { wx / total } else { wx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            *t = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        start.push(lo);
        len.push(n);
    }
    Taps {
        ksize,
        start,
        len,
        taps,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

impl Taps {
    /// The taps of outputs `r` only.
    fn window(self, r: std::ops::Range<usize>) -> Taps {
        Taps {
            ksize: self.ksize,
            start: self.start[r.clone()].to_vec(),
            len: self.len[r.clone()].to_vec(),
            taps: self.taps[r.start * self.ksize..r.end * self.ksize].to_vec(),
        }
    }
}

/// Rows per block of the horizontal pass.
const ROWS: usize = 8;

/// Horizontal pass: source rows `rows` of a `src_w`-wide RGB buffer -> `rows.len()` rows of
/// `t.start.len()` pixels. Blocks of [`ROWS`] rows are first transposed to `[x][row][channel]`,
/// so that each tap is one multiply-add over `ROWS * 3` contiguous values (vectorisable, like
/// the vertical pass); per value the arithmetic is Pillow's.
#[inline(always)]
fn horizontal_impl(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, t: &Taps) -> Vec<u8> {
    const L: usize = ROWS * 3;
    let out_w = t.start.len();
    let n_rows = rows.len();
    let mut out = vec![0u8; n_rows * out_w * 3];
    let mut block = vec![0u8; src_w * L];
    for b0 in (0..n_rows).step_by(ROWS) {
        let nr = ROWS.min(n_rows - b0);
        for ri in 0..nr {
            let r = rows.start + b0 + ri;
            let line = &src[r * src_w * 3..(r + 1) * src_w * 3];
            for (x, px) in line.chunks_exact(3).enumerate() {
                block[x * L + ri * 3..x * L + ri * 3 + 3].copy_from_slice(px);
            }
        }
        for x in 0..out_w {
            let k = &t.taps[x * t.ksize..x * t.ksize + t.len[x]];
            let cols = &block[t.start[x] * L..(t.start[x] + t.len[x]) * L];
            let mut acc = [HALF; L];
            // Wrapping ops only so that overflow checks (test builds) do not block
            // vectorisation: |sum| < 255 * 1.3 * 2^22 < 2^31, nothing wraps.
            for (col, &w) in cols.chunks_exact(L).zip(k) {
                for (a, &p) in acc.iter_mut().zip(col) {
                    *a = a.wrapping_add((p as i32).wrapping_mul(w));
                }
            }
            for ri in 0..nr {
                let o = ((b0 + ri) * out_w + x) * 3;
                out[o] = clip8(acc[ri * 3]);
                out[o + 1] = clip8(acc[ri * 3 + 1]);
                out[o + 2] = clip8(acc[ri * 3 + 2]);
            }
        }
    }
    out
}

/// Vertical pass over a `width`-wide RGB buffer whose first row is source row `row0`.
#[inline(always)]
fn vertical_impl(src: &[u8], width: usize, row0: usize, t: &Taps) -> Vec<u8> {
    let stride = width * 3;
    let out_h = t.start.len();
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
        acc.fill(HALF);
        let k = &t.taps[y * t.ksize..y * t.ksize + t.len[y]];
        for (j, &w) in k.iter().enumerate() {
            let r = t.start[y] + j - row0;
            for (a, &p) in acc.iter_mut().zip(&src[r * stride..(r + 1) * stride]) {
                *a = a.wrapping_add((p as i32).wrapping_mul(w));
            }
        }
        for (o, &a) in dst.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

// The same integer code compiled for AVX2 where the CPU has it (the vertical pass then runs 8
// lanes wide); results are identical by construction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_avx2(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, t: &Taps) -> Vec<u8> {
    horizontal_impl(src, src_w, rows, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_avx2(src: &[u8], width: usize, row0: usize, t: &Taps) -> Vec<u8> {
    vertical_impl(src, width, row0, t)
}

fn horizontal(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, t: &Taps) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { horizontal_avx2(src, src_w, rows, t) };
    }
    horizontal_impl(src, src_w, rows, t)
}

fn vertical(src: &[u8], width: usize, row0: usize, t: &Taps) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { vertical_avx2(src, width, row0, t) };
    }
    vertical_impl(src, width, row0, t)
}

/// Resizes `src` to `width` x `height` exactly as Pillow's `Image.resize(..., resample)` does for
/// an RGB image. Both sizes must be positive.
///
/// Pass order is Pillow 13's: vertical first when the height shrinks by more than twice as many
/// pixels as the width (`in_h - out_h > 2 * (in_w - out_w)`), else horizontal first (Pillow < 13
/// always went horizontal first; the two differ by a level here and there).
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Resample) -> RgbImage {
    resize_window(src, width, height, filter, (0, 0, width, height))
}

/// `resize(src, width, height, filter)` cropped to `window` = (left, top, w, h), computing only
/// the pixels of the window (a resize followed by a center crop costs the crop's pixels only).
/// The window must lie inside `width` x `height`.
pub fn resize_window(
    src: &RgbImage,
    width: u32,
    height: u32,
    filter: Resample,
    window: (u32, u32, u32, u32),
) -> RgbImage {
    let (x0, y0, w, h) = window;
    assert!(width > 0 && height > 0, "resize to an empty image");
    assert!(
        x0 + w <= width && y0 + h <= height && w > 0 && h > 0,
        "window outside the image"
    );
    let (in_w, in_h) = src.dimensions();
    let full = (x0, y0, w, h) == (0, 0, width, height);
    if (in_w, in_h) == (width, height) || filter == Resample::Nearest {
        let out = if (in_w, in_h) == (width, height) {
            src.clone()
        } else {
            nearest(src, width, height)
        };
        return if full {
            out
        } else {
            ::image::imageops::crop_imm(&out, x0, y0, w, h).to_image()
        };
    }
    let (in_w, in_h, out_w, out_h) = (
        in_w as usize,
        in_h as usize,
        width as usize,
        height as usize,
    );
    let (x0, y0, w, h) = (x0 as usize, y0 as usize, w as usize, h as usize);
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    let dh = in_h as i64 - out_h as i64;
    let dw = in_w as i64 - out_w as i64;
    let vertical_first = dh > 0 && dh > 2 * dw;
    let raw = src.as_raw();
    let hor = || taps(in_w, out_w, filter).window(x0..x0 + w);
    let vert = || taps(in_h, out_h, filter).window(y0..y0 + h);
    let out = if vertical_first || !need_h {
        // Vertical pass first (or alone) over full source rows.
        let tmp = vertical(raw, in_w, 0, &vert());
        if need_h {
            horizontal(&tmp, in_w, 0..h, &hor())
        } else if w == in_w {
            tmp
        } else {
            tmp.chunks_exact(in_w * 3)
                .flat_map(|row| &row[x0 * 3..(x0 + w) * 3])
                .copied()
                .collect()
        }
    } else if need_v {
        let vert = vert();
        // Only the source rows the vertical pass reads.
        let first = vert.start[0];
        let last = vert.start[h - 1] + vert.len[h - 1];
        let tmp = horizontal(raw, in_w, first..last, &hor());
        vertical(&tmp, w, first, &vert)
    } else {
        horizontal(raw, in_w, y0..y0 + h, &hor())
    };
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer size")
}

/// Pillow's NEAREST resize: an affine map sampling the source at the output pixel centres.
fn nearest(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let sx = in_w as f64 / width as f64;
    let sy = in_h as f64 / height as f64;
    let xs: Vec<u32> = (0..width)
        .map(|x| (((x as f64 + 0.5) * sx) as u32).min(in_w - 1))
        .collect();
    RgbImage::from_fn(width, height, |x, y| {
        let yy = (((y as f64 + 0.5) * sy) as u32).min(in_h - 1);
        *src.get_pixel(xs[x as usize], yy)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_equals_resize_then_crop() {
        let img = RgbImage::from_fn(61, 47, |x, y| {
            ::image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
        });
        for (w, h) in [
            (40, 30),
            (90, 20),
            (20, 90),
            (61, 30),
            (40, 47),
            (61, 47),
            (100, 80),
        ] {
            for f in [Resample::Bicubic, Resample::Nearest, Resample::Lanczos] {
                let full = resize(&img, w, h, f);
                for win in [
                    (0, 0, w, h),
                    (3, 2, w - 5, h - 4),
                    (w / 2, h / 3, w / 2, h / 2),
                    (0, 1, w, h - 1),
                ] {
                    let got = resize_window(&img, w, h, f, win);
                    let want =
                        ::image::imageops::crop_imm(&full, win.0, win.1, win.2, win.3).to_image();
                    assert_eq!(got, want, "{w}x{h} {f:?} {win:?}");
                }
            }
        }
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for (i, o) in [(640, 448), (17, 32), (333, 32), (32, 32 * 7)] {
            let t = taps(i, o, Resample::Bicubic);
            for x in 0..o {
                let s: i64 = t.taps[x * t.ksize..][..t.len[x]]
                    .iter()
                    .map(|&v| v as i64)
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= t.len[x] as i64,
                    "{i}->{o} at {x}: {s}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, ::image::Rgb([200, 17, 0]));
        for f in [
            Resample::Bicubic,
            Resample::Bilinear,
            Resample::Lanczos,
            Resample::Box,
            Resample::Hamming,
            Resample::Nearest,
        ] {
            for (w, h) in [(11, 5), (80, 60), (37, 9), (5, 23)] {
                let out = resize(&img, w, h, f);
                assert!(out.pixels().all(|p| p.0 == [200, 17, 0]), "{f:?} {w}x{h}");
            }
        }
    }
}
