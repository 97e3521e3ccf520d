//! Host-side index arithmetic of Qwen2-VL / Qwen2.5-VL (no tensors): the LLM's 3D M-RoPE
//! positions (`Qwen2VLModel.get_rope_index` / `get_vision_position_ids`, and the 2.5 variant
//! with `second_per_grid_ts`), and for the vision tower the per-patch (row, column) rotary
//! positions, the per-frame attention segments and 2.5's window reordering
//! (transformers' `vision_utils.py`: `get_vision_position_ids`, `get_vision_cu_seqlens`,
//! `get_vision_window_index`).

use lmms_core::error::{Error, Result};

/// One image's or video's patch grid `[t, h, w]` (`image_grid_thw` / `video_grid_thw` rows).
pub type Grid = [usize; 3];

/// What [`rope_index`] needs from the config.
#[derive(Debug, Clone, Copy)]
pub struct RopeIndexConfig {
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub spatial_merge_size: usize,
    /// 2.5 only: temporal step per second (`tokens_per_second`); `None` = 2.0 (step 1).
    pub tokens_per_second: Option<f64>,
}

/// The three position axes `[3][B * T]` (row-major `[B, T]` each).
pub type Positions3 = [Vec<i64>; 3];

/// HF's `get_rope_index` (transformers 5.23). Per row, over the tokens the attention mask keeps:
/// runs of text advance one position per token on all three axes; a run of image (video)
/// placeholders takes the next image (video) grid, whose merged cell `(ti, i, j)` sits at
/// `(p + floor(ti * interval), p + i, p + j)`, after which `p` grows by
/// `max(h, w) / merge`. Padding keeps position 0. `interval` is 1 except for 2.5 videos:
/// `tokens_per_second * second_per_grid_ts[v]` (f32, truncated as torch's `.long()` does).
#[allow(clippy::too_many_arguments)]
pub fn rope_index(
    ids: &[i64],
    mask: Option<&[i64]>,
    batch: usize,
    seq: usize,
    images: &[Grid],
    videos: &[Grid],
    second_per_grid_ts: Option<&[f32]>,
    c: &RopeIndexConfig,
) -> Result<Positions3> {
    let mut out: Positions3 = [
        vec![0; batch * seq],
        vec![0; batch * seq],
        vec![0; batch * seq],
    ];
    let (mut next_image, mut next_video) = (0usize, 0usize);
    let m = c.spatial_merge_size;
    let kind = |id: i64| {
        if id == c.image_token_id {
            1
        } else if id == c.video_token_id {
            2
        } else {
            0
        }
    };
    for b in 0..batch {
        let kept: Vec<usize> = (0..seq)
            .filter(|&t| mask.is_none_or(|m| m[b * seq + t] != 0))
            .map(|t| b * seq + t)
            .collect();
        let mut p: i64 = 0;
        let mut k = 0;
        while k < kept.len() {
            let ty = kind(ids[kept[k]]);
            let mut end = k;
            while end < kept.len() && kind(ids[kept[end]]) == ty {
                end += 1;
            }
            if ty == 0 {
                for (n, &at) in kept[k..end].iter().enumerate() {
                    for axis in out.iter_mut() {
                        axis[at] = p + n as i64;
                    }
                }
                p += (end - k) as i64;
            } else {
                let (what, grids, next) = if ty == 1 {
                    ("image", images, &mut next_image)
                } else {
                    ("video", videos, &mut next_video)
                };
                let [gt, gh, gw] = *grids.get(*next).ok_or_else(|| {
                    Error::Batch(format!(
                        "row {b} has more {what} placeholder runs than {what}_grid_thw has rows ({})",
                        grids.len()
                    ))
                })?;
                let interval = match (ty, c.tokens_per_second) {
                    (2, Some(tps)) => {
                        let s = second_per_grid_ts
                            .map_or(1.0, |s| s.get(*next).copied().unwrap_or(1.0));
                        Some(tps as f32 * s)
                    }
                    _ => None,
                };
                *next += 1;
                let (lh, lw) = (gh / m, gw / m);
                let count = gt * lh * lw;
                if end - k != count {
                    return Err(Error::Batch(format!(
                        "row {b}: a run of {} {what} placeholders but its grid {:?} gives {count} tokens",
                        end - k,
                        [gt, gh, gw]
                    )));
                }
                let mut n = k;
                for ti in 0..gt {
                    let tpos = match interval {
                        Some(iv) => (ti as f32 * iv) as i64,
                        None => ti as i64,
                    };
                    for i in 0..lh {
                        for j in 0..lw {
                            let at = kept[n];
                            out[0][at] = p + tpos;
                            out[1][at] = p + i as i64;
                            out[2][at] = p + j as i64;
                            n += 1;
                        }
                    }
                }
                p += (gh.max(gw) / m) as i64;
            }
            k = end;
        }
    }
    Ok(out)
}

