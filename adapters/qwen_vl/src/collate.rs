//! [`QwenVlCollator`]: conversations -> [`QwenVlInputs`] in the style of Qwen-VL's finetune
//! script (as lmms-finetune's `qwen-vl` collator does).

use crate::family::QwenVlInputs;
use lmms_core::collator::{CollateOptions, Collator, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;

#[derive(Debug)]
pub struct QwenVlCollator;

impl QwenVlCollator {
    pub fn new(_dir: &ModelDir, _options: &CollateOptions) -> Result<Self> {
        Err(Error::Batch(
            "Qwen-VL-Chat collation has not landed yet".into(),
        ))
    }
}

impl Collator for QwenVlCollator {
    type Batch = QwenVlInputs;

    fn collate(&self, _samples: &[&Sample]) -> Result<(Option<QwenVlInputs>, Vec<Skipped>)> {
        unreachable!("QwenVlCollator::new never succeeds yet")
    }

    fn num_tokens(&self, _sample: &Sample) -> Result<usize> {
        unreachable!("QwenVlCollator::new never succeeds yet")
    }
}
