//! The host side of dynamic plugins: opens a shared library, checks its declaration's versions
//! before calling any Rust-ABI code, and adds its families to the process-wide registry.

use super::{
    CORE_FEATURES, DECLARATION_SYMBOL, PLUGIN_ABI_VERSION, PluginDeclaration, RUSTC_VERSION,
};
use crate::registry::{Origin, RegisteredFamily};
use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a shared library could not be used as a plugin; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load plugin {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    #[error(
        "{} is not an lmms plugin: it exports no `{DECLARATION_SYMBOL}` symbol (build it with \
         `lmms_core::declare_plugin!`)",
        path.display()
    )]
    NotAPlugin { path: PathBuf },
    #[error("plugin {} was refused: {reason}", path.display())]
    Mismatch { path: PathBuf, reason: String },
    #[error("plugin {}: {reason}", path.display())]
    Registration { path: PathBuf, reason: String },
}

/// A plugin loaded into this process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    /// The plugin crate's package name and version.
    pub name: String,
    pub version: String,
    /// Ids of the families it registered.
    pub families: Vec<&'static str>,
}

/// Every plugin loaded so far; its families are in [`crate::Registry::linked`].
static LOADED: Mutex<Vec<LoadedPlugin>> = Mutex::new(Vec::new());

/// The plugins loaded so far, in load order.
pub fn loaded_plugins() -> Vec<LoadedPlugin> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Loads the plugin at `path` and registers its families; loading the same file twice is a
/// no-op. The library stays loaded for the rest of the process (its code backs the families).
pub fn load(path: &Path) -> Result<LoadedPlugin, PluginError> {
    let canonical = path.canonicalize().map_err(|e| PluginError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(p) = loaded_plugins().into_iter().find(|p| p.path == canonical) {
        return Ok(p);
    }
    // SAFETY: loading a library runs its initialisers. That is the point of a plugin: the user
    // asked for this file; a plain non-Rust library is harmless to open.
    let library =
        unsafe { libloading::Library::new(&canonical) }.map_err(|e| PluginError::Open {
            path: canonical.clone(),
            reason: e.to_string(),
        })?;
    type Entry = extern "C" fn() -> *const PluginDeclaration;
    // SAFETY: the symbol's type is the one `declare_plugin!` exports; a library that exports the
    // name with another type is not something the checks below can defend against.
    let entry: Entry = match unsafe { library.get::<Entry>(DECLARATION_SYMBOL.as_bytes()) } {
        Ok(symbol) => *symbol,
        Err(_) => return Err(PluginError::NotAPlugin { path: canonical }),
    };
    let declaration = entry();
    if declaration.is_null() {
        return Err(PluginError::NotAPlugin { path: canonical });
    }
    let mismatch = |reason: String| PluginError::Mismatch {
        path: canonical.clone(),
        reason,
    };
    // SAFETY: the header (abi_version, core_version, rustc_version) has the same C layout in
    // every ABI version, so it can be read before the version is known.
    let (abi, core, rustc) = unsafe {
        let d = &*declaration;
        (
            d.abi_version,
            string(d.core_version),
            string(d.rustc_version),
        )
    };
    if abi != PLUGIN_ABI_VERSION {
        return Err(mismatch(format!(
            "it has plugin ABI version {abi} (lmms-core {core}), this lmms has plugin ABI version \
             {PLUGIN_ABI_VERSION} (lmms-core {}); rebuild the plugin against lmms-core {}",
            crate::CORE_VERSION,
            crate::CORE_VERSION
        )));
    }
    if core != crate::CORE_VERSION {
        return Err(mismatch(format!(
            "it was built against lmms-core {core}, this lmms has lmms-core {}; rebuild it against \
             the same version",
            crate::CORE_VERSION
        )));
    }
    if rustc != RUSTC_VERSION {
        return Err(mismatch(format!(
            "it was built with `{rustc}`, this lmms with `{RUSTC_VERSION}`; Rust has no stable ABI, \
             so both must come from the same compiler"
        )));
    }
    // SAFETY: the ABI version matches, so the whole declaration has this build's layout.
    let d = unsafe { &*declaration };
    // SAFETY: as above; the strings are NUL-terminated constants of the library.
    let (features, name, version) = unsafe {
        (
            string(d.core_features),
            string(d.plugin_name),
            string(d.plugin_version),
        )
    };
    if features != CORE_FEATURES {
        return Err(mismatch(format!(
            "its lmms-core was built with features [{features}], this lmms's with \
             [{CORE_FEATURES}]"
        )));
    }
    // Same ABI, core and compiler: calling the Rust-ABI function is sound. It catches its own
    // panics (`plugin::guarded`), so nothing unwinds into this frame.
    let descriptors = (d.register)().map_err(|reason| PluginError::Registration {
        path: canonical.clone(),
        reason,
    })?;
    // The descriptors and their runtimes point into the library: keep it loaded for good.
    std::mem::forget(library);
    let plugin = LoadedPlugin {
        path: canonical.clone(),
        name,
        version,
        families: descriptors.iter().map(|d| d.id).collect(),
    };
    let families = descriptors
        .into_iter()
        .map(|descriptor| RegisteredFamily {
            descriptor,
            origin: Origin::Dylib {
                plugin: plugin.name.clone(),
                path: canonical.clone(),
            },
        })
        .collect();
    crate::registry::add_loaded(families);
    LOADED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(plugin.clone());
    Ok(plugin)
}

/// A NUL-terminated string from a plugin's declaration (lossy, `""` for null).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that outlives the call.
unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
