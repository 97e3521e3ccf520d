//! [`QwenVlCollator`]: conversations -> [`QwenVlInputs`] the way Qwen-VL's finetune script
//! builds them (as lmms-finetune's `qwen-vl` collator does), with `qwen.tiktoken`
//! ([`lmms_collators::tiktoken`]).
//!
//! Per sample: the k-th `<image>` placeholder becomes `Picture k: <img>{path}</img>\n` (the path
//! as given, resolved; the span is 256 ids the model overwrites with image features); a system
//! prompt, when the sample has one, is `<|im_start|>system\n{prompt}<|im_end|>\n`; each turn is
//! `<|im_start|>{role}\n{text}<|im_end|>\n`, every piece tokenized on its own. Labels as the
//! script writes them: a user (or system) turn keeps `<|im_start|>`, `<|im_end|>` and the final
//! `\n` and ignores the rest; an assistant turn keeps `<|im_start|>`, its reply, `<|im_end|>` and
//! `\n`, ignoring the role and its newline (`train_on_everything` keeps every id). Images go
//! through [`QwenVlImageTransform`] (448x448 bicubic, CLIP normalisation) in span order. A
//! sample over the length limit (default: `tokenizer_config.json`'s `model_max_length`, else
//! 8192) is left out and reported, or is an error, per [`OverLength`]; never cut. The batch is
//! right-padded with `<|endoftext|>` (Qwen's pad), attention mask 0, labels -100.

use crate::config::QwenVlConfig;
use crate::family::QwenVlInputs;
use lmms_collators::image::load_image;
use lmms_collators::image::qwen_vl::QwenVlImageTransform;
use lmms_collators::text::{IGNORE_INDEX, TextTokenizer};
use lmms_collators::tiktoken::encode_qwen;
use lmms_core::collator::{CollateOptions, Collator, OverLength, Skipped};
use lmms_core::data::{Role, Sample};
use lmms_core::error::{Error, Result};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::Tokens;
use lmms_core::tensor_file::HostTensor;

/// The Qwen-VL collator of one model directory.
pub struct QwenVlCollator {
    tokenizer: TextTokenizer,
    transform: QwenVlImageTransform,
    im_start: u32,
    im_end: u32,
    eod: u32,
    nl: Vec<u32>,
    max_length: usize,
    over_length: OverLength,
    train_on_everything: bool,
}

impl std::fmt::Debug for QwenVlCollator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenVlCollator")
            .field("image_size", &self.transform.image_size)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

/// One sample's ids and labels.
struct Encoded {
    ids: Vec<u32>,
    labels: Vec<i64>,
}

