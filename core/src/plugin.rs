//! The plugin API: what a third-party family crate implements and exports so that `lmms` can
//! use its families. See `docs/PLUGINS.md` for a step-by-step guide.
//!
//! Two ways to ship a family:
//!
//! - **Static**: a crate registers its [`FamilyDescriptor`]s with
//!   [`register_family!`](crate::register_family) and is linked into a custom `lmms` build
//!   (`plugins/example-static`).
//! - **Dynamic**: a `cdylib` crate calls [`declare_plugin!`](crate::declare_plugin) once; `lmms`
//!   loads the shared library at run time ([`load`]) and adds its families to the registry
//!   (`plugins/example-dylib`).
//!
//! A dynamic plugin hands Rust values (descriptors, trait objects) to the host, and Rust has no
//! stable ABI: both sides must be built by the same rustc, against the same `lmms-core` version
//! and features, with the same versions of the crates in `lmms-core`'s public types (use the
//! workspace's `Cargo.lock`). The entry point therefore exports a C-safe header
//! ([`PluginDeclaration`]) that the host checks before it calls any Rust-ABI code.

mod load;

pub use load::{LoadedPlugin, PluginError, load, loaded_plugins};

use crate::family::FamilyDescriptor;
use std::ffi::{CStr, c_char};

/// Version of the layout of [`PluginDeclaration`] and of the plugin protocol. Bumped on any
/// change to either; a plugin declaring another version is refused.
pub const PLUGIN_ABI_VERSION: u32 = 1;

/// The rustc that built this `lmms-core` (`rustc -V`, recorded by `build.rs`).
pub const RUSTC_VERSION: &str = env!("LMMS_RUSTC_VERSION");

/// The `lmms-core` features that change types a plugin shares with the host.
pub const CORE_FEATURES: &str = if cfg!(feature = "cuda") { "cuda" } else { "" };

/// The symbol every dynamic plugin exports: `extern "C" fn() -> *const PluginDeclaration`.
pub const DECLARATION_SYMBOL: &str = "lmms_plugin_declaration";

/// What a plugin's registration returns: its families, or why it could not provide them.
pub type RegisterFn = fn() -> Result<Vec<&'static FamilyDescriptor>, String>;

/// The static a dynamic plugin's entry point returns a pointer to.
///
/// The first three fields are the C-safe header and keep their place in every ABI version: the
/// host reads them, and nothing else, before the versions are known to match. The fields after
/// them are read only once `abi_version` equals [`PLUGIN_ABI_VERSION`]; `register` is Rust ABI
/// and is called only once the `lmms-core` and rustc versions match too.
#[repr(C)]
pub struct PluginDeclaration {
    pub abi_version: u32,
    /// NUL-terminated `lmms-core` version the plugin was built against.
    pub core_version: *const c_char,
    /// NUL-terminated `rustc -V` of the compiler that built the plugin.
    pub rustc_version: *const c_char,
    /// NUL-terminated [`CORE_FEATURES`] of the plugin's `lmms-core`.
    pub core_features: *const c_char,
    /// NUL-terminated package name and version of the plugin crate.
    pub plugin_name: *const c_char,
    pub plugin_version: *const c_char,
    /// Returns the plugin's families; panics must not leave it (see [`guarded`]).
    pub register: RegisterFn,
}

// SAFETY: the pointers point to `'static` NUL-terminated string constants that nobody mutates,
// so sharing the declaration between threads is sound.
unsafe impl Sync for PluginDeclaration {}

impl PluginDeclaration {
    /// The declaration of a plugin built against this `lmms-core`; `name` and `version` must be
    /// NUL-terminated (the [`declare_plugin!`](crate::declare_plugin) macro passes the crate's
    /// package name and version).
    pub const fn new(name: &'static str, version: &'static str, register: RegisterFn) -> Self {
        PluginDeclaration {
            abi_version: PLUGIN_ABI_VERSION,
            core_version: c_str(concat!(env!("CARGO_PKG_VERSION"), "\0")),
            rustc_version: c_str(concat!(env!("LMMS_RUSTC_VERSION"), "\0")),
            core_features: c_str(if cfg!(feature = "cuda") {
                "cuda\0"
            } else {
                "\0"
            }),
            plugin_name: c_str(name),
            plugin_version: c_str(version),
            register,
        }
    }
}

/// A pointer to a NUL-terminated string constant; fails to compile (const panic) without the NUL.
pub const fn c_str(s: &'static str) -> *const c_char {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c.as_ptr(),
        Err(_) => panic!("plugin declaration strings must end with exactly one NUL"),
    }
}

/// Runs a plugin's registration inside the plugin and turns a panic into an error message, so
/// that no unwind ever crosses the library boundary.
pub fn guarded(
    families: fn() -> Vec<&'static FamilyDescriptor>,
) -> Result<Vec<&'static FamilyDescriptor>, String> {
    std::panic::catch_unwind(families).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_string());
        format!("the plugin's registration panicked: {message}")
    })
}

/// Exports the entry point of a dynamic plugin (a `cdylib` crate). The argument is a
/// `fn() -> Vec<&'static FamilyDescriptor>` returning the plugin's families:
///
/// ```ignore
/// fn families() -> Vec<&'static lmms_core::FamilyDescriptor> {
///     vec![&MY_FAMILY]
/// }
/// lmms_core::declare_plugin!(families);
/// ```
///
/// Use it once per library. `register_family!` is not needed in a dynamic plugin (its
/// `inventory` lives in the library, not in the host).
#[macro_export]
macro_rules! declare_plugin {
    ($families:path) => {
        #[doc(hidden)]
        fn __lmms_plugin_register() -> ::std::result::Result<
            ::std::vec::Vec<&'static $crate::FamilyDescriptor>,
            ::std::string::String,
        > {
            $crate::plugin::guarded($families)
        }

        #[doc(hidden)]
        static __LMMS_PLUGIN_DECLARATION: $crate::plugin::PluginDeclaration =
            $crate::plugin::PluginDeclaration::new(
                concat!(env!("CARGO_PKG_NAME"), "\0"),
                concat!(env!("CARGO_PKG_VERSION"), "\0"),
                __lmms_plugin_register,
            );

        /// The lmms plugin entry point (see `lmms_core::plugin`).
        #[unsafe(no_mangle)]
        pub extern "C" fn lmms_plugin_declaration() -> *const $crate::plugin::PluginDeclaration {
            &__LMMS_PLUGIN_DECLARATION
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Vec<&'static FamilyDescriptor> {
        Vec::new()
    }

    fn register_none() -> Result<Vec<&'static FamilyDescriptor>, String> {
        guarded(none)
    }

    fn panics() -> Vec<&'static FamilyDescriptor> {
        panic!("boom")
    }

    #[test]
    fn a_panicking_registration_is_an_error() {
        assert!(guarded(none).unwrap().is_empty());
        let err = guarded(panics).unwrap_err();
        assert!(err.contains("panicked: boom"), "{err}");
    }

    #[test]
    fn the_declaration_carries_this_build() {
        let d = PluginDeclaration::new("x\0", "1\0", register_none);
        assert_eq!(d.abi_version, PLUGIN_ABI_VERSION);
        // SAFETY: `new` stores pointers to NUL-terminated string constants.
        let core = unsafe { CStr::from_ptr(d.core_version) };
        assert_eq!(core.to_str().unwrap(), crate::CORE_VERSION);
        assert!(RUSTC_VERSION.starts_with("rustc "), "{RUSTC_VERSION}");
    }
}
