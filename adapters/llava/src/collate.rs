//! [`LlavaCollator`]: dataset samples -> [`LlavaInputs`] for LLaVA-1.5 / Interleave, LLaVA-NeXT,
//! LLaVA-NeXT-Video and LLaVA-OneVision, as the Hugging Face processors
//! (`LlavaProcessor`, `LlavaNextProcessor`, `LlavaOnevisionProcessor`) with
//! `apply_chat_template` make them, plus labels.
//!
//! Per sample:
//! 1. the conversation is rendered with the model's chat template (else a built-in one by LLM:
//!    `llava-1.5` for Llama/Vicuna/Mistral, `chatml` for Qwen2), as typed parts
//!    (`{"type": "image"}`, `{"type": "text"}`) when the template reads `type` (every llava-hf
//!    template does), as plain text with inline `<image>` otherwise;
//! 2. it is tokenized as a whole and labelled by [`lmms_collators::text`]: only assistant replies
//!    and their end-of-turn token train (an EOS is added after a reply the template ends with
//!    none), or everything with `train_on_everything`; a sample with nothing to train is an
//!    error naming it;
//! 3. each image placeholder becomes as many `image_token_id` ids as the model makes features
//!    for that image (anyres: from its size; OneVision: one tile per image in a multi-image
//!    sample, as HF), each video placeholder as many `video_token_id` ids as the model makes
//!    for `num_frames` frames (NeXT-Video: `frames * (side / 2)^2`; OneVision:
//!    `frames * ceil(side / 2)^2 + 1`) — HF's processor expands the same placeholder string
//!    before tokenizing, so the ids are the same;
//! 4. the tokenizer's own special tokens (Llama's BOS) are added unless the rendered text begins
//!    with the BOS token, as `ProcessorMixin.apply_chat_template` does;
//! 5. a sample longer than `model_max_length` (media tokens included; default: the LLM's
//!    `max_position_embeddings`) is never cut: it is left out and reported
//!    ([`OverLength::Skip`]) or is an error naming it ([`OverLength::Reject`]).
//!
//! The batch is right-padded to its longest sample (pad id from the tokenizer, else
//! `config.json`; attention mask 0, labels -100), and the images of all kept samples, in order,
//! go through the model's image processor ([`lmms_collators::image`], bit-identical to HF's):
//! `pixel_values` `[N, 3, H, W]` (LLaVA-1.5 / Interleave) or `[N, max_tiles, 3, H, W]` zero-padded
//! plus `image_sizes` `[N, 2]` (NeXT, OneVision). Videos (NeXT-Video, OneVision) are decoded
//! with FFmpeg, `num_frames` frames sampled as transformers does, and go through the model's
//! video processor: `pixel_values_videos` `[V, num_frames, 3, H, W]` ([`lmms_collators::video`]).
//! Text-only, image and video samples mix freely.
//!
//! Checked against transformers in `adapters/llava/tests/collate.rs` (fixtures by
//! `tools/fixtures/collate_llava.py` and, for videos, `tools/fixtures/video.py`): identical ids,
//! mask and labels, bit-identical pixels (video frames: decoded bit-identically to PyAV's).
//!
//! Not yet: videos for LLaVA-Interleave (HF feeds it frames as images) and LLaVA-NeXT.
//! OneVision multi-image samples are collated as HF does (one square tile per image), but the
//! model needs HF's `batch_num_images` to tell them from anyres images, which [`LlavaInputs`]
//! does not carry: the model rejects such batches for now.

mod media;
mod video;

use crate::config::LlavaConfig;
use crate::family::LlavaInputs;
use lmms_collators::image::load_image;
use lmms_collators::template::{ChatTemplate, ContentStyle};
use lmms_collators::text::{
    EncodeOptions, EncodeOutcome, Encoded, IGNORE_INDEX, LabelMode, MediaKind, TextTokenizer,
    encode_conversation_with, pad_batch,
};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Prepare, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use media::{Images, Pixels};
use serde_json::Value;
use std::path::{Path, PathBuf};
use video::Videos;

