//! The in-memory form of one training sample, whatever file format it came from (LLaVA-style
//! JSON, XComposer2 JSON, Alpaca, OpenAI messages): a conversation with the media it refers to
//! and where it came from, so that any later error can name the file and the sample.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    /// Text with media placeholders (`<image>`, `<video>`) where the media stand.
    pub content: String,
}

/// Where a sample came from: the file and its 0-based position in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleOrigin {
    pub file: PathBuf,
    pub index: usize,
}

impl SampleOrigin {
    /// An error about this sample.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::sample(&self.file, self.index, reason)
    }

    /// `<sample>: <what> <path>: <reason>` for a media file that failed (`what`: "image",
    /// "video"); an I/O error's path is the media's own, so only its cause is kept.
    pub fn media_error(&self, what: &str, path: &std::path::Path, e: &Error) -> Error {
        let reason = match e {
            Error::Io { source, .. } => source.to_string(),
            other => other.with_causes(),
        };
        self.error(format!("{what} {}: {reason}", path.display()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub origin: SampleOrigin,
    /// The per-sample system prompt, if any (else the template's default applies).
    pub system: Option<String>,
    pub turns: Vec<Turn>,
    /// Resolved image paths, in placeholder order.
    pub images: Vec<PathBuf>,
    /// Resolved video paths, in placeholder order.
    pub videos: Vec<PathBuf>,
}
