//! [`InternLm2Collator`]: text-only conversations -> [`Tokens`] for InternLM2-chat.
//!
//! Per sample: the conversation is rendered with the model's chat template (else the built-in
//! `internlm2` one: BOS, then ChatML turns `<|im_start|>role\n...<|im_end|>\n`), tokenized as a
//! whole as `apply_chat_template(tokenize=True)` does (the template writes the BOS itself), and
//! labelled by [`lmms_collators::text`]: assistant replies with their `<|im_end|>` train (an EOS
//! is added after a reply the template ends with none), or everything with
//! `train_on_everything`. A sample over the length limit (default: `max_position_embeddings`)
//! is left out and reported, or is an error, per [`OverLength`]; never cut. A sample with an
//! image or video is an error naming it (InternLM2-chat is a text model). The batch is
//! right-padded to its longest sample (pad id from the tokenizer, else `config.json`'s
//! `pad_token_id`, else EOS; attention mask 0, labels -100).

use lmms_collators::template::{ChatTemplate, ContentStyle};
use lmms_collators::text::{
    self, EncodeOptions, EncodeOutcome, Encoded, LabelMode, TextTokenizer, encode_conversation,
    pad_batch,
};
use lmms_core::collator::{CollateOptions, Collator, OverLength, Skipped};
use lmms_core::data::Sample;
use lmms_core::error::Result;
use lmms_core::llm::internlm2::InternLm2Config;
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::Tokens;
use lmms_core::tensor_file::HostTensor;

/// The InternLM2 collator of one model directory.
pub struct InternLm2Collator {
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    encode: EncodeOptions,
    pad_id: u32,
    max_length: usize,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for InternLm2Collator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternLm2Collator")
            .field("template", self.template.origin())
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

impl InternLm2Collator {
    /// Reads `config.json`, `tokenizer.json` (+ `tokenizer_config.json`) and the chat template.
    pub fn new(dir: &ModelDir, options: &CollateOptions) -> Result<Self> {
        let config = InternLm2Config::from_value(&dir.config, &dir.path("config.json"))?;
        let tokenizer = TextTokenizer::from_dir(&dir.root)?;
        let template = match ChatTemplate::from_model_dir(&dir.root, None)? {
            Some(t) => t,
            None => ChatTemplate::builtin("internlm2")
                .expect("the built-in templates exist")
                .with_special_tokens(tokenizer.special.clone()),
        };
        let pad_id = tokenizer
            .pad_id()
            .or_else(|| config.pad_token_id.and_then(|i| u32::try_from(i).ok()))
            .or(tokenizer.eos_id())
            .unwrap_or(0);
        let stop_ids = tokenizer.stop_ids(Some(&dir.root));
        let mut collator = Self::with_parts(
            tokenizer,
            template,
            pad_id,
            options
                .model_max_length
                .unwrap_or(config.max_position_embeddings),
            options,
        );
        collator.stop_ids = stop_ids;
        Ok(collator)
    }

    /// A collator from its parts (tests, or a template chosen by the caller).
    pub fn with_parts(
        tokenizer: TextTokenizer,
        template: ChatTemplate,
        pad_id: u32,
        max_length: usize,
        options: &CollateOptions,
    ) -> Self {
        let encode = EncodeOptions {
            content: ContentStyle::Text,
            // Text only: placeholders are not looked for.
            image_token: String::new(),
            video_token: String::new(),
            labels: if options.train_on_everything {
                LabelMode::All
            } else {
                LabelMode::AssistantOnly
            },
            ensure_eos: true,
            max_length: Some(max_length),
            over_length: match options.over_length {
                OverLength::Skip => text::OverLength::Skip,
                OverLength::Reject => text::OverLength::Reject,
            },
            ..EncodeOptions::default()
        };
        let stop_ids = tokenizer.stop_ids(None);
        InternLm2Collator {
            tokenizer,
            template,
            encode,
            pad_id,
            max_length,
            stop_ids,
        }
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn encode(&self, sample: &Sample, options: &EncodeOptions) -> Result<EncodeOutcome> {
        if !sample.images.is_empty() || !sample.videos.is_empty() {
            return Err(sample.origin.error(
                "has an image or video, but InternLM2-chat is a text-only model \
                 (use internlm-xcomposer2 for images)",
            ));
        }
        encode_conversation(&self.tokenizer, &self.template, sample, options)
    }
}

impl Collator for InternLm2Collator {
    type Batch = Tokens;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<Tokens>, Vec<Skipped>)> {
        let mut kept: Vec<Encoded> = Vec::with_capacity(samples.len());
        let mut skipped = Vec::new();
        for sample in samples {
            match self.encode(sample, &self.encode)? {
                EncodeOutcome::Encoded(e) => kept.push(e),
                EncodeOutcome::TooLong { length, limit } => skipped.push(Skipped {
                    origin: sample.origin.clone(),
                    reason: format!("{length} tokens, over the limit of {limit}"),
                }),
            }
        }
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        Ok((
            Some(pad_batch(&kept.iter().collect::<Vec<_>>(), self.pad_id)),
            skipped,
        ))
    }

    fn prompt(&self, conversation: &Sample) -> Result<Tokens> {
        let options = EncodeOptions {
            generation_prompt: true,
            max_length: None,
            ..self.encode.clone()
        };
        let encoded = self
            .encode(conversation, &options)?
            .encoded()
            .expect("no length limit");
        let n = encoded.len();
        let ids: Vec<i64> = encoded.input_ids.iter().map(|&i| i64::from(i)).collect();
        let tensor = |data| HostTensor {
            shape: vec![1, n],
            data,
        };
        Ok(Tokens {
            input_ids: tensor(ids),
            attention_mask: Some(tensor(vec![1; n])),
            labels: None,
        })
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn stop_ids(&self) -> Vec<u32> {
        self.stop_ids.clone()
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        let unlimited = EncodeOptions {
            max_length: None,
            ..self.encode.clone()
        };
        match self.encode(sample, &unlimited)? {
            EncodeOutcome::Encoded(e) => Ok(e.len()),
            EncodeOutcome::TooLong { length, .. } => Ok(length),
        }
    }
}
