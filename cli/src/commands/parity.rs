//! `lmms parity DIR...`: per fixture, the max relative error of every compared tensor; exits
//! non-zero when any is above its tolerance.

use crate::args::ParityArgs;
use anyhow::Context;
use lmms_core::Registry;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::ParityCheck;
use std::process::ExitCode;

pub fn run(args: &ParityArgs, verbose: bool) -> anyhow::Result<ExitCode> {
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
        // Gradients come one per LoRA tensor; unless asked, show the worst one and any failures.
        let (grads, others): (Vec<&ParityCheck>, Vec<&ParityCheck>) = report
            .checks
            .iter()
            .partition(|c| c.name.starts_with("lora.grad."));
        let mut shown: Vec<(String, &ParityCheck)> =
            others.iter().map(|c| (c.name.clone(), *c)).collect();
        if verbose {
            shown.extend(grads.iter().map(|c| (c.name.clone(), *c)));
        } else if let Some(worst) = grads
            .iter()
            .max_by(|a, b| a.max_rel_err.total_cmp(&b.max_rel_err))
        {
            shown.push((
                format!("lora.grad ({} tensors, worst)", grads.len()),
                *worst,
            ));
            shown.extend(
                grads
                    .iter()
                    .filter(|c| !c.passed())
                    .map(|c| (c.name.clone(), *c)),
            );
        }
        let width = shown.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, c) in &shown {
            let verdict = if c.passed() { "ok" } else { "FAIL" };
            match &c.note {
                Some(note) => println!("  {name:width$}  {note}  {verdict}"),
                None => println!(
                    "  {name:width$}  max rel {:9.2e}  max abs {:9.2e}  tol {:7.0e}  {verdict}",
                    c.max_rel_err, c.max_abs_err, c.tolerance
                ),
            }
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
