//! How many placeholder tokens one image or video expands to, computed as the HF processors do
//! (`transformers/models/llava/processing_llava.py`,
//! `transformers/models/llava_next/processing_llava_next.py` `_get_number_of_features` /
//! `_get_unpadded_features`, and
//! `transformers/models/llava_onevision/processing_llava_onevision.py`, incl. the
//! `anyres_max_N` reduction and the pooled video frames). A collator must insert exactly this
//! many tokens: the model scatters one feature vector into each.

use lmms_core::{Error, Result};

use super::anyres::select_best_resolution;
use super::config::ProcessorConfig;

/// `vision_feature_select_strategy`: `default` drops the CLS feature of each tile (the HF
/// processors subtract 1 from the count), `full` keeps every feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSelect {
    Default,
    Full,
}

impl FeatureSelect {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "default" => Some(FeatureSelect::Default),
            "full" => Some(FeatureSelect::Full),
            _ => None,
        }
    }

    fn minus(self) -> usize {
        match self {
            FeatureSelect::Default => 1,
            FeatureSelect::Full => 0,
        }
    }

    /// From a processor config; HF treats a missing strategy like `full` (nothing subtracted).
    fn from_processor(cfg: &ProcessorConfig) -> Result<Self> {
        match cfg.vision_feature_select_strategy.as_deref() {
            None => Ok(FeatureSelect::Full),
            Some(s) => FeatureSelect::parse(s).ok_or_else(|| {
                Error::config(
                    &cfg.source,
                    format!(
                        "unknown vision_feature_select_strategy `{s}` (expected default or full)"
                    ),
                )
            }),
        }
    }
}

/// Python's `int(round(x, 7))` for `x >= 0`: values within 5e-8 of an integer snap to it (the
/// rounding exists to absorb float error), everything else truncates.
fn int_round7(x: f64) -> usize {
    let r = x.round();
    if (x - r).abs() < 5e-8 {
        r as usize
    } else {
        x.floor() as usize
    }
}

/// Python's `a // b` on floats (CPython's `float_floor_div`: from `fmod`, not `floor(a / b)`).
fn py_floordiv(a: f64, b: f64) -> f64 {
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

/// `_get_unpadded_features` of LLaVA-NeXT: the feature grid of the tiles (`patches_* x scale_*`)
/// with the rows or columns that only cover padding removed. Returns (features, rows): each row
/// gets one `image_newline` token.
pub fn unpadded_features(
    orig: (usize, usize),
    patches: (usize, usize),
    scale: (usize, usize),
) -> (usize, usize) {
    let (height, width) = (orig.0 as f64, orig.1 as f64);
    let mut cur_h = patches.0 * scale.0;
    let mut cur_w = patches.1 * scale.1;
    let original_aspect = width / height;
    let current_aspect = cur_w as f64 / cur_h as f64;
    if original_aspect > current_aspect {
        let new_h = int_round7(height * (cur_w as f64 / width));
        let pad = cur_h.saturating_sub(new_h) / 2;
        cur_h -= pad * 2;
    } else {
        let new_w = int_round7(width * (cur_h as f64 / height));
        let pad = cur_w.saturating_sub(new_w) / 2;
        cur_w -= pad * 2;
    }
    (cur_h * cur_w, cur_h)
}

/// LLaVA-1.5 / llava-interleave (`LlavaProcessor`): one tile of `tile` (height, width) pixels.
pub fn llava_num_image_tokens(
    tile: (usize, usize),
    patch_size: usize,
    num_additional_image_tokens: usize,
    strategy: FeatureSelect,
) -> usize {
    ((tile.0 / patch_size) * (tile.1 / patch_size) + num_additional_image_tokens)
        .saturating_sub(strategy.minus())
}

/// The processor-level settings of `LlavaNextProcessor` that decide token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextTokens {
    /// The vision tower's patch size (`patch_size`, e.g. 14).
    pub patch_size: usize,
    /// Extra features per tile besides the patches (1 for CLIP's CLS); HF's default is 0.
    pub num_additional_image_tokens: usize,
    pub strategy: FeatureSelect,
}

