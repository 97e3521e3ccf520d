//! InternLM2 chat LLMs (`InternLM2ForCausalLM`, hub remote code `modeling_internlm2.py`): the
//! shared Llama-style decoder with InternLM2's module names, a grouped fused `wqkv`
//! ([`lmms_core::nn::QkvLayout::Grouped`]) and dynamic NTK RoPE. The XTuner assistant
//! workflow's base model.

pub mod collate;
pub mod family;

pub use collate::InternLm2Collator;
pub use family::InternLm2Family;
pub use lmms_core::llm::internlm2::InternLm2Config;

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static INTERNLM2: FamilyDescriptor = FamilyDescriptor {
    id: "internlm2",
    name: "InternLM2 (chat)",
    architectures: &["InternLM2ForCausalLM"],
    model_types: &["internlm2"],
    models: &[
        ModelEntry::new("internlm2-chat-1_8b", "internlm/internlm2-chat-1_8b"),
        ModelEntry::new("internlm2-chat-7b", "internlm/internlm2-chat-7b"),
        ModelEntry::new("internlm2-1_8b", "internlm/internlm2-1_8b"),
        ModelEntry::new("internlm2-7b", "internlm/internlm2-7b"),
    ],
    modalities: &[M::TextOnly],
    strategies: &[S::Full, S::Lora, S::Qlora],
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&InternLm2Family),
};
lmms_core::register_family!(INTERNLM2);
