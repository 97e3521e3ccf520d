//! Finds and loads dynamic plugins before any command runs, so that their families are in the
//! registry every command uses. Three sources, in this order:
//!
//! 1. the plugins directory: `$LMMS_HOME/plugins`, else `$XDG_DATA_HOME/lmms/plugins`, else
//!    `~/.local/share/lmms/plugins`; every shared library in it (`.so`, `.dylib`, `.dll`);
//! 2. `LMMS_PLUGIN_PATH`: colon-separated (`;` on Windows) files or directories;
//! 3. `--plugin <path>` (repeatable).
//!
//! A library named explicitly (2, 3) that cannot be loaded is an error. One found in the plugins
//! directory is skipped with a warning instead, so that a stale plugin left there after an
//! upgrade does not stop every command.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// The plugins directory (it need not exist).
pub fn plugins_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("LMMS_HOME") {
        return Some(home.join("plugins"));
    }
    if let Some(data) = var("XDG_DATA_HOME") {
        return Some(data.join("lmms/plugins"));
    }
    var("HOME").map(|h| h.join(".local/share/lmms/plugins"))
}

/// Loads every plugin from the three sources.
pub fn load_all(cli_plugins: &[PathBuf]) -> anyhow::Result<()> {
    if let Some(dir) = plugins_dir()
        && dir.is_dir()
    {
        for lib in libraries_in(&dir)? {
            if let Err(e) = lmms_core::plugin::load(&lib) {
                tracing::warn!("skipping a plugin of {}: {e}", dir.display());
            }
        }
    }
    if let Some(paths) = std::env::var_os("LMMS_PLUGIN_PATH") {
        for entry in std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()) {
            let libs = if entry.is_dir() {
                libraries_in(&entry)?
            } else {
                vec![entry]
            };
            for lib in libs {
                load(&lib).context("a plugin from LMMS_PLUGIN_PATH")?;
            }
        }
    }
    for lib in cli_plugins {
        load(lib)?;
    }
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<()> {
    let plugin = lmms_core::plugin::load(path)?;
    tracing::debug!(
        "loaded plugin {} {} from {} (families: {})",
        plugin.name,
        plugin.version,
        plugin.path.display(),
        plugin.families.join(", ")
    );
    Ok(())
}

/// The shared libraries directly in `dir`, sorted by name.
fn libraries_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let ext = std::env::consts::DLL_EXTENSION;
    let mut libs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == ext) {
            libs.push(path);
        }
    }
    libs.sort();
    Ok(libs)
}
