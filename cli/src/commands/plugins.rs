//! `lmms plugins list`: every registered family and where its code came from: built into
//! `lmms`, a static plugin linked into this build, or a dynamic plugin (which file).

use crate::args::PluginsListArgs;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use lmms_core::Registry;
use lmms_core::registry::Origin;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct Row {
    family: &'static str,
    name: &'static str,
    /// `built-in`, `static` or `dylib`.
    source: &'static str,
    #[serde(rename = "crate")]
    crate_name: &'static str,
    /// The shared library of a dynamic plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

pub fn run(args: &PluginsListArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::linked()?;
    let rows: Vec<Row> = registry
        .families()
        .iter()
        .map(|f| {
            let d = f.descriptor;
            let (source, path) = match &f.origin {
                Origin::Linked { crate_name } if crate::builtin::CRATES.contains(crate_name) => {
                    ("built-in", None)
                }
                Origin::Linked { .. } => ("static", None),
                Origin::Dylib { path, .. } => ("dylib", Some(path.display().to_string())),
            };
            Row {
                family: d.id,
                name: d.name,
                source,
                crate_name: d.crate_name,
                path,
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
        .set_header(["FAMILY", "SOURCE", "CRATE", "LIBRARY"]);
    for r in &rows {
        table.add_row([
            r.family,
            r.source,
            r.crate_name,
            r.path.as_deref().unwrap_or("-"),
        ]);
    }
    println!("{table}");
    let plugins = lmms_core::plugin::loaded_plugins();
    match crate::plugins::plugins_dir() {
        Some(dir) => println!(
            "{} dynamic plugins loaded (--plugin, LMMS_PLUGIN_PATH, {}).",
            plugins.len(),
            dir.display()
        ),
        None => println!(
            "{} dynamic plugins loaded (--plugin, LMMS_PLUGIN_PATH).",
            plugins.len()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
