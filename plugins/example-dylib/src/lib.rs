//! An example dynamic lmms plugin: a shared library that `lmms --plugin <path>` (or
//! `LMMS_PLUGIN_PATH`, or the plugins directory) loads at run time. Its family is a real one: a
//! LLaVA-1.5 whose projector is a single linear layer instead of LLaVA's two-layer MLP, composed
//! from `lmms-core` layers and reusing the LLaVA crate's config, collator and key layouts. It
//! passes `lmms parity` on `tests/fixtures/example-dylib` (made from transformers by
//! `tools/fixtures/example_dylib.py`).
//!
//! All a dynamic plugin needs is a `cdylib` crate, its descriptors, and one
//! [`lmms_core::declare_plugin!`] naming the function that returns them.

pub mod family;
pub mod model;

pub use family::LinearLlavaFamily;

use lmms_core::{FamilyDescriptor, Modality, ModelEntry, Status, StrategyKind};

pub static EXAMPLE_DYLIB_LLAVA: FamilyDescriptor = FamilyDescriptor {
    id: "example_dylib_llava",
    name: "Example dynamic plugin: LLaVA with a linear projector",
    // The architecture the fixture generator's transformers subclass saves in config.json.
    architectures: &["LinearProjectorLlavaForConditionalGeneration"],
    // `model_type` stays `llava` in such configs; that belongs to the built-in family, so this
    // family is found by its architecture only.
    model_types: &[],
    models: &[ModelEntry::new(
        "example-dylib-linear-llava-tiny",
        "lmms-examples/linear-projector-llava-tiny",
    )],
    modalities: &[Modality::Image, Modality::MultiImage, Modality::TextOnly],
    strategies: &[
        StrategyKind::Full,
        StrategyKind::Lora,
        StrategyKind::Qlora,
        StrategyKind::VisionFull,
        StrategyKind::VisionLora,
    ],
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&LinearLlavaFamily),
};

/// The plugin's families, handed to `lmms` when it loads the library.
fn families() -> Vec<&'static FamilyDescriptor> {
    // Lets the tests check that a panicking registration is an error in the host, not a crash.
    if std::env::var_os("LMMS_EXAMPLE_DYLIB_PANIC").is_some() {
        panic!("LMMS_EXAMPLE_DYLIB_PANIC is set");
    }
    vec![&EXAMPLE_DYLIB_LLAVA]
}

lmms_core::declare_plugin!(families);
