//! `lmms supported-models`: the model id table, as text or JSON.

use crate::args::SupportedModelsArgs;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use lmms_core::Registry;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct Row {
    id: &'static str,
    hf_path: &'static str,
    family: &'static str,
    family_name: &'static str,
    modalities: Vec<&'static str>,
    strategies: Vec<&'static str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_note: Option<&'static str>,
    source: &'static str,
}

pub fn run(args: &SupportedModelsArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::linked()?;
    if let Some(f) = &args.family
        && registry.family(f).is_none()
    {
        let known: Vec<_> = registry
            .families()
            .iter()
            .map(|f| f.descriptor.id)
            .collect();
        anyhow::bail!("unknown family `{f}`; families: {}", known.join(", "));
    }
    let rows: Vec<Row> = registry
        .models()
        .filter(|m| {
            args.family
                .as_deref()
                .is_none_or(|f| m.family.descriptor.id == f)
        })
        .filter(|m| !args.implemented || m.family.descriptor.status.is_implemented())
        .map(|m| {
            let d = m.family.descriptor;
            Row {
                id: m.model.id,
                hf_path: m.model.hf_path,
                family: d.id,
                family_name: d.name,
                modalities: d
                    .modalities_of(m.model)
                    .iter()
                    .map(|x| x.as_str())
                    .collect(),
                strategies: d.strategies.iter().map(|s| s.as_str()).collect(),
                status: d.status.label(),
                status_note: d.status.note(),
                source: d.crate_name,
            }
        })
        .collect();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "MODEL ID",
            "HF PATH",
            "FAMILY",
            "INPUTS",
            "STRATEGIES",
            "STATUS",
        ]);
    for r in &rows {
        table.add_row([
            r.id.to_string(),
            r.hf_path.to_string(),
            r.family.to_string(),
            r.modalities.join(", "),
            r.strategies.join(", "),
            r.status.to_string(),
        ]);
    }
    println!("{table}");
    let families = registry.families().len();
    let implemented = registry
        .families()
        .iter()
        .filter(|f| f.descriptor.status.is_implemented())
        .count();
    println!(
        "{} models in {families} families; {implemented} families implemented. \
         \"parity-only\": the model matches HF transformers (`lmms parity`) but does not train yet; \
         \"planned\": listed, model code not landed.",
        rows.len()
    );
    Ok(ExitCode::SUCCESS)
}
