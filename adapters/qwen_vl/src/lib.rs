//! Qwen-VL-Chat (`QWenLMHeadModel`, hub remote code `modeling_qwen.py` / `visual.py`): QWen LLM with the ViT-bigG and its 256-query cross-attention resampler.

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static QWEN_VL: FamilyDescriptor = FamilyDescriptor {
    id: "qwen_vl",
    name: "Qwen-VL-Chat",
    architectures: &["QWenLMHeadModel"],
    model_types: &["qwen"],
    models: &[ModelEntry::new("qwen-vl-chat", "Qwen/Qwen-VL-Chat")],
    modalities: &[M::Image, M::MultiImage, M::TextOnly],
    strategies: &[S::Full, S::Lora, S::VisionFull, S::VisionLora],
    status: Status::Planned {
        note: "model code and HF parity not landed yet",
    },
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: None,
};
lmms_core::register_family!(QWEN_VL);
