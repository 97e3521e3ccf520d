//! (being written) LLaVA collator.

use crate::family::LlavaInputs;
use lmms_core::collator::{CollateOptions, Collator, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;

pub struct LlavaCollator;

impl LlavaCollator {
    pub fn new(_dir: &ModelDir, _options: &CollateOptions) -> Result<Self> {
        Err(Error::Unsupported(
            "the LLaVA collator is being written".into(),
        ))
    }
}

impl Collator for LlavaCollator {
    type Batch = LlavaInputs;

    fn collate(&self, _samples: &[&Sample]) -> Result<(Option<LlavaInputs>, Vec<Skipped>)> {
        Err(Error::Unsupported(
            "the LLaVA collator is being written".into(),
        ))
    }

    fn num_tokens(&self, _sample: &Sample) -> Result<usize> {
        Err(Error::Unsupported(
            "the LLaVA collator is being written".into(),
        ))
    }
}
