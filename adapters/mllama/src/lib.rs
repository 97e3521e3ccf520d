//! Llama-3.2-Vision (`MllamaForConditionalGeneration`): tiled vision encoder and gated
//! cross-attention LLM. Mirrors transformers' `models/mllama/modeling_mllama.py`
//! (model), `image_processing_mllama.py` and `processing_mllama.py` (collator).

pub mod collate;
pub mod config;
pub mod family;
pub mod model;
pub mod text;
pub mod vision;

pub use family::{MLLAMA_RUNTIME, MllamaFamily};

use lmms_core::{FamilyDescriptor, Modality as M, ModelEntry, Status, StrategyKind as S};

pub static MLLAMA: FamilyDescriptor = FamilyDescriptor {
    id: "mllama",
    name: "Llama-3.2-Vision (Mllama)",
    architectures: &["MllamaForConditionalGeneration"],
    model_types: &["mllama"],
    models: &[
        ModelEntry::new(
            "llama-3.2-11b-vision-instruct",
            "meta-llama/Llama-3.2-11B-Vision-Instruct",
        ),
        ModelEntry::new(
            "llama-3.2-90b-vision-instruct",
            "meta-llama/Llama-3.2-90B-Vision-Instruct",
        ),
    ],
    modalities: &[M::Image, M::MultiImage, M::TextOnly],
    strategies: &[S::Full, S::Lora, S::Qlora, S::VisionFull, S::VisionLora],
    status: Status::Implemented,
    crate_name: env!("CARGO_PKG_NAME"),
    runtime: Some(&MLLAMA_RUNTIME),
};
lmms_core::register_family!(MLLAMA);
