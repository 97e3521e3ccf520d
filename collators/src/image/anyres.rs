//! The anyres ("any resolution") tiling shared by LLaVA-NeXT and LLaVA-OneVision:
//! `select_best_resolution` and `get_patch_output_size` of
//! `transformers/image_processing_utils.py`, `divide_to_patches` of
//! `transformers/image_transforms.py`, and `get_image_patches` / `_pad_for_patching` /
//! `_pad_for_batching` of `transformers/models/llava_next/image_processing_pil_llava_next.py`
//! (OneVision's file has the same code).

use ::image::RgbImage;
use lmms_core::{Error, Result};

use super::PixelBatch;
use super::base::BaseImageProcessor;
use super::config::Size;
use super::resample::resize;
use super::transforms::paste;

/// The pinpoint (height, width) that keeps the most of the image's resolution, ties broken by
/// the least wasted area (HF's `select_best_resolution`; `orig` is (height, width)).
/// `None` only when `pinpoints` is empty.
pub fn select_best_resolution(
    orig: (usize, usize),
    pinpoints: &[[usize; 2]],
) -> Option<(usize, usize)> {
    if pinpoints.is_empty() {
        return None;
    }
    let [h, w] = lmms_core::vision::anyres::select_best_resolution(orig, pinpoints);
    Some((h, w))
}

/// The size (height, width) an image of size `orig` is resized to inside `target`, keeping its
/// aspect ratio (HF's `get_patch_output_size`).
pub fn patch_output_size(orig: (usize, usize), target: (usize, usize)) -> (usize, usize) {
    let (oh, ow) = orig;
    let (th, tw) = target;
    let scale_w = tw as f64 / ow as f64;
    let scale_h = th as f64 / oh as f64;
    if scale_w < scale_h {
        (((oh as f64 * scale_w).ceil() as usize).min(th), tw)
    } else {
        (th, ((ow as f64 * scale_h).ceil() as usize).min(tw))
    }
}

/// One image after anyres preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresImage {
    /// `[num_tiles, 3, H, W]`: the whole image squashed to one tile, then the grid tiles
    /// row-major.
    pub pixel_values: PixelBatch,
    /// The original (height, width): HF's `image_sizes` entry.
    pub image_size: (usize, usize),
}

/// A batch of anyres images, as HF returns it with `return_tensors`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresBatch {
    /// `[N, max_tiles, 3, H, W]`; images with fewer tiles are zero-padded at the end.
    pub pixel_values: PixelBatch,
    /// Original (height, width) per image (`image_sizes`).
    pub image_sizes: Vec<(usize, usize)>,
    /// Real tiles per image (the rest is padding).
    pub num_tiles: Vec<usize>,
}

impl AnyresBatch {
    /// `image_sizes` as the int64 `[N, 2]` tensor data HF returns.
    pub fn image_sizes_i64(&self) -> Vec<i64> {
        self.image_sizes
            .iter()
            .flat_map(|&(h, w)| [h as i64, w as i64])
            .collect()
    }
}

/// The anyres pipeline shared by the LLaVA-NeXT and OneVision processors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Anyres<'a> {
    pub base: &'a BaseImageProcessor,
    pub pinpoints: &'a [[usize; 2]],
    pub do_pad: bool,
}

