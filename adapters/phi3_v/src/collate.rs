//! [`Phi3VCollator`]: conversations with any number of images -> [`Phi3VInputs`], as
//! `Phi3VProcessor` (the hub's remote code `processing_phi3_v.py`) builds them.
//!
//! Per sample: each `<image>` of the dataset becomes the image's tag where it stands (never
//! moved to the start of the turn), the conversation is rendered with the model's chat template
//! (`<|user|>\n...<|end|>\n<|assistant|>\n...<|end|>\n`; else the built-in `phi-3` one), and
//! tokenized as the processor does: it splits the text at every `<|image_N|>` tag, tokenizes
//! each piece with the tokenizer's BOS, and puts `num_img_tokens` copies of `-N` between the
//! pieces. Here the tag is rendered as `<|endoftext|>` (an added token that, unlike
//! `<|image|>`, strips no whitespace next to it) and the whole text is tokenized once, which
//! gives the same ids as the processor's pieces; each tag becomes `-N` x `num_img_tokens`
//! followed by the BOS the next piece starts with, and the sequence starts with a BOS.
//! Labels: assistant replies with their `<|end|>` train ([`lmms_collators::text`]), or
//! everything with `train_on_everything`; image ids and BOS never train.
//!
//! Pixels: [`Phi3VImageProcessor`] per image (HD crops, global image), all images of the batch
//! stacked `[N, num_crops + 1, 3, 336, 336]` in sample order, with `image_sizes` `[N, 2]`.
//! Text-only samples mix freely with image samples. The batch is right-padded with the pad
//! token (`<|endoftext|>`). A sample over the length limit is left out or is an error
//! ([`OverLength`]), never cut; a video is an error naming the sample.

use crate::config::Phi3VConfig;
use crate::family::Phi3VInputs;
use lmms_collators::image::load_image;
use lmms_collators::image::phi3_v::Phi3VImageProcessor;
use lmms_collators::template::{ChatTemplate, ContentStyle};
use lmms_collators::text::{
    self, EncodeOptions, EncodeOutcome, Encoded, IGNORE_INDEX, LabelMode, MediaKind, TextTokenizer,
    encode_conversation_with,
};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::Result;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::Tokens;
use lmms_core::tensor_file::HostTensor;

/// What an image tag is rendered as before tokenizing (see the module docs).
pub const IMAGE_STAND_IN: &str = "<|endoftext|>";

