//! The image operations of `transformers/image_transforms.py` (`convert_to_rgb`,
//! `get_resize_output_image_size`, `center_crop`, `rescale`, `normalize`) and the padding of
//! `transformers/image_processing_backends.py` (`PilBackend`), on 8-bit RGB images, with the same
//! integer and float32 arithmetic so that the outputs are bit-identical.

use ::image::{DynamicImage, Rgb, RgbImage};

/// `convert_to_rgb` as HF does it for a PIL image: grayscale is replicated, an alpha channel is
/// composited onto white with Pillow's `alpha_composite` integer arithmetic (exact for every
/// colour/alpha pair), 16-bit channels keep their high byte (Pillow's 16-bit RGB(A) PNG decoding;
/// 16-bit grayscale goes through the same path, where Pillow would clip instead), float
/// channels are scaled by 255 and rounded.
pub fn convert_to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(l) => RgbImage::from_fn(l.width(), l.height(), |x, y| {
            let v = l.get_pixel(x, y).0[0];
            Rgb([v, v, v])
        }),
        DynamicImage::ImageLumaA8(la) => RgbImage::from_fn(la.width(), la.height(), |x, y| {
            let [v, a] = la.get_pixel(x, y).0;
            let c = over_white(v, a);
            Rgb([c, c, c])
        }),
        DynamicImage::ImageRgba8(rgba) => RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            Rgb([over_white(r, a), over_white(g, a), over_white(b, a)])
        }),
        DynamicImage::ImageRgb16(rgb) => RgbImage::from_fn(rgb.width(), rgb.height(), |x, y| {
            let p = rgb.get_pixel(x, y).0;
            Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        DynamicImage::ImageRgba16(rgba) => {
            RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                let p = rgba.get_pixel(x, y).0.map(|v| (v >> 8) as u8);
                Rgb([
                    over_white(p[0], p[3]),
                    over_white(p[1], p[3]),
                    over_white(p[2], p[3]),
                ])
            })
        }
        DynamicImage::ImageLuma16(l) => RgbImage::from_fn(l.width(), l.height(), |x, y| {
            let v = (l.get_pixel(x, y).0[0] >> 8) as u8;
            Rgb([v, v, v])
        }),
        DynamicImage::ImageLumaA16(la) => RgbImage::from_fn(la.width(), la.height(), |x, y| {
            let [v, a] = la.get_pixel(x, y).0.map(|v| (v >> 8) as u8);
            let c = over_white(v, a);
            Rgb([c, c, c])
        }),
        other => {
            if other.color().has_alpha() {
                convert_to_rgb(DynamicImage::ImageRgba8(other.to_rgba8()))
            } else {
                other.to_rgb8()
            }
        }
    }
}

/// One channel of Pillow's `alpha_composite(white, (c, a))`: with an opaque background the
/// source weight is `a * 128` in 7-bit fixed point and the division by 255 is Pillow's
/// shift-based one, rounded.
#[inline]
fn over_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    let (c, a) = (c as u32, a as u32);
    let t = c * (a << 7) + 255 * ((255 - a) << 7) + (0x80 << 7);
    ((((t >> 8) + t) >> 8) >> 7) as u8
}

/// `get_resize_output_image_size(image, size, default_to_square=False)`: the shorter edge becomes
/// `shortest_edge`, the longer one `int(shortest_edge * long / short)`. Returns (height, width).
pub fn shortest_edge_size(height: usize, width: usize, shortest_edge: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((shortest_edge * long) as f64 / short as f64) as usize;
    if width <= height {
        (new_long, shortest_edge)
    } else {
        (shortest_edge, new_long)
    }
}

/// `center_crop` of `image_transforms.py`: the crop window starts at `(orig - crop) // 2`; an image
/// smaller than the crop is first zero-padded (the extra pixel of an odd padding at the end).
pub fn center_crop(img: &RgbImage, crop_h: usize, crop_w: usize) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (ch, cw) = (crop_h as i64, crop_w as i64);
    let top = (h - ch).div_euclid(2);
    let left = (w - cw).div_euclid(2);
    if top >= 0 && left >= 0 && top + ch <= h && left + cw <= w {
        return ::image::imageops::crop_imm(img, left as u32, top as u32, cw as u32, ch as u32)
            .to_image();
    }
    let new_h = ch.max(h);
    let new_w = cw.max(w);
    // Position of the image inside the padded canvas, then of the crop window in that canvas.
    let top_pad = (new_h - h + 1) / 2;
    let left_pad = (new_w - w + 1) / 2;
    let (top, left) = ((top + top_pad).max(0), (left + left_pad).max(0));
    let out_h = (top + ch).min(new_h) - top;
    let out_w = (left + cw).min(new_w) - left;
    RgbImage::from_fn(out_w as u32, out_h as u32, |x, y| {
        let sy = y as i64 + top - top_pad;
        let sx = x as i64 + left - left_pad;
        if (0..h).contains(&sy) && (0..w).contains(&sx) {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            Rgb([0, 0, 0])
        }
    })
}

/// Places `img` at (`top`, `left`) on a `height` x `width` canvas filled with `fill`.
pub fn paste(
    img: &RgbImage,
    height: usize,
    width: usize,
    top: usize,
    left: usize,
    fill: [u8; 3],
) -> RgbImage {
    let mut out = RgbImage::from_pixel(width as u32, height as u32, Rgb(fill));
    ::image::imageops::replace(&mut out, img, left as i64, top as i64);
    out
}

/// Rescale and normalisation as `PilBackend` does them, written channel-first into `out`:
/// `x = float32(u8 * rescale_factor)` computed in float64 (`rescale`), then
/// `(x - float32(mean)) / float32(std)` in float32 (`normalize`).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Normalize {
    /// Appends the `[3, H, W]` float32 values of `img` to `out`.
    pub fn write_chw(&self, img: &RgbImage, out: &mut Vec<f32>) {
        // Every channel value maps through a 256-entry table: the same float ops per value.
        let luts: [[f32; 256]; 3] = std::array::from_fn(|c| {
            std::array::from_fn(|v| {
                let x = if self.do_rescale {
                    (v as f64 * self.rescale_factor) as f32
                } else {
                    v as f32
                };
                if self.do_normalize {
                    (x - self.mean[c] as f32) / self.std[c] as f32
                } else {
                    x
                }
            })
        });
        let raw = img.as_raw();
        let n = raw.len() / 3;
        out.reserve(n * 3);
        for (c, lut) in luts.iter().enumerate() {
            out.extend(raw[c..].iter().step_by(3).map(|&v| lut[v as usize]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_over_white_edges() {
        assert_eq!(over_white(10, 0), 255);
        assert_eq!(over_white(10, 255), 10);
        assert_eq!(over_white(0, 128), 127);
    }

    #[test]
    fn shortest_edge_matches_python_int() {
        assert_eq!(shortest_edge_size(480, 640, 336), (336, 448));
        assert_eq!(shortest_edge_size(333, 211, 32), (50, 32));
        assert_eq!(shortest_edge_size(17, 23, 32), (32, 43));
        assert_eq!(shortest_edge_size(50, 50, 7), (7, 7));
    }

    #[test]
    fn center_crop_pads_small_images() {
        let img = RgbImage::from_pixel(3, 2, Rgb([9, 9, 9]));
        let out = center_crop(&img, 5, 4);
        assert_eq!(out.dimensions(), (4, 5));
        // numpy: top_pad = ceil(3/2) = 2, left_pad = ceil(1/2) = 1
        assert_eq!(out.get_pixel(1, 2).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(0, 2).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(3, 3).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(1, 4).0, [0, 0, 0]);
    }
}
