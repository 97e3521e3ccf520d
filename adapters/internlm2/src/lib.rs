//! InternLM2 chat LLMs (`InternLM2ForCausalLM`, hub remote code `modeling_internlm2.py`): grouped fused `wqkv`, dynamic NTK RoPE. The XTuner assistant workflow's base model.

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static INTERNLM2: FamilyDescriptor = FamilyDescriptor {
    id: "internlm2",
    name: "InternLM2 (chat)",
    architectures: &["InternLM2ForCausalLM"],
    model_types: &["internlm2"],
    models: &[
        ModelEntry::new("internlm2-chat-1_8b", "internlm/internlm2-chat-1_8b"),
        ModelEntry::new("internlm2-chat-7b", "internlm/internlm2-chat-7b"),
    ],
    modalities: &[M::TextOnly],
    strategies: &[S::Full, S::Lora],
    status: Status::Planned {
        note: "model code and HF parity not landed yet",
    },
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: None,
};
lmms_core::register_family!(INTERNLM2);
