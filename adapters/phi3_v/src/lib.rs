//! Phi-3-Vision (`Phi3VForCausalLM`, hub remote code `modeling_phi3_v.py` / `image_embedding_phi3_v.py`): Phi-3 LLM with fused qkv/gate_up and su-scaled RoPE, CLIP with the HD transform.

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static PHI3_V: FamilyDescriptor = FamilyDescriptor {
    id: "phi3_v",
    name: "Phi-3-Vision",
    architectures: &["Phi3VForCausalLM"],
    model_types: &["phi3_v"],
    models: &[ModelEntry::new(
        "phi3-v",
        "microsoft/Phi-3-vision-128k-instruct",
    )],
    modalities: &[M::Image, M::MultiImage, M::TextOnly],
    strategies: &[S::Full, S::Lora, S::VisionFull, S::VisionLora],
    status: Status::Planned {
        note: "model code and HF parity not landed yet",
    },
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: None,
};
lmms_core::register_family!(PHI3_V);
