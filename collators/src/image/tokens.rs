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
use lmms_core::vision::anyres;

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

/// `_get_unpadded_features` of LLaVA-NeXT: the feature grid of the tiles (`patches_* x scale_*`)
/// with the rows or columns that only cover padding removed. Returns (features, rows): each row
/// gets one `image_newline` token.
pub fn unpadded_features(
    orig: (usize, usize),
    patches: (usize, usize),
    scale: (usize, usize),
) -> (usize, usize) {
    let current = (patches.0 * scale.0, patches.1 * scale.1);
    let (rows, cols) = anyres::unpad_ranges(orig, current);
    (rows.len() * cols.len(), rows.len())
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
        if let Some((h, w)) = anyres::anyres_max_size(rows, cols, self.max_num_patches, side) {
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
