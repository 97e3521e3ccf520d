//! Phi-3-Vision (`Phi3VForCausalLM`, the hub's remote code `modeling_phi3_v.py` /
//! `image_embedding_phi3_v.py` / `processing_phi3_v.py`): the Phi-3 LLM (fused `qkv_proj` and
//! `gate_up_proj`, su / longrope RoPE) composed from the shared decoder, CLIP ViT-L/14-336 with
//! the HD transform, learnable separators and an MLP projection; images are marked by negative
//! ids in `input_ids`. Phi-3.5-vision ships the same code and config layout.

pub mod collate;
pub mod config;
pub mod family;
pub mod image_embedding;
pub mod model;

pub use collate::Phi3VCollator;
pub use config::Phi3VConfig;
pub use family::{Phi3VFamily, Phi3VInputs};

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static PHI3_V: FamilyDescriptor = FamilyDescriptor {
    id: "phi3_v",
    name: "Phi-3-Vision / Phi-3.5-Vision",
    architectures: &["Phi3VForCausalLM"],
    model_types: &["phi3_v"],
    models: &[
        ModelEntry::new("phi3-v", "microsoft/Phi-3-vision-128k-instruct"),
        ModelEntry::new("phi3.5-v", "microsoft/Phi-3.5-vision-instruct"),
    ],
    modalities: &[M::Image, M::MultiImage, M::TextOnly],
    strategies: &[S::Full, S::Lora, S::Qlora, S::VisionFull, S::VisionLora],
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&Phi3VFamily),
};
lmms_core::register_family!(PHI3_V);
