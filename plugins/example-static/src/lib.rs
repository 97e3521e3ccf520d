//! An example third-party adapter crate. It depends only on `lmms-core` and registers its family
//! with [`lmms_core::register_family!`]; linking it into a binary (a `use lmms_example_static as
//! _;` anywhere) is all it takes for the family to appear in `lmms supported-models`. No list in
//! lmms itself is edited.
//!
//! The family here is a LLaVA variant with a different projector; its model code lands with the
//! plugin API (until then it is listed as planned).

use lmms_core::{FamilyDescriptor, Modality, ModelEntry, Status, StrategyKind};

pub static EXAMPLE_STATIC: FamilyDescriptor = FamilyDescriptor {
    id: "example_static_llava",
    name: "Example static plugin: LLaVA with a linear projector",
    architectures: &["ExampleLinearLlavaForConditionalGeneration"],
    model_types: &["example_linear_llava"],
    models: &[ModelEntry::new(
        "example-linear-llava-tiny",
        "lmms-examples/linear-llava-tiny",
    )],
    modalities: &[Modality::Image, Modality::TextOnly],
    strategies: &[StrategyKind::Full, StrategyKind::Lora],
    status: Status::Planned {
        note: "example plugin: model code not landed yet",
    },
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: None,
};
lmms_core::register_family!(EXAMPLE_STATIC);
