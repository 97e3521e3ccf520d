//! InternLM-XComposer2-VL (`InternLMXComposer2ForCausalLM`, hub remote code `modeling_internlm_xcomposer2.py`): CLIP at 490px, `vision_proj`, InternLM2 with Partial-LoRA on image rows.

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
    status: Status::Planned {
        note: "model code and HF parity not landed yet",
    },
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: None,
};
lmms_core::register_family!(INTERNLM_XCOMPOSER2);