/// The Phi-3-V collator of one model directory.
pub struct Phi3VCollator {
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    processor: Phi3VImageProcessor,
    encode: EncodeOptions,
    bos_id: u32,
    pad_id: u32,
    max_length: usize,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for Phi3VCollator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phi3VCollator")
            .field("template", self.template.origin())
            .field("processor", &self.processor)
            .field("bos_id", &self.bos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

/// One sample, tokenized with its images processed.
struct Prepared {
    ids: Vec<i64>,
    labels: Vec<i64>,
    images: Vec<lmms_collators::image::phi3_v::Phi3VImage>,
}

impl Phi3VCollator {
    /// Reads `config.json`, `tokenizer.json` (+ `tokenizer_config.json`), the chat template
    /// and `preprocessor_config.json`.
    pub fn new(dir: &ModelDir, options: &CollateOptions) -> Result<Self> {
        let config = Phi3VConfig::from_value(&dir.config, &dir.path("config.json"))?;
        let tokenizer = TextTokenizer::from_dir(&dir.root)?;
        let template = match ChatTemplate::from_model_dir(&dir.root, None)? {
            Some(t) => t,
            None => ChatTemplate::builtin("phi-3")
                .expect("the built-in templates exist")
                .with_special_tokens(tokenizer.special.clone()),
        };
        let processor = Phi3VImageProcessor::from_model_dir(&dir.root)?;
        let bos_id = tokenizer
            .token_id("<s>")
            .or_else(|| config.bos_token_id.and_then(|i| u32::try_from(i).ok()))
            .unwrap_or(1);
        let pad_id = tokenizer
            .pad_id()
            .or_else(|| config.pad_token_id.and_then(|i| u32::try_from(i).ok()))
            .or(tokenizer.eos_id())
            .unwrap_or(0);
        let max_length = options
            .model_max_length
            .unwrap_or(config.max_position_embeddings);
        let stop_ids = tokenizer.stop_ids(Some(&dir.root));
        let mut collator = Self::with_parts(
            tokenizer, template, processor, bos_id, pad_id, max_length, options,
        );
        collator.stop_ids = stop_ids;
        Ok(collator)
    }

    /// A collator from its parts (tests, or a template chosen by the caller).
    pub fn with_parts(
        tokenizer: TextTokenizer,
        template: ChatTemplate,
        processor: Phi3VImageProcessor,
        bos_id: u32,
        pad_id: u32,
        max_length: usize,
        options: &CollateOptions,
    ) -> Self {
        let encode = EncodeOptions {
            content: ContentStyle::Text,
            image_text: IMAGE_STAND_IN.into(),
            image_token: IMAGE_STAND_IN.into(),
            video_token: lmms_collators::dataset::VIDEO_PLACEHOLDER.into(),
            labels: if options.train_on_everything {
                LabelMode::All
            } else {
                LabelMode::AssistantOnly
            },
            ensure_eos: true,
            // The leading BOS is added after encoding.
            max_length: Some(max_length.saturating_sub(1)),
            over_length: match options.over_length {
                OverLength::Skip => text::OverLength::Skip,
                OverLength::Reject => text::OverLength::Reject,
            },
            ..EncodeOptions::default()
        };
        let stop_ids = tokenizer.stop_ids(None);
        Phi3VCollator {
            tokenizer,
            template,
            processor,
            encode,
            bos_id,
            pad_id,
            max_length,
            stop_ids,
        }
    }

    pub fn processor(&self) -> &Phi3VImageProcessor {
        &self.processor
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes `sample`; `counts[k]` is image `k`'s token count.
    fn encode(
        &self,
        sample: &Sample,
        counts: &[usize],
        options: &EncodeOptions,
    ) -> Result<EncodeOutcome> {
        if !sample.videos.is_empty() {
            return Err(sample
                .origin
                .error("has a video, but Phi-3-V takes images only"));
        }
        let (stand_in, bos) = (self.stand_in_id(sample)?, self.bos_id);
        let mut expand = |kind: MediaKind, index: usize| -> Result<Option<Vec<u32>>> {
            match (kind, counts.get(index)) {
                (MediaKind::Image, Some(&n)) => {
                    let mut v = vec![stand_in; n];
                    v.push(bos);
                    Ok(Some(v))
                }
                _ => Err(sample.origin.error(format!("no image {index} to expand"))),
            }
        };
        encode_conversation_with(
            &self.tokenizer,
            &self.template,
            sample,
            options,
            &mut expand,
        )
    }

    fn stand_in_id(&self, sample: &Sample) -> Result<u32> {
        self.tokenizer.token_id(IMAGE_STAND_IN).ok_or_else(|| {
            sample.origin.error(format!(
                "the tokenizer has no `{IMAGE_STAND_IN}` token to stand in for image tags"
            ))
        })
    }

    /// The leading BOS, and each image span's ids made `-(k + 1)` (its trailing BOS kept).
    fn finish(&self, e: Encoded) -> (Vec<i64>, Vec<i64>) {
        let mut ids = Vec::with_capacity(e.len() + 1);
        ids.push(i64::from(self.bos_id));
        ids.extend(e.input_ids.iter().map(|&i| i64::from(i)));
        let mut labels = Vec::with_capacity(e.len() + 1);
        labels.push(IGNORE_INDEX);
        labels.extend_from_slice(&e.labels);
        for span in &e.media {
            let start = span.start + 1;
            ids[start..start + span.len - 1].fill(-(span.index as i64 + 1));
        }
        (ids, labels)
    }

    fn prepare(&self, sample: &Sample, options: &EncodeOptions) -> Result<Option<Prepared>> {
        let mut images = Vec::with_capacity(sample.images.len());
        for path in &sample.images {
            let img = load_image(path).map_err(|e| sample.origin.error(e.to_string()))?;
            images.push(self.processor.process(&img));
        }
        let counts: Vec<usize> = images.iter().map(|i| i.num_img_tokens).collect();
        match self.encode(sample, &counts, options)? {
            EncodeOutcome::Encoded(e) => {
                let (ids, labels) = self.finish(e);
                Ok(Some(Prepared {
                    ids,
                    labels,
                    images,
                }))
            }
            EncodeOutcome::TooLong { .. } => Ok(None),
        }
    }
}

impl Collator for Phi3VCollator {
    type Batch = Phi3VInputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<Phi3VInputs>, Vec<Skipped>)> {
        let mut kept: Vec<Prepared> = Vec::with_capacity(samples.len());
        let mut skipped = Vec::new();
        for sample in samples {
            match self.prepare(sample, &self.encode)? {
                Some(p) => kept.push(p),
                None => skipped.push(Skipped {
                    origin: sample.origin.clone(),
                    reason: format!(
                        "{} tokens, over the limit of {}",
                        self.num_tokens(sample)?,
                        self.max_length
                    ),
                }),
            }
        }
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        Ok((Some(self.assemble(kept)), skipped))
    }

    fn prompt(&self, conversation: &Sample) -> Result<Phi3VInputs> {
        let options = EncodeOptions {
            generation_prompt: true,
            max_length: None,
            ..self.encode.clone()
        };
        let prepared = self
            .prepare(conversation, &options)?
            .expect("no length limit");
        Ok(self.assemble(vec![prepared]))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn stop_ids(&self) -> Vec<u32> {
        self.stop_ids.clone()
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        // Token counts need only each image's size (read from its header).
        let mut counts = Vec::with_capacity(sample.images.len());
        for path in &sample.images {
            let (w, h) = image::image_dimensions(path).map_err(|e| {
                sample
                    .origin
                    .error(format!("{}: not a readable image: {e}", path.display()))
            })?;
            let size = self.processor.hd_size(w as usize, h as usize);
            counts.push(Phi3VImageProcessor::num_img_tokens(size));
        }
        let unlimited = EncodeOptions {
            max_length: None,
            ..self.encode.clone()
        };
        match self.encode(sample, &counts, &unlimited)? {
            EncodeOutcome::Encoded(e) => Ok(e.len() + 1),
            EncodeOutcome::TooLong { length, .. } => Ok(length + 1),
        }
    }
}

impl Phi3VCollator {
    /// One batch: right-padded ids (mask 0, labels -100) and the images' crops in slots.
    fn assemble(&self, kept: Vec<Prepared>) -> Phi3VInputs {
        let rows: Vec<(&[i64], &[i64])> = kept
            .iter()
            .map(|p| (p.ids.as_slice(), p.labels.as_slice()))
            .collect();
        let tokens = Tokens::right_padded(&rows, i64::from(self.pad_id));
        let images: Vec<_> = kept.into_iter().flat_map(|p| p.images).collect();
        let (pixel_values, image_sizes) = if images.is_empty() {
            (None, None)
        } else {
            let slots = images
                .iter()
                .map(|i| i.pixels.len() / (3 * 336 * 336))
                .max()
                .unwrap_or(1);
            let mut data = Vec::with_capacity(images.len() * slots * 3 * 336 * 336);
            let mut sizes = Vec::with_capacity(images.len() * 2);
            for img in &images {
                data.extend_from_slice(&img.pixels);
                data.resize(data.len() + slots * 3 * 336 * 336 - img.pixels.len(), 0.0);
                sizes.extend([img.size.0 as i64, img.size.1 as i64]);
            }
            (
                Some(HostTensor {
                    shape: vec![images.len(), slots, 3, 336, 336],
                    data,
                }),
                Some(HostTensor {
                    shape: vec![images.len(), 2],
                    data: sizes,
                }),
            )
        };
        Phi3VInputs {
            tokens,
            pixel_values,
            image_sizes,
        }
    }
}