/// `(row, column)` of every patch in the order the image processor writes patches: merge
/// blocks row-major, the `merge x merge` patches of a block row-major inside it; repeated for
/// each of the `t` temporal slices.
pub fn patch_positions(grids: &[Grid], merge: usize) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        let mut one = Vec::with_capacity(h * w);
        for bi in 0..h / merge {
            for bj in 0..w / merge {
                for ii in 0..merge {
                    for jj in 0..merge {
                        one.push(((bi * merge + ii) as i64, (bj * merge + jj) as i64));
                    }
                }
            }
        }
        for _ in 0..t {
            out.extend_from_slice(&one);
        }
    }
    out
}

/// Lengths of the attention segments of the vision tower: every temporal slice of every grid
/// attends only to itself (`cu_seqlens`).
pub fn frame_segments(grids: &[Grid]) -> Vec<usize> {
    grids
        .iter()
        .flat_map(|&[t, h, w]| std::iter::repeat_n(h * w, t))
        .collect()
}

/// Qwen2.5-VL's window reordering: the order of merge units (`merge x merge` patches) that puts
/// each window's units together, and the window lengths in patches (empty windows dropped, as
/// `unique_consecutive` on the cumulative lengths does). Windows are `window` merged cells on a
/// side, laid over each temporal slice from the top-left; edge windows are smaller.
pub fn window_index(grids: &[Grid], merge: usize, window: usize) -> (Vec<usize>, Vec<usize>) {
    let mut index = Vec::new();
    let mut lengths = Vec::new();
    let mut offset = 0;
    let window = window.max(1);
    for &[t, h, w] in grids {
        let (lh, lw) = (h / merge, w / merge);
        // HF pads by `window - n % window`: a whole extra (empty) window when n divides evenly.
        let nh = (lh + window - lh % window) / window;
        let nw = (lw + window - lw % window) / window;
        for ti in 0..t {
            for wh in 0..nh {
                for ww in 0..nw {
                    let mut n = 0;
                    for i in wh * window..((wh + 1) * window).min(lh) {
                        for j in ww * window..((ww + 1) * window).min(lw) {
                            index.push(offset + (ti * lh + i) * lw + j);
                            n += 1;
                        }
                    }
                    if n > 0 {
                        lengths.push(n * merge * merge);
                    }
                }
            }
        }
        offset += t * lh * lw;
    }
    (index, lengths)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: RopeIndexConfig = RopeIndexConfig {
        image_token_id: 9,
        video_token_id: 8,
        spatial_merge_size: 2,
        tokens_per_second: None,
    };

    #[test]
    fn text_image_text_with_left_padding() {
        // pad, text, text, 4 image tokens (grid 1x4x4 -> 2x2), text
        let ids = [0, 1, 1, 9, 9, 9, 9, 1];
        let mask = [0, 1, 1, 1, 1, 1, 1, 1];
        let p = rope_index(&ids, Some(&mask), 1, 8, &[[1, 4, 4]], &[], None, &C).unwrap();
        assert_eq!(p[0], vec![0, 0, 1, 2, 2, 2, 2, 4]);
        assert_eq!(p[1], vec![0, 0, 1, 2, 2, 3, 3, 4]);
        assert_eq!(p[2], vec![0, 0, 1, 2, 3, 2, 3, 4]);
    }

    #[test]
    fn timed_video_positions() {
        let c = RopeIndexConfig {
            tokens_per_second: Some(2.0),
            ..C
        };
        // a video of 3 temporal slices of one merged cell each
        let ids = [8, 8, 8, 1];
        let p = rope_index(&ids, None, 1, 4, &[], &[[3, 2, 2]], Some(&[1.3]), &c).unwrap();
        assert_eq!(p[0], vec![0, 2, 5, 1]);
        assert_eq!(p[1], vec![0, 0, 0, 1]);
        let err = rope_index(&ids, None, 1, 4, &[], &[], None, &c).unwrap_err();
        assert!(err.to_string().contains("video_grid_thw"), "{err}");
    }

    #[test]
    fn windows_cover_every_unit_once() {
        let (index, lengths) = window_index(&[[1, 6, 10]], 2, 2);
        // 3x5 merged cells: windows of 2x2, 2x2, 2x1, 1x2, 1x2, 1x1
        assert_eq!(lengths, vec![16, 16, 8, 8, 8, 4]);
        assert_eq!(&index[..4], &[0, 1, 5, 6]);
        let mut sorted = index.clone();
        sorted.sort();
        assert_eq!(sorted, (0..15).collect::<Vec<_>>());
        assert_eq!(
            patch_positions(&[[1, 2, 4]], 2)[..5],
            [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2)]
        );
        assert_eq!(frame_segments(&[[2, 2, 4], [1, 4, 4]]), vec![8, 8, 16]);
    }
}
