//! `lmms-collators`: dataset files -> [`lmms_core::data::Sample`]s -> family batches (chat
//! templates, media token expansion, label masking, HF-exact image preprocessing).
//!
//! - [`dataset`]: dataset file formats and their validation.
//! - [`template`]: chat templates (found where HF keeps them, rendered as transformers does,
//!   built-in fallbacks).
//! - [`text`]: tokenization and label masking (only assistant replies train), media
//!   placeholder expansion hook, length limits.
//! - [`image`]: image processors matching the HF ones, pixel for pixel where the resize allows.
//! - [`video`]: frames decoded with FFmpeg and sampled as transformers samples them, and the
//!   LLaVA video processors.

pub mod dataset;
pub mod image;
pub mod sentencepiece;
pub mod template;
pub mod text;
pub mod tiktoken;
pub mod video;
