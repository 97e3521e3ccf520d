//! Dataset files -> [`Sample`]s, with validation that names the file and the sample.
//!
//! Formats (detected from the content, not the extension):
//! - **LLaVA style** (lmms-finetune): a JSON list, or JSON Lines (one object per line), of
//!   `{"system_prompt"?, "image"?: str | [str], "video"?: str | [str], "conversations": [{"from",
//!   "value"}]}` with `<image>` / `<video>` placeholders in the text. Roles are mapped by
//!   [`RoleMap`] (`human`/`user`, `gpt`/`assistant`, `system` by default); `role`/`content` turn
//!   keys and a top-level `messages` list are accepted as aliases.
//!   Turn contents may also be OpenAI-style part lists (`[{"type": "text", "text"}, {"type":
//!   "image"}]`).
//! - **Alpaca style**: `{"instruction", "input"?, "output", "system"?, "history"?}` (see
//!   `alpaca.rs`), for text-only chat LLMs.
//! - **InternLM-XComposer2 style**: the same shape (`{"id", "image": [..], "conversations"}`) with
//!   `<ImageHere>` placeholders, which become `<image>` in the [`Sample`].
//! - **`data.txt` mixtures** (XComposer2): lines `<json path> <samples in thousands>`; every epoch
//!   draws exactly that many samples from each file ([`Dataset::epoch`]).
//!
//! What a [`Sample`] holds after loading: the system prompt (from `system_prompt` or a leading
//! system turn) in [`Sample::system`], then turns that alternate user/assistant, starting with
//! the user and ending with the assistant; media paths resolved against the image/video folder
//! (or the data file's folder when none is given), in placeholder order.
//!
//! [`Dataset::load`] stops at the first broken sample; [`Dataset::check`] collects every problem
//! of every file in one pass (for `lmms data check`).

mod alpaca;
mod identity;
mod json;
mod media;
mod mixture;
mod sample;

pub use identity::{IdentityLanguage, identity_samples};
pub use mixture::{MixtureEntry, parse_mixture};

use lmms_core::data::Sample;
use lmms_core::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// The image placeholder of LLaVA-style data, and of every [`Sample`].
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// The video placeholder of LLaVA-style data, and of every [`Sample`].
pub const VIDEO_PLACEHOLDER: &str = "<video>";
/// The image placeholder of InternLM-XComposer2 data.
pub const XCOMPOSER_IMAGE_PLACEHOLDER: &str = "<ImageHere>";

/// Which role names in the data mean what (compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    pub system: Vec<String>,
    pub user: Vec<String>,
    pub assistant: Vec<String>,
}

impl Default for RoleMap {
    fn default() -> Self {
        let v = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        RoleMap {
            system: v(&["system"]),
            user: v(&["human", "user"]),
            assistant: v(&["gpt", "assistant"]),
        }
    }
}

impl RoleMap {
    pub fn role_of(&self, name: &str) -> Option<lmms_core::data::Role> {
        use lmms_core::data::Role;
        let is = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if is(&self.user) {
            Some(Role::User)
        } else if is(&self.assistant) {
            Some(Role::Assistant)
        } else if is(&self.system) {
            Some(Role::System)
        } else {
            None
        }
    }

    fn all_names(&self) -> String {
        let names: Vec<&str> = self
            .user
            .iter()
            .chain(&self.assistant)
            .chain(&self.system)
            .map(String::as_str)
            .collect();
        names.join(", ")
    }
}

/// Which placeholder spelling marks an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `<image>` and `<ImageHere>` both count as image placeholders.
    #[default]
    Auto,
    /// LLaVA / lmms-finetune: `<image>`.
    Llava,
    /// InternLM-XComposer2: `<ImageHere>`.
    XComposer2,
}

/// How far media files are checked while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaCheck {
    /// Paths are resolved but not looked at.
    None,
    /// Every image and video file must exist.
    #[default]
    Exists,
    /// Images must decode (with the `image` crate); videos must exist.
    Decode,
}

#[derive(Debug, Clone, Default)]
pub struct DatasetOptions {
    /// Relative image paths are resolved against this folder (default: the data file's folder).
    pub image_folder: Option<PathBuf>,
    /// Relative video paths are resolved against this folder (default: the data file's folder).
    pub video_folder: Option<PathBuf>,
    pub roles: RoleMap,
    pub format: Format,
    pub media_check: MediaCheck,
}

/// One data file of a [`Dataset`] and its samples.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    /// The file's samples (in [`Dataset::check`]: the valid ones).
    pub samples: Vec<Sample>,
    /// How many samples each epoch takes from this file (`data.txt` mixtures); `None`: all,
    /// once.
    pub per_epoch: Option<usize>,
}

/// A loaded dataset: one file, or the files of a `data.txt` mixture.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file that was opened (a JSON/JSONL file or a `data.txt`).
    pub path: PathBuf,
    pub sources: Vec<Source>,
}

