//! `lmms-core`: what every model family and the `lmms` binary share.
//!
//! - [`registry`]: model families and their model ids, collected from every linked crate with
//!   `inventory` (no central list).
//! - [`model_dir`]: reading a Hugging Face model directory (`config.json`, safetensors shards,
//!   tokenizer and processor files) and resolving a model id to one.
//! - [`loader`], [`collator`], [`strategy`]: the three traits a family implements or uses:
//!   load weights onto a device, turn samples into a batch, decide what trains and how.
//! - [`data`]: the in-memory conversation sample every dataset format is parsed into.
//! - [`plugin`]: the API of dynamic plugins (shared libraries loaded at run time).
//! - [`backend`]: the burn backends `lmms` runs on (CPU by default, CUDA behind `cuda`).

pub mod backend;
pub mod bench;
pub mod collator;
pub mod data;
pub mod decode;
pub mod error;
pub mod export;
pub mod family;
pub mod fs;
pub mod generate;
pub mod llm;
pub mod loader;
pub mod model_dir;
pub mod nn;
pub mod parity;
pub mod plugin;
pub mod registry;
pub mod runtime;
pub mod strategy;
pub mod tensor_file;
pub mod train;
pub mod vision;
pub mod weights;

pub use burn;
pub use error::{Error, Result};
pub use family::{FamilyDescriptor, Modality, ModelEntry, Status, StrategyKind};
#[doc(hidden)]
pub use inventory;
pub use registry::Registry;

/// Version of this crate; plugins report the one they were built against.
pub const CORE_VERSION: &str = env!("CARGO_PKG_VERSION");
