//! Vision transformers shared by the families: CLIP (`modeling_clip.py`, `CLIPVisionTransformer`)
//! and SigLIP (`modeling_siglip.py`, `SiglipVisionTransformer`), one encoder with the
//! differences as parameters.

pub mod anyres;
pub mod config;
pub mod encoder;

pub use config::{VisionConfig, VisionKind};
pub use encoder::VisionTransformer;
