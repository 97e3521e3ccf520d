//! [`QwenVlCollator`]: dataset samples -> [`QwenVlInputs`] (not landed yet: parity runs on
//! fixture inputs only).

use crate::config::QwenVlConfig;
use crate::model::QwenVlInputs;
use lmms_core::collator::{CollateOptions, Collator, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;

pub struct QwenVlCollator {
    pub config: QwenVlConfig,
}

impl QwenVlCollator {
    pub fn new(_dir: &ModelDir, config: QwenVlConfig, _options: &CollateOptions) -> Result<Self> {
        Ok(QwenVlCollator { config })
    }
}

impl Collator for QwenVlCollator {
    type Batch = QwenVlInputs;

    fn collate(&self, _samples: &[&Sample]) -> Result<(Option<QwenVlInputs>, Vec<Skipped>)> {
        Err(Error::Unsupported(
            "the Qwen2-VL collator is not implemented yet".into(),
        ))
    }

    fn num_tokens(&self, _sample: &Sample) -> Result<usize> {
        Err(Error::Unsupported(
            "the Qwen2-VL collator is not implemented yet".into(),
        ))
    }
}
