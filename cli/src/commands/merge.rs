//! `lmms merge`: base + PEFT adapter -> standalone model.

use crate::args::MergeArgs;
use anyhow::{Context, bail};
use lmms_core::Registry;
use lmms_core::model_dir::ModelDir;
use std::process::ExitCode;

pub fn run(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    if args.out.exists() {
        bail!(
            "{} already exists; choose a new --out (nothing is overwritten)",
            args.out.display()
        );
    }
    let registry = Registry::linked()?;
    let base = ModelDir::open(&args.base)?;
    let family = registry.for_config(&base.config).with_context(|| {
        format!(
            "{}: no registered family handles this model",
            args.base.display()
        )
    })?;
    let runtime = family
        .descriptor
        .runtime
        .with_context(|| format!("family `{}` is not implemented yet", family.descriptor.id))?;
    // Build into a temporary sibling, then rename: a failed merge leaves nothing behind.
    lmms_core::fs::write_dir_atomic(&args.out, |tmp| runtime.merge(&base, &args.adapter, tmp))?;
    println!(
        "merged {} + {} -> {}",
        args.base.display(),
        args.adapter.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