impl NextTokens {
    /// From the vision config: `has_cls` is true for CLIP towers (one extra feature per tile).
    pub fn from_vision(patch_size: usize, has_cls: bool, strategy: FeatureSelect) -> Self {
        NextTokens {
            patch_size,
            num_additional_image_tokens: usize::from(has_cls),
            strategy,
        }
    }

    /// From `processor_config.json` (`patch_size` is required there).
    pub fn from_processor_config(cfg: &ProcessorConfig) -> Result<Self> {
        let patch_size = cfg
            .patch_size
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::config(&cfg.source, "`patch_size` is missing"))?;
        Ok(NextTokens {
            patch_size,
            num_additional_image_tokens: cfg.num_additional_image_tokens.unwrap_or(0),
            strategy: FeatureSelect::from_processor(cfg)?,
        })
    }

    /// Tokens of one image of original size `orig` (height, width), for tiles of `tile`
    /// (height, width) pixels and the given pinpoints: base tile + unpadded grid + newlines.
    pub fn count(
        &self,
        orig: (usize, usize),
        tile: (usize, usize),
        pinpoints: &[[usize; 2]],
    ) -> Result<usize> {
        let (bh, bw) = select_best_resolution(orig, pinpoints)
            .ok_or_else(|| Error::Unsupported("no image_grid_pinpoints".into()))?;
        check_orig(orig)?;
        let patches = (tile.0 / self.patch_size, tile.1 / self.patch_size);
        let (unpadded, newlines) = unpadded_features(orig, patches, (bh / tile.0, bw / tile.1));
        let base = patches.0 * patches.1 + self.num_additional_image_tokens;
        Ok((unpadded + newlines + base).saturating_sub(self.strategy.minus()))
    }
}

fn check_orig(orig: (usize, usize)) -> Result<()> {
    if orig.0 == 0 || orig.1 == 0 {
        return Err(Error::Unsupported(format!("empty image size {orig:?}")));
    }
    Ok(())
}

/// The processor-level settings of `LlavaOnevisionProcessor` that decide token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnevisionTokens {
    /// Features of one tile (`num_image_tokens`, 729 = 27x27 for SigLIP 384/14).
    pub num_image_tokens: usize,
    pub strategy: FeatureSelect,
    /// N of `vision_aspect_ratio = "anyres_max_N"`.
    pub max_num_patches: usize,
}

impl OnevisionTokens {
    pub fn new(
        num_image_tokens: usize,
        strategy: FeatureSelect,
        vision_aspect_ratio: &str,
    ) -> Result<Self> {
        Ok(OnevisionTokens {
            num_image_tokens,
            strategy,
            max_num_patches: parse_anyres_max(vision_aspect_ratio)
                .ok_or_else(|| Error::Unsupported(bad_aspect(vision_aspect_ratio)))?,
        })
    }

    /// From the vision config: `(image_size / patch_size)^2` features per tile (SigLIP, no CLS).
    pub fn from_vision(
        image_size: usize,
        patch_size: usize,
        strategy: FeatureSelect,
        vision_aspect_ratio: &str,
    ) -> Result<Self> {
        let side = image_size / patch_size.max(1);
        Self::new(side * side, strategy, vision_aspect_ratio)
    }