impl Anyres<'_> {
    /// The (height, width) of every output tile.
    pub fn tile_size(&self) -> (usize, usize) {
        let p = self.patch_size();
        self.base.output_size(p, p)
    }

    /// The pinpoint (height, width) chosen for an image of original size (height, width).
    pub fn best_resolution(&self, orig: (usize, usize)) -> (usize, usize) {
        select_best_resolution(orig, self.pinpoints).expect("pinpoints are validated non-empty")
    }

    /// Tiles (base tile included) of a tiled image of original size (height, width): HF's
    /// `image_size_to_num_patches`.
    pub fn num_tiles(&self, orig: (usize, usize)) -> usize {
        lmms_core::vision::anyres::num_tiles(orig, self.pinpoints, self.patch_size())
    }

    /// One image -> `[num_tiles, 3, H, W]` and its original size.
    pub fn process(&self, img: &RgbImage) -> Result<AnyresImage> {
        let tiles = self.tiles(img)?;
        self.process_tiles(&tiles, (img.height() as usize, img.width() as usize))
    }

    /// Images -> `pixel_values` `[N, max_tiles, 3, H, W]` and `image_sizes`.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<AnyresBatch> {
        self.stack(
            images
                .iter()
                .map(|i| self.process(i))
                .collect::<Result<Vec<_>>>()?,
        )
    }

    /// [`stack`] with this processor's `do_pad` and tile size.
    pub fn stack(&self, items: Vec<AnyresImage>) -> Result<AnyresBatch> {
        stack(items, self.do_pad, self.tile_size())
    }

    /// The side of the square grid tiles: `crop_size.height`, else `size.height`, else the
    /// shortest edge.
    pub fn patch_size(&self) -> usize {
        if let Some((h, _)) = self.base.crop_size {
            return h;
        }
        match self.base.size {
            Size::HeightWidth { height, .. } => height,
            Size::ShortestEdge(s) => s,
        }
    }

    /// The 8-bit tiles of one image, before the per-tile pipeline: the squashed whole image,
    /// then the grid tiles of the image resized into its best pinpoint and centre-padded with 0.
    pub fn tiles(&self, img: &RgbImage) -> Result<Vec<RgbImage>> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::Unsupported(format!(
                "cannot preprocess an empty {w}x{h} image"
            )));
        }
        let orig = (h as usize, w as usize);
        let best = select_best_resolution(orig, self.pinpoints)
            .ok_or_else(|| Error::Unsupported("no image_grid_pinpoints".into()))?;
        let (nh, nw) = patch_output_size(orig, best);
        let resized = resize(img, nw as u32, nh as u32, self.base.resample);
        let (th, tw) = best;
        let padded = paste(&resized, th, tw, (th - nh) / 2, (tw - nw) / 2, [0, 0, 0]);
        let p = self.patch_size();
        let (sh, sw) = self.base.size.as_tuple();
        let mut tiles = vec![resize(img, sw as u32, sh as u32, self.base.resample)];
        for y in (0..th).step_by(p) {
            for x in (0..tw).step_by(p) {
                let ph = p.min(th - y) as u32;
                let pw = p.min(tw - x) as u32;
                tiles.push(
                    ::image::imageops::crop_imm(&padded, x as u32, y as u32, pw, ph).to_image(),
                );
            }
        }
        Ok(tiles)
    }

    /// Runs the per-tile pipeline on `tiles`.
    pub fn process_tiles(
        &self,
        tiles: &[RgbImage],
        image_size: (usize, usize),
    ) -> Result<AnyresImage> {
        let pixel_values = self.base.preprocess(tiles)?;
        Ok(AnyresImage {
            pixel_values,
            image_size,
        })
    }
}

/// Stacks per-image results into `[N, max_tiles, 3, H, W]` (HF's `_pad_for_batching` when
/// `do_pad`; without it the tile counts must agree).
pub(crate) fn stack(
    items: Vec<AnyresImage>,
    do_pad: bool,
    tile_hw: (usize, usize),
) -> Result<AnyresBatch> {
    let num_tiles: Vec<usize> = items.iter().map(|i| i.pixel_values.shape[0]).collect();
    let max_tiles = num_tiles.iter().copied().max().unwrap_or(0);
    if !do_pad && num_tiles.iter().any(|&n| n != max_tiles) {
        return Err(Error::Batch(format!(
            "images have different tile counts {num_tiles:?} and `do_pad` is false"
        )));
    }
    let (h, w) = items
        .first()
        .map(|i| (i.pixel_values.shape[2], i.pixel_values.shape[3]))
        .unwrap_or(tile_hw);
    let per_tile = 3 * h * w;
    let mut data = Vec::with_capacity(items.len() * max_tiles * per_tile);
    let mut image_sizes = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let s = &item.pixel_values.shape;
        if (s[2], s[3]) != (h, w) {
            return Err(Error::Batch(format!(
                "image {i} has {}x{} tiles, image 0 {h}x{w}",
                s[2], s[3]
            )));
        }
        data.extend_from_slice(&item.pixel_values.data);
        data.resize(data.len() + (max_tiles - s[0]) * per_tile, 0.0);
        image_sizes.push(item.image_size);
    }
    Ok(AnyresBatch {
        pixel_values: PixelBatch::new(data, vec![image_sizes.len(), max_tiles, 3, h, w]),
        image_sizes,
        num_tiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_resolution_examples() {
        let next = [[32, 64], [64, 32], [64, 64]];
        // meta.json of tests/fixtures/llava-next
        assert_eq!(select_best_resolution((30, 70), &next), Some((32, 64)));
        assert_eq!(select_best_resolution((90, 50), &next), Some((64, 64)));
        assert_eq!(select_best_resolution((1, 1), &next), Some((32, 64)));
        assert_eq!(select_best_resolution((5, 5), &[]), None);
    }

    #[test]
    fn patch_output_size_examples() {
        assert_eq!(patch_output_size((30, 70), (32, 64)), (28, 64));
        assert_eq!(patch_output_size((90, 50), (64, 64)), (64, 36));
        assert_eq!(patch_output_size((480, 640), (672, 672)), (504, 672));
        assert_eq!(patch_output_size((10, 10), (64, 64)), (64, 64));
    }
}
