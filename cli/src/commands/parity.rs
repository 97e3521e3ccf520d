//! `lmms parity DIR...`: per fixture, the max relative error of every compared tensor; exits
//! non-zero when any is above its tolerance.

use crate::args::ParityArgs;
use anyhow::Context;
use lmms_core::Registry;
use lmms_core::model_dir::ModelDir;
use std::process::ExitCode;

pub fn run(args: &ParityArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::linked()?;
    let mut failed = 0usize;
    for dir in &args.dirs {
        let model_dir = ModelDir::open(dir)?;
        let family = registry.for_config(&model_dir.config).with_context(|| {
            format!(
                "{}: no registered family handles architectures {}",
                dir.display(),
                model_dir
                    .config
                    .get("architectures")
                    .unwrap_or(&serde_json::Value::Null)
            )
        })?;
        let d = family.descriptor;
        let runtime = d.runtime.with_context(|| {
            format!(
                "{}: family `{}` is not implemented yet, so there is nothing to check",
                dir.display(),
                d.id
            )
        })?;
        let report = runtime
            .parity(dir, args.device)
            .with_context(|| format!("parity run of {}", dir.display()))?;
        println!(
            "{} (family {}, forward {:.3} s on {})",
            dir.display(),
            d.id,
            report.forward_seconds,
            args.device
        );
        let width = report
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &report.checks {
            let verdict = if c.passed() { "ok" } else { "FAIL" };
            println!(
                "  {:width$}  max rel {:9.2e}  max abs {:9.2e}  tol {:7.0e}  {verdict}",
                c.name, c.max_rel_err, c.max_abs_err, c.tolerance
            );
        }
        let bad = report.checks.iter().filter(|c| !c.passed()).count();
        if bad > 0 {
            println!("  {bad} of {} checks above tolerance", report.checks.len());
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} fixture directories failed",
            args.dirs.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