/// The image placeholder of the HF processors (`processor_config.json` may name another).
const DEFAULT_IMAGE_TOKEN: &str = "<image>";
/// The video placeholder of the HF processors.
const DEFAULT_VIDEO_TOKEN: &str = "<video>";

/// The LLaVA collator of one model directory.
pub struct LlavaCollator {
    dir: PathBuf,
    config: LlavaConfig,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    encode: EncodeOptions,
    images: Images,
    /// The video pipeline, or why this model takes no videos (said when a sample has one).
    videos: std::result::Result<Videos, String>,
    video_token_id: Option<u32>,
    image_token_id: u32,
    pad_id: u32,
    /// Ids the tokenizer adds before / after a text (`add_special_tokens`, e.g. Llama's BOS).
    added: (Vec<u32>, Vec<u32>),
    bos_id: Option<u32>,
    max_length: usize,
    options: CollateOptions,
}

impl std::fmt::Debug for LlavaCollator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlavaCollator")
            .field("dir", &self.dir)
            .field("variant", &self.config.variant)
            .field("template", self.template.origin())
            .field("image_token_id", &self.image_token_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

/// One sample, tokenized and labelled, with its preprocessed images and videos.
struct Prepared {
    encoded: Encoded,
    pixels: Vec<Pixels>,
    /// `[F, 3, H, W]` per video.
    videos: Vec<Vec<f32>>,
}

fn int_at(v: &Value, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_i64))
}

impl LlavaCollator {
    /// Reads the model directory: `config.json`, `tokenizer.json` (+ `tokenizer_config.json`),
    /// the chat template (the model's, else a built-in one), the image processor config.
    pub fn new(dir: &ModelDir, options: &CollateOptions) -> Result<Self> {
        let root = dir.root.clone();
        let config = LlavaConfig::from_value(&dir.config, &dir.path("config.json"))?;
        let tokenizer = TextTokenizer::from_dir(&root)?;
        let template = match ChatTemplate::from_model_dir(&root, None)? {
            Some(t) => t,
            None => {
                let name = if config.text.model_type.starts_with("qwen") {
                    "chatml"
                } else {
                    "llava-1.5"
                };
                ChatTemplate::builtin(name)
                    .expect("the built-in templates exist")
                    .with_special_tokens(tokenizer.special.clone())
            }
        };
        let images = Images::from_model_dir(&root, &config)?;

        // The image placeholder: its id is the config's, its text what the template writes.
        let id = config.image_token_id;
        let image_token_id = u32::try_from(id).map_err(|_| {
            Error::config(
                dir.path("config.json"),
                format!("image_token_index {id} is negative"),
            )
        })?;
        let named = read_processor_token(&root, "image_token")?;
        let image_token = named
            .or_else(|| tokenizer.tokenizer.id_to_token(image_token_id))
            .unwrap_or_else(|| DEFAULT_IMAGE_TOKEN.to_string());
        if tokenizer.token_id(&image_token) != Some(image_token_id) {
            return Err(Error::config(
                root.join("tokenizer.json"),
                format!(
                    "the image token `{image_token}` is {} in the tokenizer but config.json's \
                     image_token_index is {image_token_id}",
                    tokenizer
                        .token_id(&image_token)
                        .map_or("not a token".to_string(), |i| format!("id {i}"))
                ),
            ));
        }

        // Videos: the pipeline and the placeholder token, or (kept as a message, reported when
        // a sample has a video) why this model or directory takes none.
        let video_token_id = config.video_token_id.and_then(|i| u32::try_from(i).ok());
        let mut videos = match Videos::from_model_dir(&root, &config, options.num_frames) {
            Ok(_) if video_token_id.is_none() => {
                Err("config.json's video_token_index is not a token id".to_string())
            }
            Ok(v) => Ok(v),
            Err(e) => Err(e.with_causes()),
        };
        let mut video_token = DEFAULT_VIDEO_TOKEN.to_string();
        if let (Some(id), Ok(_)) = (video_token_id, &videos) {
            let token = read_processor_token(&root, "video_token")?
                .or_else(|| tokenizer.tokenizer.id_to_token(id))
                .unwrap_or_else(|| DEFAULT_VIDEO_TOKEN.to_string());
            match tokenizer.token_id(&token) {
                Some(i) if i == id => video_token = token,
                other => {
                    videos = Err(format!(
                        "{}: the video token `{token}` is {} in the tokenizer but config.json's \
                         video_token_index is {id}",
                        root.join("tokenizer.json").display(),
                        other.map_or("not a token".to_string(), |i| format!("id {i}"))
                    ));
                }
            }
        }

        let content = ContentStyle::for_template(&template);
        let encode = EncodeOptions {
            content,
            image_text: image_token.clone(),
            image_token,
            video_text: video_token.clone(),
            video_token,
            labels: if options.train_on_everything {
                LabelMode::All
            } else {
                LabelMode::AssistantOnly
            },
            ensure_eos: true,
            max_length: None,
            ..EncodeOptions::default()
        };

        let pad = tokenizer.pad_id().or_else(|| {
            int_at(&dir.config, &["pad_token_id"])
                .or_else(|| {
                    dir.config
                        .get("text_config")
                        .and_then(|t| int_at(t, &["pad_token_id"]))
                })
                .and_then(|i| u32::try_from(i).ok())
        });
        let pad_id = pad.or(tokenizer.eos_id()).unwrap_or(0);
        let added = added_special_ids(&tokenizer, &encode.image_token, &root)?;
        let bos_id = tokenizer
            .special
            .bos
            .as_deref()
            .and_then(|t| tokenizer.token_id(t));
        let max_length = options
            .model_max_length
            .unwrap_or(config.text.max_position_embeddings);
        Ok(LlavaCollator {
            dir: root,
            config,
            tokenizer,
            template,
            encode,
            images,
            videos,
            video_token_id,
            image_token_id,
            pad_id,
            added,
            bos_id,
            max_length,
            options: options.clone(),
        })
    }

