//! Checking that media files exist (and that images decode), in parallel over distinct paths.

use super::MediaCheck;
use lmms_core::data::Sample;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Image,
    Video,
}

fn check_one(path: &Path, kind: Kind, mode: MediaCheck) -> Option<String> {
    let what = match kind {
        Kind::Image => "image",
        Kind::Video => "video",
    };
    if !path.is_file() {
        return Some(format!("{what} file {} not found", path.display()));
    }
    if kind == Kind::Image && mode == MediaCheck::Decode {
        let decoded = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| e.to_string())
            .and_then(|r| r.decode().map_err(|e| e.to_string()));
        if let Err(e) = decoded {
            return Some(format!("image {} cannot be decoded: {e}", path.display()));
        }
    }
    None
}

/// The media of one sample: (images, videos).
pub(super) type Media<'a> = (&'a [PathBuf], &'a [PathBuf]);

pub(super) fn of(sample: &Sample) -> Media<'_> {
    (&sample.images, &sample.videos)
}

/// `(position in items, reason)` for every missing or broken media file, in item order. With
/// `stop_at_first`, at most the first one.
pub(super) fn check(
    items: &[Media<'_>],
    mode: MediaCheck,
    stop_at_first: bool,
) -> Vec<(usize, String)> {
    if mode == MediaCheck::None {
        return vec![];
    }
    let mut distinct: HashMap<(&PathBuf, Kind), Option<String>> = HashMap::new();
    for (images, videos) in items {
        for p in *images {
            distinct.insert((p, Kind::Image), None);
        }
        for p in *videos {
            distinct.insert((p, Kind::Video), None);
        }
    }
    let keys: Vec<(&PathBuf, Kind)> = distinct.keys().copied().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(keys.len().div_ceil(16).max(1));
    let chunk = keys.len().div_ceil(threads).max(1);
    let results: Vec<Option<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(p, k)| check_one(p, *k, mode))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("media check thread panicked"))
            .collect()
    });
    for (key, result) in keys.into_iter().zip(results) {
        distinct.insert(key, result);
    }
    let mut out = vec![];
    for (pos, (images, videos)) in items.iter().enumerate() {
        let media = images
            .iter()
            .map(|p| (p, Kind::Image))
            .chain(videos.iter().map(|p| (p, Kind::Video)));
        for key in media {
            if let Some(Some(reason)) = distinct.get(&key) {
                out.push((pos, reason.clone()));
                if stop_at_first {
                    return out;
                }
            }
        }
    }
    out
}