impl QwenVlCollator {
    /// Reads `config.json`, `qwen.tiktoken` and `tokenizer_config.json`.
    pub fn new(dir: &ModelDir, options: &CollateOptions) -> Result<Self> {
        let config = QwenVlConfig::from_value(&dir.config, &dir.path("config.json"))?;
        let tokenizer = TextTokenizer::from_dir(&dir.root)?;
        let id = |t: &str| {
            tokenizer.token_id(t).ok_or_else(|| {
                Error::config(&dir.root, format!("the tokenizer has no `{t}` token"))
            })
        };
        let (im_start, im_end, eod) =
            (id("<|im_start|>")?, id("<|im_end|>")?, id("<|endoftext|>")?);
        let nl = encode_qwen(&tokenizer.tokenizer, "\n")?;
        let configured = std::fs::read_to_string(dir.path("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("model_max_length").and_then(|m| m.as_u64()))
            .map(|m| m as usize);
        let image_size = config.visual.as_ref().map_or(448, |v| v.image_size);
        Ok(QwenVlCollator {
            tokenizer,
            transform: QwenVlImageTransform::new(image_size),
            im_start,
            im_end,
            eod,
            nl,
            max_length: options.model_max_length.or(configured).unwrap_or(8192),
            over_length: options.over_length,
            train_on_everything: options.train_on_everything,
        })
    }

    fn text(&self, s: &str, sample: &Sample) -> Result<Vec<u32>> {
        encode_qwen(&self.tokenizer.tokenizer, s).map_err(|e| sample.origin.error(e.with_causes()))
    }

    /// The turns' texts with `<image>` written as Qwen's picture spans.
    fn expand_images(&self, sample: &Sample) -> Result<Vec<(Role, String)>> {
        let mut k = 0;
        let mut out = Vec::with_capacity(sample.turns.len());
        for turn in &sample.turns {
            let mut text = String::new();
            let mut rest = turn.content.as_str();
            while let Some(at) = rest.find("<image>") {
                let path = sample.images.get(k).ok_or_else(|| {
                    sample.origin.error(format!(
                        "has more <image> placeholders than images ({})",
                        sample.images.len()
                    ))
                })?;
                k += 1;
                text.push_str(&rest[..at]);
                text.push_str(&format!("Picture {k}: <img>{}</img>\n", path.display()));
                rest = &rest[at + "<image>".len()..];
            }
            text.push_str(rest);
            out.push((turn.role, text));
        }
        if k != sample.images.len() {
            return Err(sample.origin.error(format!(
                "has {} images but {k} <image> placeholders",
                sample.images.len()
            )));
        }
        if !sample.videos.is_empty() {
            return Err(sample
                .origin
                .error("has a video; Qwen-VL-Chat takes images only"));
        }
        Ok(out)
    }

    fn encode(&self, sample: &Sample, generation_prompt: bool) -> Result<Encoded> {
        let mut e = Encoded {
            ids: Vec::new(),
            labels: Vec::new(),
        };
        let nl = &self.nl;
        let push = |role: Role, text: &str, e: &mut Encoded| -> Result<()> {
            let name = match role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let head = self.text(&format!("<|im_start|>{name}"), sample)?;
            let body = self.text(text, sample)?;
            let start = e.ids.len();
            e.ids.extend(&head);
            e.ids.extend(nl);
            e.ids.extend(&body);
            e.ids.push(self.im_end);
            e.ids.extend(nl);
            let n = e.ids.len() - start;
            let keep = |ids: &[u32]| ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
            if self.train_on_everything {
                e.labels.extend(keep(&e.ids[start..]));
                return Ok(());
            }
            e.labels.push(i64::from(self.im_start));
            match role {
                Role::Assistant => {
                    // The role and its newline are ignored, the reply trains.
                    e.labels
                        .extend(std::iter::repeat_n(IGNORE_INDEX, head.len() - 1 + nl.len()));
                    e.labels.extend(keep(&body));
                }
                Role::User | Role::System => {
                    e.labels
                        .extend(std::iter::repeat_n(IGNORE_INDEX, n - 2 - nl.len()));
                }
            }
            e.labels.push(i64::from(self.im_end));
            e.labels.extend(keep(nl));
            Ok(())
        };
        if let Some(system) = &sample.system {
            push(Role::System, system, &mut e)?;
        }
        for (role, text) in self.expand_images(sample)? {
            push(role, &text, &mut e)?;
        }
        if generation_prompt {
            let head = self.text("<|im_start|>assistant", sample)?;
            e.ids.extend(&head);
            e.ids.extend(nl);
            e.labels
                .extend(std::iter::repeat_n(IGNORE_INDEX, head.len() + nl.len()));
        }
        debug_assert_eq!(e.ids.len(), e.labels.len());
        Ok(e)
    }

    /// The `[N, 3, S, S]` pixels of the samples' images, in order.
    fn images(&self, samples: &[&Sample]) -> Result<Option<HostTensor<f32>>> {
        let mut data = Vec::new();
        let mut n = 0;
        for sample in samples {
            for path in &sample.images {
                let img =
                    load_image(path).map_err(|e| sample.origin.media_error("image", path, &e))?;
                self.transform.process_into(&img, &mut data);
                n += 1;
            }
        }
        let s = self.transform.image_size;
        Ok((n > 0).then(|| HostTensor {
            shape: vec![n, 3, s, s],
            data,
        }))
    }

    fn batch(&self, samples: &[&Sample], encoded: &[Encoded]) -> Result<QwenVlInputs> {
        let ids: Vec<Vec<i64>> = encoded
            .iter()
            .map(|e| e.ids.iter().map(|&i| i64::from(i)).collect())
            .collect();
        let rows: Vec<(&[i64], &[i64])> = ids
            .iter()
            .zip(encoded)
            .map(|(ids, e)| (ids.as_slice(), e.labels.as_slice()))
            .collect();
        Ok(QwenVlInputs {
            tokens: Tokens::right_padded(&rows, i64::from(self.eod)),
            images: self.images(samples)?,
        })
    }
}

impl Collator for QwenVlCollator {
    type Batch = QwenVlInputs;

    fn collate(&self, samples: &[&Sample]) -> Result<(Option<QwenVlInputs>, Vec<Skipped>)> {
        let mut kept = Vec::new();
        let mut encoded = Vec::new();
        let mut skipped = Vec::new();
        for sample in samples {
            let e = self.encode(sample, false)?;
            if e.ids.len() > self.max_length {
                let reason = format!(
                    "{} tokens, over the limit of {}",
                    e.ids.len(),
                    self.max_length
                );
                match self.over_length {
                    OverLength::Skip => skipped.push(Skipped {
                        origin: sample.origin.clone(),
                        reason,
                    }),
                    OverLength::Reject => return Err(sample.origin.error(reason)),
                }
                continue;
            }
            kept.push(*sample);
            encoded.push(e);
        }
        if kept.is_empty() {
            return Ok((None, skipped));
        }
        Ok((Some(self.batch(&kept, &encoded)?), skipped))
    }

    fn num_tokens(&self, sample: &Sample) -> Result<usize> {
        Ok(self.encode(sample, false)?.ids.len())
    }

    fn prompt(&self, conversation: &Sample) -> Result<QwenVlInputs> {
        let e = self.encode(conversation, true)?;
        let mut b = self.batch(&[conversation], &[e])?;
        b.tokens.labels = None;
        Ok(b)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn stop_ids(&self) -> Vec<u32> {
        vec![self.im_end, self.eod]
    }
}