/// The outcome of [`Dataset::check`]: what loaded, and every problem found.
#[derive(Debug)]
pub struct CheckReport {
    /// The valid samples (a mixture's per-epoch counts as in the file).
    pub dataset: Dataset,
    /// Samples seen per file, broken ones included.
    pub totals: Vec<(PathBuf, usize)>,
    /// Every problem, in file and sample order; sample problems are [`Error::Sample`].
    pub problems: Vec<Error>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Samples seen in all files, broken ones included.
    pub fn total_samples(&self) -> usize {
        self.totals.iter().map(|(_, n)| n).sum()
    }

    /// How many distinct samples have at least one problem.
    pub fn broken_samples(&self) -> usize {
        let mut seen: Vec<(&Path, usize)> = self
            .problems
            .iter()
            .filter_map(|e| match e {
                Error::Sample { file, index, .. } => Some((file.as_path(), *index)),
                _ => None,
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }
}

fn is_mixture(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

impl Dataset {
    /// Loads `path` (a JSON list, JSONL, or `data.txt` mixture), stopping at the first problem.
    pub fn load(path: impl AsRef<Path>, options: &DatasetOptions) -> Result<Dataset> {
        let path = path.as_ref();
        let specs = if is_mixture(path) {
            parse_mixture(path)?
        } else {
            vec![MixtureEntry {
                path: path.to_path_buf(),
                per_epoch: None,
                line: 0,
            }]
        };
        let mut sources = Vec::with_capacity(specs.len());
        for spec in specs {
            let samples = load_samples(&spec.path, options)?;
            if let Some(n) = spec.per_epoch
                && n > 0
                && samples.is_empty()
            {
                return Err(empty_mixture_file(path, &spec));
            }
            sources.push(Source {
                file: spec.path,
                samples,
                per_epoch: spec.per_epoch,
            });
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            sources,
        })
    }

    /// Validates `path` without stopping: every problem of every sample of every file.
    pub fn check(path: impl AsRef<Path>, options: &DatasetOptions) -> CheckReport {
        let path = path.as_ref();
        let mut report = CheckReport {
            dataset: Dataset {
                path: path.to_path_buf(),
                sources: vec![],
            },
            totals: vec![],
            problems: vec![],
        };
        let specs = if is_mixture(path) {
            match parse_mixture(path) {
                Ok(specs) => specs,
                Err(e) => {
                    report.problems.push(e);
                    return report;
                }
            }
        } else {
            vec![MixtureEntry {
                path: path.to_path_buf(),
                per_epoch: None,
                line: 0,
            }]
        };
        for spec in specs {
            let checked = check_samples(&spec.path, options);
            report.totals.push((spec.path.clone(), checked.total));
            report.problems.extend(checked.problems);
            if let Some(n) = spec.per_epoch
                && n > 0
                && checked.total > 0
                && checked.samples.is_empty()
            {
                report.problems.push(empty_mixture_file(path, &spec));
            }
            report.dataset.sources.push(Source {
                file: spec.path,
                samples: checked.samples,
                per_epoch: spec.per_epoch,
            });
        }
        report
    }

    /// Every distinct sample, file by file.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.sources.iter().flat_map(|s| &s.samples)
    }

    /// How many samples one epoch has.
    pub fn epoch_len(&self) -> usize {
        self.sources
            .iter()
            .map(|s| s.per_epoch.unwrap_or(s.samples.len()))
            .sum()
    }

    /// The samples of epoch `epoch`, file by file, in file order within each file (the trainer
    /// shuffles). A file with a per-epoch count takes exactly that many: all of its samples
    /// `count / len` times plus `count % len` distinct extra ones drawn at random when it has
    /// fewer (up-sampling), or `count` distinct ones drawn at random when it has more. The draw
    /// depends only on `seed`, `epoch` and the file's position (ChaCha8, portable).
    pub fn epoch(&self, epoch: u64, seed: u64) -> Vec<&Sample> {
        let mut out = Vec::with_capacity(self.epoch_len());
        for (i, source) in self.sources.iter().enumerate() {
            let len = source.samples.len();
            let Some(count) = source.per_epoch else {
                out.extend(&source.samples);
                continue;
            };
            if len == 0 {
                continue;
            }
            let mut rng = epoch_rng(seed, epoch, i as u64);
            let mut picked: Vec<usize> = Vec::with_capacity(count);
            for _ in 0..count / len {
                picked.extend(0..len);
            }
            let extra = count % len;
            if extra > 0 {
                let mut idx: Vec<usize> = rand::seq::index::sample(&mut rng, len, extra).into_vec();
                idx.sort_unstable();
                picked.extend(idx);
            }
            picked.sort_unstable();
            out.extend(picked.into_iter().map(|k| &source.samples[k]));
        }
        out
    }

    /// [`Dataset::epoch`], shuffled with the same seed.
    pub fn shuffled_epoch(&self, epoch: u64, seed: u64) -> Vec<&Sample> {
        let mut out = self.epoch(epoch, seed);
        let mut rng = epoch_rng(seed, epoch, u64::MAX);
        out.shuffle(&mut rng);
        out
    }
}

fn epoch_rng(seed: u64, epoch: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&stream.to_le_bytes());
    key[24..].copy_from_slice(b"lmms-mix");
    ChaCha8Rng::from_seed(key)
}

