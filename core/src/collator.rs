//! [`Collator`]: turns a list of samples into one batch for a family: chat template, media token
//! expansion, label masking, padding to the longest sample, pixel tensors. It runs on the host
//! (off the training thread), so a batch is plain data; the family moves it to the device.

use crate::data::Sample;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// What to do with a sample longer than the limit. Media tokens are never cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverLength {
    /// Leave the sample out of training, with a warning naming it.
    #[default]
    Skip,
    /// Stop with an error naming the sample.
    Reject,
}

/// A sample prepared for a batch row, or left out for its length ([`OverLength::Skip`]).
#[derive(Debug)]
pub enum Prepare<P> {
    Ready(P),
    TooLong { length: usize, limit: usize },
}

impl<P> Prepare<P> {
    /// The kept rows of a batch and the samples left out, each `prepared` going with the sample
    /// at its place; `unit` says what the length counts (`tokens`, `tokens (media included)`).
    pub fn split(
        samples: &[&Sample],
        prepared: impl IntoIterator<Item = Result<Prepare<P>>>,
        unit: &str,
    ) -> Result<(Vec<P>, Vec<Skipped>)> {
        let mut kept = Vec::with_capacity(samples.len());
        let mut skipped = Vec::new();
        for (sample, prepared) in samples.iter().zip(prepared) {
            match prepared? {
                Prepare::Ready(p) => kept.push(p),
                Prepare::TooLong { length, limit } => skipped.push(Skipped {
                    origin: sample.origin.clone(),
                    reason: format!("{length} {unit}, over the limit of {limit}"),
                }),
            }
        }
        Ok((kept, skipped))
    }

    /// The row of a generation prompt: a conversation too long for the model is an error.
    pub fn into_prompt(self, conversation: &Sample, unit: &str) -> Result<P> {
        match self {
            Prepare::Ready(p) => Ok(p),
            Prepare::TooLong { length, limit } => Err(conversation.origin.error(format!(
                "the conversation is {length} {unit}, over the model's limit of {limit}"
            ))),
        }
    }
}

/// Settings every family's collator honours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollateOptions {
    /// Longest sequence (tokens, media included); `None` = the model's limit.
    pub model_max_length: Option<usize>,
    pub over_length: OverLength,
    /// Train on every token, not only the assistant replies.
    pub train_on_everything: bool,
    /// Frames sampled uniformly from each video.
    pub num_frames: usize,
    /// Pixel bounds of an image after resizing (`min_pixels` / `max_pixels`), for the families
    /// whose processor resizes to a pixel budget (Qwen2-VL); `None` = the processor config's.
    /// They bound the number of vision tokens, hence memory. Other families ignore them.
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// The same for each video frame (Qwen2-VL's video processor has its own bounds).
    pub video_min_pixels: Option<usize>,
    pub video_max_pixels: Option<usize>,
}

impl Default for CollateOptions {
    fn default() -> Self {
        CollateOptions {
            model_max_length: None,
            over_length: OverLength::Skip,
            train_on_everything: false,
            num_frames: 8,
            min_pixels: None,
            max_pixels: None,
            video_min_pixels: None,
            video_max_pixels: None,
        }
    }
}

/// One sample the collator left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub origin: crate::data::SampleOrigin,
    pub reason: String,
}

pub trait Collator: Send + Sync {
    /// Host-side tensors of one batch (token ids, labels, attention mask, pixel values...).
    type Batch: Send;

    /// Collates `samples` into one batch, leaving out (and reporting) samples that the options
    /// say to skip; `None` when none is left. Errors name the sample (via its
    /// [`SampleOrigin`](crate::data::SampleOrigin)).
    fn collate(&self, samples: &[&Sample]) -> Result<(Option<Self::Batch>, Vec<Skipped>)>;

    /// The number of tokens `sample` becomes, for length limits and statistics.
    fn num_tokens(&self, sample: &Sample) -> Result<usize>;

    /// A batch of one generation prompt: `conversation` (ending with a user turn) rendered with
    /// the template's assistant header (`add_generation_prompt`), nothing labelled.
    fn prompt(&self, conversation: &Sample) -> Result<Self::Batch> {
        let _ = conversation;
        Err(crate::Error::Unsupported(
            "this family's collator cannot build generation prompts yet".into(),
        ))
    }

    /// The text of generated token ids (special tokens left out).
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let _ = ids;
        Err(crate::Error::Unsupported(
            "this family's collator cannot decode tokens yet".into(),
        ))
    }

    /// Ids that end a reply (EOS, end-of-turn tokens, `generation_config.json`'s
    /// `eos_token_id`).
    fn stop_ids(&self) -> Vec<u32> {
        Vec::new()
    }
}
