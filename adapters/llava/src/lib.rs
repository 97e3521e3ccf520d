//! The LLaVA families: LLaVA-1.5 and LLaVA-Interleave (`LlavaForConditionalGeneration`),
//! LLaVA-NeXT / 1.6 (`LlavaNextForConditionalGeneration`), LLaVA-NeXT-Video and LLaVA-OneVision.
//! Mirrors transformers' `models/llava*/modeling_llava*.py`.

pub mod collate;
pub mod config;
pub mod family;
pub mod model;
pub mod pack;

pub use family::LlavaFamily;

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

const STRATEGIES: &[S] = &[S::Full, S::Lora, S::Qlora, S::VisionFull, S::VisionLora];
const MEDIA: &[M] = &[M::Image, M::MultiImage, M::TextOnly];
// LLaVA-Interleave takes videos as frames-as-images, which the collator does not do yet.
const WITH_VIDEO: &[M] = &[M::Image, M::MultiImage, M::Video, M::TextOnly];
pub static LLAVA: FamilyDescriptor = FamilyDescriptor {
    id: "llava",
    name: "LLaVA-1.5 / LLaVA-Interleave",
    architectures: &["LlavaForConditionalGeneration"],
    model_types: &["llava"],
    models: &[
        ModelEntry::new("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf"),
        ModelEntry::new("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf"),
        ModelEntry::new(
            "llava-interleave-qwen-0.5b",
            "llava-hf/llava-interleave-qwen-0.5b-hf",
        ),
        ModelEntry::new(
            "llava-interleave-qwen-7b",
            "llava-hf/llava-interleave-qwen-7b-hf",
        ),
    ],
    modalities: MEDIA,
    strategies: STRATEGIES,
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&LlavaFamily),
};
lmms_core::register_family!(LLAVA);

pub static LLAVA_NEXT: FamilyDescriptor = FamilyDescriptor {
    id: "llava_next",
    name: "LLaVA-NeXT (LLaVA-1.6)",
    architectures: &["LlavaNextForConditionalGeneration"],
    model_types: &["llava_next"],
    models: &[
        ModelEntry::new("llava-1.6-vicuna-7b", "llava-hf/llava-v1.6-vicuna-7b-hf"),
        ModelEntry::new("llava-1.6-vicuna-13b", "llava-hf/llava-v1.6-vicuna-13b-hf"),
    ],
    modalities: MEDIA,
    strategies: STRATEGIES,
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&LlavaFamily),
};
lmms_core::register_family!(LLAVA_NEXT);

pub static LLAVA_NEXT_VIDEO: FamilyDescriptor = FamilyDescriptor {
    id: "llava_next_video",
    name: "LLaVA-NeXT-Video",
    architectures: &["LlavaNextVideoForConditionalGeneration"],
    model_types: &["llava_next_video"],
    models: &[
        ModelEntry::new("llava-next-video-7b", "llava-hf/LLaVA-NeXT-Video-7B-hf"),
        ModelEntry::new(
            "llava-next-video-7b-32k",
            "llava-hf/LLaVA-NeXT-Video-7B-32K-hf",
        ),
        ModelEntry::new("llava-next-video-34b", "llava-hf/LLaVA-NeXT-Video-34B-hf"),
    ],
    modalities: WITH_VIDEO,
    strategies: STRATEGIES,
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&LlavaFamily),
};
lmms_core::register_family!(LLAVA_NEXT_VIDEO);

pub static LLAVA_ONEVISION: FamilyDescriptor = FamilyDescriptor {
    id: "llava_onevision",
    name: "LLaVA-OneVision",
    architectures: &["LlavaOnevisionForConditionalGeneration"],
    model_types: &["llava_onevision"],
    models: &[
        ModelEntry::new(
            "llava-onevision-0.5b-ov",
            "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        ),
        ModelEntry::new(
            "llava-onevision-7b-ov",
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        ),
        ModelEntry::new(
            "llava-onevision-72b-ov",
            "llava-hf/llava-onevision-qwen2-72b-ov-hf",
        ),
    ],
    modalities: WITH_VIDEO,
    strategies: STRATEGIES,
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&LlavaFamily),
};
lmms_core::register_family!(LLAVA_ONEVISION);
