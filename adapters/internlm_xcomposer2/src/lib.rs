//! InternLM-XComposer2-VL (`InternLMXComposer2ForCausalLM`, hub remote code
//! `modeling_internlm_xcomposer2.py` + `modeling_internlm2.py` + `build_mlp.py`): CLIP
//! ViT-L/14-336 run at 490px, the `vision_proj` MLP, InternLM2 with Partial-LoRA (PLoRA) on the
//! image rows, image embeddings spliced where `<ImageHere>` stands.

pub mod collate;
pub mod config;
pub mod family;
pub mod model;

pub use collate::XComposer2Collator;
pub use config::XComposer2Config;
pub use family::{XComposer2Family, XComposer2Inputs};
pub use model::XComposer2;

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static INTERNLM_XCOMPOSER2: FamilyDescriptor = FamilyDescriptor {
    id: "internlm_xcomposer2",
    name: "InternLM-XComposer2-VL",
    architectures: &["InternLMXComposer2ForCausalLM"],
    model_types: &["internlmxcomposer2"],
    models: &[ModelEntry::new(
        "internlm-xcomposer2-vl-7b",
        "internlm/internlm-xcomposer2-vl-7b",
    )],
    modalities: &[M::Image, M::MultiImage, M::TextOnly],
    strategies: &[S::Full, S::Lora, S::VisionFull],
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&XComposer2Family),
};
lmms_core::register_family!(INTERNLM_XCOMPOSER2);
