//! Qwen2-VL (`Qwen2VLForConditionalGeneration`) and Qwen2.5-VL
//! (`Qwen2_5_VLForConditionalGeneration`): two families, because the 2.5 vision tower (RMSNorm,
//! SwiGLU, window attention) is not the 2.0 one. Mirrors transformers'
//! `models/qwen2_vl/modeling_qwen2_vl.py` and `models/qwen2_5_vl/modeling_qwen2_5_vl.py`.

pub mod collate;
pub mod config;
pub mod family;
pub mod model;
pub mod positions;
pub mod vision;

pub use family::{QWEN2_5_VL_RUNTIME, QWEN2_VL_RUNTIME, QwenVlFamily};

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

const STRATEGIES: &[S] = &[S::Full, S::Lora, S::VisionFull, S::VisionLora];
const MODALITIES: &[M] = &[M::Image, M::MultiImage, M::Video, M::TextOnly];

pub static QWEN2_VL: FamilyDescriptor = FamilyDescriptor {
    id: "qwen2_vl",
    name: "Qwen2-VL",
    architectures: &["Qwen2VLForConditionalGeneration"],
    model_types: &["qwen2_vl"],
    models: &[
        ModelEntry::new("qwen2-vl-2b-instruct", "Qwen/Qwen2-VL-2B-Instruct"),
        ModelEntry::new("qwen2-vl-7b-instruct", "Qwen/Qwen2-VL-7B-Instruct"),
        ModelEntry::new("qwen2-vl-72b-instruct", "Qwen/Qwen2-VL-72B-Instruct"),
    ],
    modalities: MODALITIES,
    strategies: STRATEGIES,
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&QWEN2_VL_RUNTIME),
};
lmms_core::register_family!(QWEN2_VL);

pub static QWEN2_5_VL: FamilyDescriptor = FamilyDescriptor {
    id: "qwen2_5_vl",
    name: "Qwen2.5-VL",
    architectures: &["Qwen2_5_VLForConditionalGeneration"],
    model_types: &["qwen2_5_vl"],
    models: &[
        ModelEntry::new("qwen2.5-vl-3b-instruct", "Qwen/Qwen2.5-VL-3B-Instruct"),
        ModelEntry::new("qwen2.5-vl-7b-instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
        ModelEntry::new("qwen2.5-vl-72b-instruct", "Qwen/Qwen2.5-VL-72B-Instruct"),
    ],
    modalities: MODALITIES,
    strategies: STRATEGIES,
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&QWEN2_5_VL_RUNTIME),
};
lmms_core::register_family!(QWEN2_5_VL);