fn empty_mixture_file(mixture: &Path, spec: &MixtureEntry) -> Error {
    Error::config(
        mixture,
        format!(
            "line {}: {} has no valid sample to draw {} per epoch from",
            spec.line,
            spec.path.display(),
            spec.per_epoch.unwrap_or(0)
        ),
    )
}

/// The samples of one JSON/JSONL file, stopping at the first problem.
pub fn load_samples(path: impl AsRef<Path>, options: &DatasetOptions) -> Result<Vec<Sample>> {
    let path = path.as_ref();
    let mut raw = json::read_samples(path, true)?;
    let first_syntax_error = raw.errors.first().map(|(index, _)| *index);
    let parser = sample::Parser::new(path, options);
    let mut samples = Vec::with_capacity(raw.values.len());
    for (index, value) in raw.values {
        if first_syntax_error.is_some_and(|bad| bad < index) {
            break;
        }
        match parser.parse(value, index) {
            Ok(s) => samples.push(s),
            Err(mut broken) => {
                return Err(Error::sample(path, index, broken.problems.remove(0)));
            }
        }
    }
    if !raw.errors.is_empty() {
        return Err(raw.errors.remove(0).1);
    }
    let media: Vec<media::Media> = samples.iter().map(media::of).collect();
    if let Some((pos, reason)) = media::check(&media, options.media_check, true)
        .into_iter()
        .next()
    {
        return Err(samples[pos].origin.error(reason));
    }
    Ok(samples)
}

/// What [`check_samples`] found in one file.
#[derive(Debug, Default)]
pub struct FileCheck {
    /// Samples seen, broken ones included (for a file that is not valid JSON: those before the
    /// syntax error, plus the broken one).
    pub total: usize,
    pub samples: Vec<Sample>,
    pub problems: Vec<Error>,
}

/// Every problem of one JSON/JSONL file; the valid samples are kept.
pub fn check_samples(path: impl AsRef<Path>, options: &DatasetOptions) -> FileCheck {
    let path = path.as_ref();
    let raw = match json::read_samples(path, false) {
        Ok(raw) => raw,
        Err(e) => {
            return FileCheck {
                problems: vec![e],
                ..Default::default()
            };
        }
    };
    let parser = sample::Parser::new(path, options);
    let total = raw.values.len() + raw.errors.len();
    let parsed: Vec<(usize, std::result::Result<Sample, sample::Broken>)> = raw
        .values
        .into_iter()
        .map(|(index, value)| (index, parser.parse(value, index)))
        .collect();
    // Media are checked for broken samples too, so one pass reports everything.
    let media: Vec<media::Media> = parsed
        .iter()
        .map(|(_, r)| match r {
            Ok(s) => media::of(s),
            Err(b) => (b.images.as_slice(), b.videos.as_slice()),
        })
        .collect();
    let mut media_problems: Vec<Vec<String>> = vec![vec![]; parsed.len()];
    for (pos, reason) in media::check(&media, options.media_check, false) {
        media_problems[pos].push(reason);
    }
    // (index, reasons) per broken sample.
    let mut per_sample: Vec<(usize, Vec<String>)> = vec![];
    let mut samples = vec![];
    for ((index, result), media) in parsed.into_iter().zip(media_problems) {
        match result {
            Ok(s) if media.is_empty() => samples.push(s),
            Ok(_) => per_sample.push((index, media)),
            Err(mut b) => {
                b.problems.extend(media);
                per_sample.push((index, b.problems));
            }
        }
    }
    let mut problems: Vec<(usize, Error)> = per_sample
        .into_iter()
        .flat_map(|(index, reasons)| {
            reasons
                .into_iter()
                .map(move |r| (index, Error::sample(path, index, r)))
        })
        .chain(raw.errors)
        .collect();
    // Stable: a sample's own problems keep their order.
    problems.sort_by_key(|(index, _)| *index);
    FileCheck {
        total,
        samples,
        problems: problems.into_iter().map(|(_, e)| e).collect(),
    }
}

/// The images' and videos' file names resolved as loading does (for tools that list media).
pub fn resolve_media_path(folder: Option<&Path>, data_file: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match folder {
        Some(f) => f.join(p),
        None => data_file.parent().unwrap_or(Path::new("")).join(p),
    }
}
