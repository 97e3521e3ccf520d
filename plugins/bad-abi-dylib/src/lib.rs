//! A library that claims to be an lmms plugin of plugin ABI version 999. `lmms` must refuse it
//! after reading the C-safe header of its declaration, with a message naming both ABI versions,
//! and never call the rest. The header's layout is the one `lmms_core::plugin::PluginDeclaration`
//! keeps in every ABI version: a `u32` and two pointers to NUL-terminated strings.

use std::ffi::c_char;

/// The frozen header of a plugin declaration.
#[repr(C)]
pub struct DeclarationHeader {
    pub abi_version: u32,
    pub core_version: *const c_char,
    pub rustc_version: *const c_char,
}

// SAFETY: the pointers point to immutable `'static` string literals.
unsafe impl Sync for DeclarationHeader {}

/// The ABI version this library claims; no lmms has it.
pub const BAD_ABI_VERSION: u32 = 999;

static DECLARATION: DeclarationHeader = DeclarationHeader {
    abi_version: BAD_ABI_VERSION,
    core_version: c"99.0.0".as_ptr(),
    rustc_version: c"rustc 0.0.0 (bad-abi test library)".as_ptr(),
};

/// The plugin entry point's name and signature, with a header no lmms accepts.
#[unsafe(no_mangle)]
pub extern "C" fn lmms_plugin_declaration() -> *const DeclarationHeader {
    &DECLARATION
}
