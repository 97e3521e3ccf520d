//! Which decoded frames a video of `total` frames contributes when `num_frames` are asked.

/// How [`sample_indices`] spreads `num_frames` over a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// transformers' `default_sample_indices_fn` (what `apply_chat_template(num_frames=N)` and
    /// the video processors' `sample_frames` do): `np.arange(N) * total // N`, i.e.
    /// `floor(i * total / N)`: evenly spaced, starting at the first frame, never reaching the
    /// last one.
    #[default]
    Uniform,
    /// `np.linspace(0, total - 1, N).astype(int)`: the first and the last frame and evenly
    /// spaced ones between (rounded down). The example sampler of transformers' `load_video`
    /// docs, and what the original LLaVA-NeXT / LLaVA-OneVision training code does.
    Linspace,
}

/// The indices (into the decoded frames, in presentation order) of `num_frames` frames of a
/// clip of `total` frames, ascending. `None` when `num_frames` is 0 or more than `total`
/// (transformers raises then; frames are never repeated to make up the count).
pub fn sample_indices(total: usize, num_frames: usize, sampling: Sampling) -> Option<Vec<usize>> {
    if num_frames == 0 || num_frames > total {
        return None;
    }
    Some(match sampling {
        Sampling::Uniform => (0..num_frames).map(|i| i * total / num_frames).collect(),
        Sampling::Linspace if num_frames == 1 => vec![0],
        Sampling::Linspace => {
            // NumPy: step = (stop - start) / (num - 1); y = arange(num) * step; y[-1] = stop.
            let step = (total - 1) as f64 / (num_frames - 1) as f64;
            let mut v: Vec<usize> = (0..num_frames)
                .map(|i| (i as f64 * step) as usize)
                .collect();
            v[num_frames - 1] = total - 1;
            v
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_hf_default_sample_indices_fn() {
        // np.arange(n) * total // n
        assert_eq!(
            sample_indices(24, 8, Sampling::Uniform).unwrap(),
            [0, 3, 6, 9, 12, 15, 18, 21]
        );
        assert_eq!(
            sample_indices(24, 5, Sampling::Uniform).unwrap(),
            [0, 4, 9, 14, 19]
        );
        assert_eq!(
            sample_indices(10, 10, Sampling::Uniform).unwrap(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(sample_indices(7, 1, Sampling::Uniform).unwrap(), [0]);
    }

    #[test]
    fn linspace_is_numpy_linspace_truncated() {
        assert_eq!(
            sample_indices(24, 8, Sampling::Linspace).unwrap(),
            [0, 3, 6, 9, 13, 16, 19, 23]
        );
        assert_eq!(
            sample_indices(24, 5, Sampling::Linspace).unwrap(),
            [0, 5, 11, 17, 23]
        );
        assert_eq!(sample_indices(1, 1, Sampling::Linspace).unwrap(), [0]);
        assert_eq!(sample_indices(2, 2, Sampling::Linspace).unwrap(), [0, 1]);
        // np.linspace(0, 299, 32).astype(int)[:6] and the end
        let v = sample_indices(300, 32, Sampling::Linspace).unwrap();
        assert_eq!(v[..6], [0, 9, 19, 28, 38, 48]);
        assert_eq!(v[31], 299);
    }

    #[test]
    fn too_many_or_none_asked() {
        for s in [Sampling::Uniform, Sampling::Linspace] {
            assert!(sample_indices(4, 5, s).is_none());
            assert!(sample_indices(4, 0, s).is_none());
            assert!(sample_indices(0, 1, s).is_none());
        }
    }
}
