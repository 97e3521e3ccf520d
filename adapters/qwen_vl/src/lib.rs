//! Qwen-VL-Chat (`QWenLMHeadModel`, hub remote code `modeling_qwen.py` / `visual.py`): QWen LLM
//! (the shared decoder with [`lmms_core::llm::LlmNames::QWEN`], stepwise NTK RoPE and
//! log-scaled attention) with the ViT-bigG and its 256-query cross-attention resampler, whose
//! features replace the positions inside each `<img>...</img>` span.

pub mod collate;
pub mod config;
pub mod family;
pub mod model;
pub mod visual;

pub use collate::QwenVlCollator;
pub use config::QwenVlConfig;
pub use family::{QwenVlFamily, QwenVlInputs};
pub use model::QwenVl;

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static QWEN_VL: FamilyDescriptor = FamilyDescriptor {
    id: "qwen_vl",
    name: "Qwen-VL-Chat",
    architectures: &["QWenLMHeadModel"],
    model_types: &["qwen"],
    models: &[ModelEntry::new("qwen-vl-chat", "Qwen/Qwen-VL-Chat")],
    modalities: &[M::Image, M::MultiImage, M::TextOnly],
    strategies: &[S::Full, S::Lora, S::VisionFull, S::VisionLora],
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&QwenVlFamily),
};
lmms_core::register_family!(QWEN_VL);
