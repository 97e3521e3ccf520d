//! What several subcommands do first: resolve `--model` to a family with model code, and load a
//! dataset with its media folders.

use anyhow::Context;
use lmms_collators::dataset::{Dataset, DatasetOptions, MediaCheck};
use lmms_core::Registry;
use lmms_core::model_dir::{ModelDir, resolve_model};
use lmms_core::runtime::DynFamily;
use std::path::{Path, PathBuf};

/// A resolved model directory and its family's runtime.
pub struct Loaded {
    pub dir: ModelDir,
    pub runtime: &'static dyn DynFamily,
    pub model_id: Option<&'static str>,
}

pub fn load_model(model: &str, model_path: Option<&Path>) -> anyhow::Result<Loaded> {
    let registry = Registry::linked()?;
    let resolved = resolve_model(&registry, model, model_path)?;
    let d = resolved.family.descriptor;
    let runtime = d
        .runtime
        .with_context(|| format!("family `{}` has no model code", d.id))?;
    Ok(Loaded {
        dir: resolved.dir,
        runtime,
        model_id: resolved.model_id,
    })
}

/// Loads a dataset file (JSON, JSONL or data.txt); media must exist.
pub fn load_data(
    data: &Path,
    image_folder: Option<&PathBuf>,
    video_folder: Option<&PathBuf>,
) -> anyhow::Result<Dataset> {
    let opts = DatasetOptions {
        image_folder: image_folder.cloned(),
        video_folder: video_folder.cloned(),
        media_check: MediaCheck::Exists,
        ..Default::default()
    };
    Ok(Dataset::load(data, &opts)?)
}

impl crate::args::ModelAndData {
    /// The model and every sample of the dataset.
    pub fn load(&self) -> anyhow::Result<(Loaded, Dataset)> {
        let model = load_model(&self.model, self.model_path.as_deref())?;
        let data = load_data(
            &self.data,
            self.image_folder.as_ref(),
            self.video_folder.as_ref(),
        )?;
        Ok((model, data))
    }

    pub fn collate_options(&self) -> lmms_core::collator::CollateOptions {
        lmms_core::collator::CollateOptions {
            model_max_length: self.model_max_length,
            min_pixels: self.min_pixels,
            max_pixels: self.max_pixels,
            video_min_pixels: self.video_min_pixels,
            video_max_pixels: self.video_max_pixels,
            ..Default::default()
        }
    }
}
