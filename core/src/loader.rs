//! [`ModelLoader`]: how a family builds its model from a Hugging Face model directory on a
//! device, with the dtype and training strategy applied while loading (LoRA wrapped around the
//! targeted linear layers, frozen weights quantized for QLoRA), and optionally a PEFT adapter.

use crate::error::Result;
use crate::model_dir::ModelDir;
use crate::strategy::TrainStrategy;
use burn::module::Module;
use burn::tensor::backend::Backend;
use std::path::PathBuf;

/// The float type weights are held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for DType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            other => Err(format!("unsupported dtype `{other}`: use f32 or bf16")),
        }
    }
}

/// Options for [`ModelLoader::load`].
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions<'a> {
    pub dtype: DType,
    pub strategy: &'a dyn TrainStrategy,
    /// A PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) to load
    /// on top of the base weights.
    pub adapter: Option<&'a PathBuf>,
}

/// Loads one family's model. Loading is strict: a missing or unexpected tensor, or a shape
/// mismatch, is an error naming the tensor and the file.
pub trait ModelLoader: Send + Sync {
    type Model<B: Backend>: Module<B>;

    fn load<B: Backend>(
        &self,
        dir: &ModelDir,
        device: &B::Device,
        options: &LoadOptions<'_>,
    ) -> Result<Self::Model<B>>;
}