    /// The model directory this collator reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chat template in use.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The id each image placeholder is expanded to.
    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }

    /// The id each video placeholder is expanded to, for models that take videos.
    pub fn video_token_id(&self) -> Option<u32> {
        self.video_token_id.filter(|_| self.videos.is_ok())
    }

    /// Placeholder tokens of one video (`num_frames` frames), or why this model takes none.
    pub fn video_tokens(&self) -> std::result::Result<usize, String> {
        self.videos
            .as_ref()
            .map(Videos::num_tokens)
            .map_err(Clone::clone)
    }

    /// The videos of `sample`, or an error naming it when this model takes none.
    fn video_pipeline(&self, sample: &Sample) -> Result<Option<&Videos>> {
        if sample.videos.is_empty() {
            return Ok(None);
        }
        match &self.videos {
            Ok(v) => Ok(Some(v)),
            Err(why) => Err(sample.origin.error(format!("has a video, but {why}"))),
        }
    }

    /// The id padding uses.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The length limit in force (`model_max_length`, else the LLM's positions).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes and labels `sample`, with `sizes` the original (height, width) of its images.
    fn encode(
        &self,
        sample: &Sample,
        sizes: &[(usize, usize)],
        options: &EncodeOptions,
    ) -> Result<Encoded> {
        let in_multi = sizes.len() > 1;
        let counts = sizes
            .iter()
            .map(|&s| self.images.num_tokens(s, in_multi))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| sample.origin.error(e.with_causes()))?;
        let id = self.image_token_id;
        let video = self
            .video_pipeline(sample)?
            .zip(self.video_token_id)
            .map(|(v, vid)| (v.num_tokens(), vid));
        let mut expand = |kind: MediaKind, index: usize| match kind {
            MediaKind::Image => Ok(counts.get(index).map(|&n| vec![id; n])),
            // The encoder has checked that placeholders and videos pair up.
            MediaKind::Video => match video {
                Some((n, vid)) => Ok(Some(vec![vid; n])),
                None => Err(sample.origin.error("has a video placeholder but no video")),
            },
        };
        let outcome = encode_conversation_with(
            &self.tokenizer,
            &self.template,
            sample,
            options,
            &mut expand,
        )?;
        let EncodeOutcome::Encoded(mut e) = outcome else {
            unreachable!("no length limit is given to the encoder");
        };
        let (prefix, suffix) = &self.added;
        let starts_with_bos = self.bos_id.is_some() && e.input_ids.first() == self.bos_id.as_ref();
        if (!prefix.is_empty() || !suffix.is_empty()) && !starts_with_bos {
            let label = |ids: &[u32]| -> Vec<i64> {
                ids.iter()
                    .map(|&i| match self.encode.labels {
                        LabelMode::All => i64::from(i),
                        LabelMode::AssistantOnly => IGNORE_INDEX,
                    })
                    .collect()
            };
            e.input_ids.splice(0..0, prefix.iter().copied());
            e.labels.splice(0..0, label(prefix));
            for m in &mut e.media {
                m.start += prefix.len();
            }
            // A prompt goes on with the reply: nothing closes the text yet.
            if !options.generation_prompt {
                e.input_ids.extend_from_slice(suffix);
                e.labels.extend(label(suffix));
            }
        }
        Ok(e)
    }

    fn prepare(&self, sample: &Sample, options: &EncodeOptions) -> Result<Prepare<Prepared>> {
        let video_pipeline = self.video_pipeline(sample)?;
        let images = sample
            .images
            .iter()
            .map(|p| load_image(p).map_err(|e| sample.origin.media_error("image", p, &e)))
            .collect::<Result<Vec<_>>>()?;
        let sizes: Vec<(usize, usize)> = images
            .iter()
            .map(|i| (i.height() as usize, i.width() as usize))
            .collect();
        let encoded = self.encode(sample, &sizes, options)?;
        let (length, limit) = (encoded.len(), self.max_length);
        if length > limit {
            return match self.options.over_length {
                OverLength::Skip => Ok(Prepare::TooLong { length, limit }),
                OverLength::Reject => Err(sample.origin.error(format!(
                    "{length} tokens (media included), over the limit of {limit}: raise \
                     model_max_length, or let long samples be skipped (media tokens are never cut)"
                ))),
            };
        }
        let in_multi = images.len() > 1;
        let pixels = images
            .iter()
            .zip(&sample.images)
            .map(|(img, path)| {
                self.images
                    .process(img, in_multi)
                    .map_err(|e| sample.origin.media_error("image", path, &e))
            })
            .collect::<Result<Vec<_>>>()?;
        // Videos are decoded only for samples that are kept.
        let videos = match video_pipeline {
            None => vec![],
            Some(v) => sample
                .videos
                .iter()
                .map(|path| {
                    v.process(path)
                        .map_err(|e| sample.origin.media_error("video", path, &e))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(Prepare::Ready(Prepared {
            encoded,
            pixels,
            videos,
        }))
    }
}

/// `image_token` (or another key) of `processor_config.json`, if the directory has one.
fn read_processor_token(dir: &Path, key: &str) -> Result<Option<String>> {
    let path = dir.join("processor_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    Ok(v.get(key).and_then(Value::as_str).map(str::to_string))
}

/// The ids the tokenizer's post-processor adds around a text (`add_special_tokens=True`), found
/// by encoding `probe` (a single added token) both ways.
fn added_special_ids(tok: &TextTokenizer, probe: &str, dir: &Path) -> Result<(Vec<u32>, Vec<u32>)> {
    let fail =
        |e: String| Error::config(dir.join("tokenizer.json"), format!("tokenizer failed: {e}"));
    let plain = tok
        .tokenizer
        .encode(probe, false)
        .map_err(|e| fail(e.to_string()))?;
    let with = tok
        .tokenizer
        .encode(probe, true)
        .map_err(|e| fail(e.to_string()))?;
    let (plain, with) = (plain.get_ids(), with.get_ids());
    let at = (0..=with.len().saturating_sub(plain.len()))
        .find(|&i| with[i..].starts_with(plain))
        .ok_or_else(|| {
            Error::config(
                dir.join("tokenizer.json"),
                "the post-processor changes the text's own ids, not only adds special tokens",
            )
        })?;
    Ok((with[..at].to_vec(), with[at + plain.len()..].to_vec()))
}

impl Collator for LlavaCollator {
    type Batch = LlavaInputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<LlavaInputs>, Vec<Skipped>)> {
        // Image and video decoding and preprocessing dominate: samples with media are prepared
        // on several threads.
        let with_media = samples
            .iter()
            .filter(|s| !s.images.is_empty() || !s.videos.is_empty())
            .count();
        let prepared = if with_media > 1 {
            par_map(samples, |s| self.prepare(s, &self.encode))
        } else {
            samples
                .iter()
                .map(|s| self.prepare(s, &self.encode))
                .collect()
        };
        let (kept, skipped) = Prepare::split(samples, prepared, "tokens (media included)")?;
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        Ok((Some(self.assemble(kept)?), skipped))
    }

    fn prompt(&self, conversation: &Sample) -> Result<LlavaInputs> {
        let options = EncodeOptions {
            generation_prompt: true,
            ..self.encode.clone()
        };
        let p = self
            .prepare(conversation, &options)?
            .into_prompt(conversation, "tokens (media included)")?;
        self.assemble(vec![p])
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn stop_ids(&self) -> Vec<u32> {
        self.tokenizer.stop_ids(Some(&self.dir))
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        self.video_pipeline(sample)?;
        let sizes = if self.images.needs_sizes() {
            sample
                .images
                .iter()
                .map(|p| image_size(p).map_err(|e| sample.origin.media_error("image", p, &e)))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![(0, 0); sample.images.len()]
        };
        Ok(self.encode(sample, &sizes, &self.encode)?.len())
    }
}

impl LlavaCollator {
    /// One batch of prepared samples: right-padded ids, stacked pixels and videos.
    fn assemble(&self, kept: Vec<Prepared>) -> Result<LlavaInputs> {
        let encoded: Vec<&Encoded> = kept.iter().map(|p| &p.encoded).collect();
        let tokens = pad_batch(&encoded, self.pad_id);
        let batch_num_images: Vec<usize> = kept.iter().map(|p| p.pixels.len()).collect();
        let mut pixels: Vec<Pixels> = Vec::new();
        let mut videos: Vec<Vec<f32>> = Vec::new();
        for p in kept {
            pixels.extend(p.pixels);
            videos.extend(p.videos);
        }
        let (pixel_values, image_sizes) = self.images.stack(pixels)?;
        let pixel_values_videos = match &self.videos {
            Ok(v) => v.stack(videos),
            Err(_) => None, // no sample with a video got this far
        };
        Ok(LlavaInputs {
            tokens,
            pixel_values,
            image_sizes,
            pixel_values_videos,
            batch_num_images: Some(batch_num_images),
        })
    }
}

/// `f` over `items` on up to `available_parallelism` threads, results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return done;
                        };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// An image's (height, width) from its header, without decoding it.
fn image_size(path: &Path) -> Result<(usize, usize)> {
    let invalid = |e: image::ImageError| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a decodable image: {e}"),
            ),
        )
    };
    let (w, h) = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(invalid)?;
    Ok((h as usize, w as usize))
}

#[cfg(test)]
mod tests {
    use super::par_map;

    #[test]
    fn par_map_keeps_the_order() {
        let items: Vec<usize> = (0..37).collect();
        let out = par_map(&items, |&i| {
            std::thread::sleep(std::time::Duration::from_micros(((i * 7) % 5) as u64 * 50));
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(par_map(&[] as &[usize], |&i| i).is_empty());
    }
}
