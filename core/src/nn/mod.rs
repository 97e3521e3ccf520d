//! Shared layers, one copy each, composed by every family: linear (with LoRA), norms,
//! embeddings, rotary position embeddings, attention, MLPs. Module field names mirror the HF
//! weight names so that paths in a model equal paths in its checkpoint.

pub mod activation;
pub mod attention;
pub mod cross_attention;
pub mod dropout;
pub mod embedding;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod mrope;
pub mod norm;
pub mod partial_lora;
pub mod plan;
pub mod quant;
pub mod recompute;
pub mod rope;

pub use activation::Activation;
pub use attention::{Attention, AttentionConfig, AttentionMask, QkvLayout, QkvProj, SeparateQkv};
pub use embedding::Embedding;
pub use linear::Linear;
pub use lora::{LoraAdapter, LoraInit};
pub use mlp::{GatedMlp, Mlp};
pub use norm::{LayerNorm, RmsNorm};
pub use partial_lora::{PartialLora, PartialLoraSpec};
pub use plan::{AdapterWeights, PartPlan};
pub use quant::{Q4Weight, QuantSpec};
pub use rope::{RopeConfig, RopeScaling, RotaryEmbedding};
