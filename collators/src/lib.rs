//! `lmms-collators`: dataset files -> [`lmms_core::data::Sample`]s -> family batches (chat
//! templates, media token expansion, label masking, HF-exact image preprocessing). The dataset
//! readers and per-family collators land with the data pipeline; this crate holds them so that
//! adapters and the CLI share one copy.
