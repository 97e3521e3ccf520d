//! What a model family tells the registry about itself: its id, the Hugging Face
//! `architectures` / `model_type` strings it handles, the model ids users type, what inputs it
//! takes and which training strategies work. Descriptors are `const` data so that any crate, a
//! built-in adapter or a third-party one, can register with [`register_family!`](crate::register_family).

use serde::Serialize;
use std::fmt;

/// A kind of input a model accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Modality {
    /// One image per sample.
    Image,
    /// Several images in one sample.
    MultiImage,
    /// Video clips (sampled frames).
    Video,
    /// Samples without any image or video.
    TextOnly,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::MultiImage => "multi-image",
            Modality::Video => "video",
            Modality::TextOnly => "text-only",
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A training strategy a family supports (see [`crate::strategy`] for how one is configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Full fine-tuning of the LLM.
    Full,
    /// LoRA on the LLM.
    Lora,
    /// LoRA on a 4-bit quantized, frozen LLM.
    Qlora,
    /// Full fine-tuning of the vision tower.
    VisionFull,
    /// LoRA on the vision tower.
    VisionLora,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Full => "full",
            StrategyKind::Lora => "lora",
            StrategyKind::Qlora => "qlora",
            StrategyKind::VisionFull => "vision-full",
            StrategyKind::VisionLora => "vision-lora",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a family can be used today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    /// Passes `lmms parity` against HF transformers and trains.
    Implemented,
    /// The model matches HF transformers (`lmms parity` passes on its fixtures) but it cannot
    /// be trained yet; `note` says what is missing.
    ParityOnly { note: &'static str },
    /// Described and listed, but its model code has not landed; `note` says what is missing.
    Planned { note: &'static str },
}

impl Status {
    pub fn is_implemented(self) -> bool {
        matches!(self, Status::Implemented)
    }

    /// What is missing, for anything short of implemented.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Status::Implemented => None,
            Status::ParityOnly { note } | Status::Planned { note } => Some(note),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Implemented => "implemented",
            Status::ParityOnly { .. } => "parity-only",
            Status::Planned { .. } => "planned",
        }
    }
}

/// One user-facing model id, e.g. `qwen2-vl-7b-instruct` -> `Qwen/Qwen2-VL-7B-Instruct`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ModelEntry {
    pub id: &'static str,
    /// The Hugging Face hub path the id stands for.
    pub hf_path: &'static str,
    /// Overrides the family's modalities where one checkpoint differs (empty = the family's).
    pub modalities: &'static [Modality],
}

impl ModelEntry {
    pub const fn new(id: &'static str, hf_path: &'static str) -> Self {
        ModelEntry {
            id,
            hf_path,
            modalities: &[],
        }
    }
}

/// Everything the registry knows about a model family.
#[derive(Debug, Serialize)]
pub struct FamilyDescriptor {
    /// Stable family id, snake_case, e.g. `llava_next`.
    pub id: &'static str,
    /// Human name, e.g. `LLaVA-NeXT (LLaVA-1.6)`.
    pub name: &'static str,
    /// HF `architectures` entries in `config.json` this family loads.
    pub architectures: &'static [&'static str],
    /// HF `model_type` values this family loads (used when `architectures` is absent).
    pub model_types: &'static [&'static str],
    pub models: &'static [ModelEntry],
    pub modalities: &'static [Modality],
    pub strategies: &'static [StrategyKind],
    pub status: Status,
    /// The crate that registered the family (`env!("CARGO_PKG_NAME")`).
    pub crate_name: &'static str,
    /// The model code; `None` while the family is planned.
    #[serde(skip)]
    pub runtime: Option<&'static dyn crate::runtime::DynFamily>,
}

impl FamilyDescriptor {
    /// The modalities of one of this family's models.
    pub fn modalities_of(&self, model: &ModelEntry) -> &'static [Modality] {
        if model.modalities.is_empty() {
            self.modalities
        } else {
            model.modalities
        }
    }

    pub fn handles_architecture(&self, arch: &str) -> bool {
        self.architectures.contains(&arch)
    }

    pub fn handles_model_type(&self, model_type: &str) -> bool {
        self.model_types.contains(&model_type)
    }
}

/// Registers a [`FamilyDescriptor`] (a `static` or `const` item) with the global registry.
///
/// ```ignore
/// pub static MY_FAMILY: lmms_core::FamilyDescriptor = lmms_core::FamilyDescriptor { .. };
/// lmms_core::register_family!(MY_FAMILY);
/// ```
#[macro_export]
macro_rules! register_family {
    ($descriptor:path) => {
        $crate::inventory::submit! {
            $crate::registry::FamilyRegistration::new(&$descriptor)
        }
    };
}
