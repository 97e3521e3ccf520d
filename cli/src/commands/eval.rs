//! `lmms eval`: loss of a model (and adapter) on a dataset.

use crate::args::EvalArgs;
use lmms_core::backend::DeviceSpec;
use std::process::ExitCode;

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let (model, data) = args.common.load()?;
    let (runtime, dir) = (model.runtime, &model.dir);
    let samples: Vec<_> = data.samples().collect();
    let collate = args.common.collate_options();
    let report = runtime.eval(
        dir,
        args.adapter.as_deref(),
        &samples,
        &collate,
        DeviceSpec::Cpu,
    )?;
    if args.json {
        let rows: Vec<_> = report
            .samples
            .iter()
            .map(|s| {
                serde_json::json!({
                    "file": s.origin.file, "index": s.origin.index, "tokens": s.tokens,
                    "trained_tokens": s.trained_tokens, "loss": s.loss,
                })
            })
            .collect();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .map(|s| serde_json::json!({"file": s.origin.file, "index": s.origin.index, "reason": s.reason}))
            .collect();
        let out = serde_json::json!({
            "loss": report.loss, "trained_tokens": report.trained_tokens,
            "samples": rows, "skipped": skipped,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:>7}  {:>7}  {:>8}  {:>9}",
            "sample", "tokens", "trained", "loss"
        );
        for s in &report.samples {
            println!(
                "{:>7}  {:>7}  {:>8}  {:>9.4}",
                s.origin.index, s.tokens, s.trained_tokens, s.loss
            );
        }
        for s in &report.skipped {
            println!("skipped sample {}: {}", s.origin.index, s.reason);
        }
        println!(
            "loss {:.4} over {} trained tokens in {} samples",
            report.loss,
            report.trained_tokens,
            report.samples.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
