//! [`Collator`]: turns a list of samples into one batch for a family: chat template, media token
//! expansion, label masking, padding to the longest sample, pixel tensors. It runs on the host
//! (off the training thread), so a batch is plain data; the family moves it to the device.

use crate::data::Sample;
use crate::error::Result;

pub trait Collator: Send + Sync {
    /// Host-side tensors of one batch (token ids, labels, attention mask, pixel values...).
    type Batch: Send;

    /// Collates `samples` into one batch. Errors name the sample (via its
    /// [`SampleOrigin`](crate::data::SampleOrigin)).
    fn collate(&self, samples: &[&Sample]) -> Result<Self::Batch>;

    /// The number of tokens `sample` becomes, for length limits and statistics.
    fn num_tokens(&self, sample: &Sample) -> Result<usize>;
}