    /// From `processor_config.json` (`num_image_tokens` is required there;
    /// `vision_aspect_ratio` defaults to `anyres_max_9` as in HF).
    pub fn from_processor_config(cfg: &ProcessorConfig) -> Result<Self> {
        let n = cfg
            .num_image_tokens
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::config(&cfg.source, "`num_image_tokens` is missing"))?;
        let aspect = cfg.vision_aspect_ratio.as_deref().unwrap_or("anyres_max_9");
        let max = parse_anyres_max(aspect)
            .ok_or_else(|| Error::config(&cfg.source, bad_aspect(aspect)))?;
        Ok(OnevisionTokens {
            num_image_tokens: n,
            strategy: FeatureSelect::from_processor(cfg)?,
            max_num_patches: max,
        })
    }

    /// Side of one tile's feature grid: `int(sqrt(num_image_tokens))`.
    pub fn grid_side(&self) -> usize {
        (self.num_image_tokens as f64).sqrt() as usize
    }

    /// Tokens of a single image (anyres) of original size `orig` (height, width): base tile +
    /// unpadded grid (shrunk when it exceeds `anyres_max_N` tiles by more than 1.1x) + newlines.
    pub fn count(
        &self,
        orig: (usize, usize),
        tile: (usize, usize),
        pinpoints: &[[usize; 2]],
    ) -> Result<usize> {
        let (bh, bw) = select_best_resolution(orig, pinpoints)
            .ok_or_else(|| Error::Unsupported("no image_grid_pinpoints".into()))?;
        check_orig(orig)?;
        let side = self.grid_side();
        let (mut unpadded, mut newlines) =
            unpadded_features(orig, (side, side), (bh / tile.0, bw / tile.1));
        let rows = newlines;
        let cols = unpadded / rows.max(1);
        let ratio = ((rows * cols) as f64 / (self.max_num_patches * side * side) as f64).sqrt();
        if ratio > 1.1 {
            let h = py_floordiv(rows as f64, ratio) as usize;
            let w = py_floordiv(cols as f64, ratio) as usize;
            unpadded = h * w;
            newlines = h;
        }
        Ok((unpadded + newlines + self.num_image_tokens).saturating_sub(self.strategy.minus()))
    }

    /// Tokens of each image of a multi-image sample (no anyres: one tile + one newline).
    pub fn count_multi_image(&self) -> usize {
        (self.num_image_tokens + 1).saturating_sub(self.strategy.minus())
    }

    /// Tokens of a video of `num_frames` frames: each frame's grid pooled to `ceil(side / 2)`
    /// per side, plus one newline for the whole video.
    pub fn count_video(&self, num_frames: usize) -> usize {
        let pooled = self.grid_side().div_ceil(2);
        num_frames * pooled * pooled + 1
    }
}

fn parse_anyres_max(s: &str) -> Option<usize> {
    s.strip_prefix("anyres_max_")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

fn bad_aspect(s: &str) -> String {
    format!("vision_aspect_ratio `{s}` is not `anyres_max_N`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round7_and_floordiv_follow_python() {
        assert_eq!(int_round7(2.9999999999), 3);
        assert_eq!(int_round7(2.99), 2);
        assert_eq!(int_round7(3.0000000001), 3);
        assert_eq!(py_floordiv(6.0, 1.3416407864998738), 4.0);
        assert_eq!(py_floordiv(15.0, 1.3416407864998738), 11.0);
        assert_eq!(py_floordiv(1.0, 0.1), 9.0); // Python: 1 // 0.1 == 9.0
    }

    #[test]
    fn fixture_counts_from_meta_json() {
        // tests/fixtures/llava-next/meta.json: 30x70 -> 52, 90x50 -> 56.
        let next = NextTokens::from_vision(8, true, FeatureSelect::Default);
        let pins = [[32, 64], [64, 32], [64, 64]];
        assert_eq!(next.count((30, 70), (32, 32), &pins).unwrap(), 52);
        assert_eq!(next.count((90, 50), (32, 32), &pins).unwrap(), 56);
        // tests/fixtures/llava-onevision/meta.json: 50x110 -> 73, 3 frames -> 28.
        let ov = OnevisionTokens::from_vision(40, 8, FeatureSelect::Full, "anyres_max_2").unwrap();
        let pins: Vec<[usize; 2]> = (1..4)
            .flat_map(|i| (1..4).map(move |j| [40 * i, 40 * j]))
            .collect();
        assert_eq!(ov.count((50, 110), (40, 40), &pins).unwrap(), 73);
        assert_eq!(ov.count_video(3), 28);
        assert_eq!(ov.count_multi_image(), 26);
    }

    #[test]
    fn llava_counts() {
        assert_eq!(
            llava_num_image_tokens((336, 336), 14, 1, FeatureSelect::Default),
            576
        );
        assert_eq!(
            llava_num_image_tokens((384, 384), 14, 0, FeatureSelect::Full),
            729
        );
    }

    #[test]
    fn aspect_ratio_must_be_anyres_max() {
        assert!(OnevisionTokens::new(729, FeatureSelect::Full, "anyres").is_err());
        assert!(OnevisionTokens::new(729, FeatureSelect::Full, "anyres_max_0").is_err());
        assert_eq!(
            OnevisionTokens::new(729, FeatureSelect::Full, "anyres_max_9")
                .unwrap()
                .max_num_patches,
            9
        );
    }
}
