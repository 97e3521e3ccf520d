//! Image preprocessing that matches Hugging Face's image processors for the LLaVA families, on
//! the host (no tensors): decode -> RGB -> Pillow-exact resize -> crop / anyres tiles -> rescale
//! and normalize into float32 `[.., 3, H, W]`, plus the placeholder-token counts the HF
//! processors insert per image or video.
//!
//! The reference is what transformers 5 runs when torchvision is absent: the `*ImageProcessorPil`
//! classes (Pillow resize, NumPy float math), which also made the model fixtures.
//!
//! | HF class | here |
//! |---|---|
//! | `CLIPImageProcessor` (LLaVA-1.5) | [`ClipImageProcessor`] |
//! | `SiglipImageProcessor` (llava-interleave, OneVision video frames) | [`SiglipImageProcessor`] |
//! | `LlavaNextImageProcessor` | [`LlavaNextImageProcessor`] |
//! | `LlavaOnevisionImageProcessor` | [`LlavaOnevisionImageProcessor`] |
//!
//! Parity, measured by `collators/tests/image_processors.rs` against
//! `tests/fixtures/processors` (made by `tools/fixtures/processors.py`, transformers 5.23 /
//! Pillow 13): **bit-identical** float32 `pixel_values` (max abs diff 0, same checksum) for every
//! processor and every Pillow filter, on RGB, RGBA, L, LA, palette+transparency and 16-bit RGB
//! PNGs, small and real-sized (640x480 at CLIP 336, SigLIP 384, NeXT 336, OneVision 384), the
//! model fixtures' `pixel_values` included, and exact token counts and `image_sizes`. The
//! tolerance tests allow one uint8 level (`1 / 255 / std`); a separate test pins the measured
//! bit-identity, so a Pillow that rounds differently fails that one test only.
//!
//! Differences from HF that remain: images are always converted to RGB (HF keeps 1 or 4 channels
//! when `do_convert_rgb` is false); 16-bit grayscale keeps its high byte (Pillow's `I;16` -> RGB
//! clips, turning most pixels white); EXIF orientation is not applied (as HF's processors, unless
//! an image comes through HF's `load_image`); JPEG decoding may differ from Pillow's libjpeg by a
//! level or two (lossless formats decode exactly); the resize pass order is Pillow 13's (older
//! Pillows differ by a level on some sizes, see [`resize`]).
//!
//! Speed: CLIP 336 on a 640x480 image takes ~0.75 ms (release settings, one core), about 5x
//! HF's `CLIPImageProcessorPil` on the same image.

mod anyres;
mod base;
mod clip;
mod config;
mod llava_next;
mod llava_onevision;
pub mod mllama;
pub mod phi3_v;
pub mod qwen2_vl;
pub mod qwen2_vl_video;
pub mod qwen_vl;
mod resample;
mod siglip;
mod tokens;
mod transforms;
pub mod xcomposer2;

pub use anyres::{AnyresBatch, AnyresImage, patch_output_size, select_best_resolution};
pub use base::{
    BaseImageProcessor, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
};
pub use clip::ClipImageProcessor;
pub use config::{
    Channels, ImageProcessorConfig, PREPROCESSOR_CONFIG, PROCESSOR_CONFIG, ProcessorConfig, Size,
    SizeDict, SizeValue,
};
pub use llava_next::{LlavaNextImageProcessor, NEXT_DEFAULT_PINPOINTS};
pub use llava_onevision::{LlavaOnevisionImageProcessor, onevision_default_pinpoints};
pub use resample::{Resample, resize, resize_window};
pub use siglip::SiglipImageProcessor;
pub use tokens::{
    FeatureSelect, NextTokens, OnevisionTokens, llava_num_image_tokens, unpadded_features,
};
pub use transforms::{Normalize, center_crop, convert_to_rgb};

use ::image::RgbImage;
use lmms_core::tensor_file::HostTensor;
use lmms_core::{Error, Result};
use std::path::Path;

/// Preprocessed pixels: row-major float32 `data` of the given `shape`
/// (`[3, H, W]`, `[N, 3, H, W]` or `[N, tiles, 3, H, W]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PixelBatch {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl PixelBatch {
    /// Panics if `data.len()` is not the product of `shape`.
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Self {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "PixelBatch data/shape mismatch"
        );
        PixelBatch { data, shape }
    }
}

impl From<PixelBatch> for HostTensor<f32> {
    fn from(p: PixelBatch) -> Self {
        HostTensor {
            shape: p.shape,
            data: p.data,
        }
    }
}

/// Decodes an image file (format from its content) and converts it to RGB as HF does
/// ([`convert_to_rgb`]). Errors name the file.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes).map_err(|reason| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a decodable image: {reason}"),
            ),
        )
    })
}

/// Decodes image bytes (format from the content) and converts them to RGB.
pub fn decode_image(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let img = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    Ok(convert_to_rgb(img))
}

/// Any of the supported processors, chosen by the config's `image_processor_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageProcessor {
    Clip(ClipImageProcessor),
    Siglip(SiglipImageProcessor),
    LlavaNext(LlavaNextImageProcessor),
    LlavaOnevision(LlavaOnevisionImageProcessor),
}

impl ImageProcessor {
    /// The processor named by `image_processor_type` (or an older `feature_extractor_type`).
    pub fn from_config(cfg: &ImageProcessorConfig) -> Result<Self> {
        let Some(name) = cfg.class_name() else {
            return Err(
                cfg.err("no `image_processor_type`: cannot tell which image processor this is")
            );
        };
        Ok(match name.as_str() {
            "CLIPImageProcessor" => ImageProcessor::Clip(ClipImageProcessor::from_config(cfg)?),
            "SiglipImageProcessor" => {
                ImageProcessor::Siglip(SiglipImageProcessor::from_config(cfg)?)
            }
            "LlavaNextImageProcessor" => {
                ImageProcessor::LlavaNext(LlavaNextImageProcessor::from_config(cfg)?)
            }
            "LlavaOnevisionImageProcessor" => {
                ImageProcessor::LlavaOnevision(LlavaOnevisionImageProcessor::from_config(cfg)?)
            }
            other => {
                return Err(cfg.err(format!(
                    "image processor `{other}` is not supported (supported: CLIPImageProcessor, \
                     SiglipImageProcessor, LlavaNextImageProcessor, LlavaOnevisionImageProcessor)"
                )));
            }
        })
    }

    /// Reads a model directory ([`ImageProcessorConfig::from_model_dir`]) and picks the processor.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(&ImageProcessorConfig::from_model_dir(dir)?)
    }

    /// The shared per-image pipeline settings.
    pub fn base(&self) -> &BaseImageProcessor {
        match self {
            ImageProcessor::Clip(p) => &p.base,
            ImageProcessor::Siglip(p) => &p.base,
            ImageProcessor::LlavaNext(p) => &p.base,
            ImageProcessor::LlavaOnevision(p) => &p.base,
        }
    }
}
