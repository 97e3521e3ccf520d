//! Placeholder: the collator lands next.

use crate::model::MllamaInputs;
use lmms_core::collator::{Collator, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};

#[derive(Debug)]
pub struct MllamaCollator;

impl Collator for MllamaCollator {
    type Batch = MllamaInputs;

    fn collate(&self, _samples: &[&Sample]) -> Result<(Option<MllamaInputs>, Vec<Skipped>)> {
        Err(Error::Unsupported("not yet".into()))
    }

    fn num_tokens(&self, _sample: &Sample) -> Result<usize> {
        Err(Error::Unsupported("not yet".into()))
    }
}
