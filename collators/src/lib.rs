//! `lmms-collators`: dataset files -> [`lmms_core::data::Sample`]s -> family batches (chat
//! templates, media token expansion, label masking, HF-exact image preprocessing).
//!
//! - [`dataset`]: dataset file formats and their validation.
//! - [`image`]: image processors matching the HF ones, pixel for pixel where the resize allows.
