//! The Llama-style decoder LLMs that most families use as their language model (Llama/Vicuna,
//! Mistral, Qwen2, and with other module names InternLM2, Phi-3, QWen): config, decoder layers,
//! and the causal LM head.

pub mod config;
pub mod decoder;
pub mod internlm2;
pub mod kv_cache;
pub mod loss;
mod splice;

pub use config::TextConfig;
pub use decoder::{CausalLm, DecoderLayer, LlmNames};
pub use kv_cache::{CrossState, KvCache, LayerKv};
