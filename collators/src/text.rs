//! Tokenization and label masking of a conversation.
//!
//! How labels are found ([`encode_conversation`]). The conversation is rendered with the chat
//! template and tokenized once as a whole (exactly the ids of HF's
//! `apply_chat_template(tokenize=True)`); the assistant text is located as byte spans of that
//! text, and every token from the first to the last one overlapping a span gets its id as label
//! (HF's `return_assistant_tokens_mask` rule). Everything else — system prompt, user text, role
//! headers, media tokens — gets -100. The spans come from ([`AssistantSpans`]):
//! - the template's `{% generation %}` blocks when it has them: exactly HF's assistant mask;
//! - otherwise incremental rendering: for each assistant turn `i`, the messages before it with
//!   the generation prompt (`P_i`) and the messages up to and including it (`F_i`) are rendered;
//!   the assistant text is `F_i` after the longest common prefix of `P_i` and `F_i` — the reply
//!   and whatever the template writes after it (the end-of-turn token: `<|im_end|>\n`, `</s>`),
//!   never the role header of the generation prompt. This needs no cooperation from the template
//!   (hub templates rarely have generation tags). It can differ from a generation block in one
//!   way: a separator between the prompt and the reply that the template writes outside the
//!   block (LLaVA's space after `ASSISTANT:`) is part of the reply here, as it is of what the
//!   model generates after the prompt.
//!
//! Media: each image/video placeholder of the rendered text (e.g. `<image>`, `<|image_pad|>`)
//! must be whole tokens; the caller's expansion callback says which ids each one becomes (its
//! labels are -100), so family-specific token counts stay with the family.

use crate::template::{ChatTemplate, ContentStyle, Message, SpecialTokens, sample_messages};
use lmms_core::data::{Role, Sample};
use lmms_core::runtime::Tokens;
use lmms_core::{Error, Result};
use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

/// The label of a token that does not train.
pub use lmms_core::llm::loss::IGNORE_INDEX;

/// A `tokenizer.json` tokenizer with its special tokens.
pub struct TextTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub special: SpecialTokens,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    /// Added tokens marked special (end-of-turn markers among them).
    special_ids: HashSet<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("special", &self.special)
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and the special tokens of `tokenizer_config.json` /
    /// `special_tokens_map.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let spm = dir.join("tokenizer.model");
        let tokenizer = if path.is_file() {
            tokenizers::Tokenizer::from_file(&path)
                .map_err(|e| Error::config(&path, format!("cannot load the tokenizer: {e}")))?
        } else if dir.join("qwen.tiktoken").is_file() {
            // Qwen(-VL)'s tiktoken vocabulary, converted to a byte-level BPE.
            crate::tiktoken::tokenizer_from_file(&dir.join("qwen.tiktoken"))?
        } else if spm.is_file() {
            // Only the slow tokenizer ships (InternLM2, older Llama): convert it as
            // transformers would when asked for a fast one.
            let added = crate::sentencepiece::added_tokens(dir)?;
            crate::sentencepiece::tokenizer_from_model(&spm, &added)?
        } else {
            return Err(Error::config(
                dir,
                "no tokenizer.json (or sentencepiece tokenizer.model) in the directory",
            ));
        };
        let special = crate::template::SpecialTokens::from_model_dir(dir)?;
        Ok(Self::new(tokenizer, special))
    }

    pub fn new(tokenizer: tokenizers::Tokenizer, special: SpecialTokens) -> Self {
        let special_ids = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let eos_id = special
            .eos
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t));
        let pad_id = special
            .pad
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t));
        TextTokenizer {
            tokenizer,
            special,
            eos_id,
            pad_id,
            special_ids,
        }
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether `id` is an added token marked special.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Batch(format!("cannot decode token ids: {e}")))
    }

    /// The ids that end a reply of the model in `dir` (when given): `generation_config.json`'s
    /// `eos_token_id` (one id or a list), the EOS token, and the end-of-turn markers chat
    /// templates write (`<|im_end|>`, `<|end|>`, `<|eot_id|>`) where they are special tokens.
    pub fn stop_ids(&self, dir: Option<&Path>) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_id.into_iter().collect();
        let generation = dir
            .and_then(|d| std::fs::read(d.join("generation_config.json")).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        match generation.as_ref().and_then(|g| g.get("eos_token_id")) {
            Some(serde_json::Value::Number(n)) => ids.extend(n.as_u64().map(|i| i as u32)),
            Some(serde_json::Value::Array(list)) => {
                ids.extend(list.iter().filter_map(|v| v.as_u64()).map(|i| i as u32))
            }
            _ => {}
        }
        for marker in ["<|im_end|>", "<|end|>", "<|eot_id|>"] {
            if let Some(id) = self.token_id(marker)
                && self.is_special(id)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Which tokens get labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Assistant replies and their end-of-turn tokens only.
    #[default]
    AssistantOnly,
    /// Every token but media tokens.
    All,
}

/// Where the assistant text of a rendered conversation is taken from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssistantSpans {
    /// `{% generation %}` blocks when the template has them, else incremental rendering.
    #[default]
    Auto,
    /// The template's `{% generation %}` blocks (an error if it has none).
    GenerationTags,
    /// Rendering the conversation up to each assistant turn, with and without it.
    Incremental,
}

/// What happens to a sample longer than [`EncodeOptions::max_length`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverLength {
    /// An error naming the sample and its length.
    #[default]
    Reject,
    /// [`EncodeOutcome::TooLong`]: the caller leaves the sample out and reports it.
    Skip,
    /// Cut at the limit, moved back before a media placeholder it would split; the media after
    /// the cut are dropped ([`Encoded::media`] lists the kept ones). An error if no label is
    /// left.
    Truncate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Image,
    Video,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// String content or typed parts for the template.
    pub content: ContentStyle,
    /// In [`ContentStyle::Text`]: what each `<image>` of a sample becomes before rendering.
    pub image_text: String,
    /// In [`ContentStyle::Text`]: what each `<video>` becomes before rendering.
    pub video_text: String,
    /// The image placeholder in the rendered text (one per image, whole tokens). Empty: images
    /// are not located (no count check, no expansion, no [`MediaSpan`]s), e.g. for statistics.
    pub image_token: String,
    /// The video placeholder in the rendered text (empty: not located).
    pub video_token: String,
    pub labels: LabelMode,
    pub assistant_spans: AssistantSpans,
    /// Append the EOS token (labelled) after an assistant reply that has no special token
    /// after it, so the model learns to stop even with templates that write none.
    pub ensure_eos: bool,
    pub max_length: Option<usize>,
    pub over_length: OverLength,
    /// Encode a generation prompt: the conversation so far (it ends with a user turn) and the
    /// template's assistant header (`add_generation_prompt`); nothing is labelled.
    pub generation_prompt: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            content: ContentStyle::Text,
            image_text: crate::dataset::IMAGE_PLACEHOLDER.into(),
            video_text: crate::dataset::VIDEO_PLACEHOLDER.into(),
            image_token: crate::dataset::IMAGE_PLACEHOLDER.into(),
            video_token: crate::dataset::VIDEO_PLACEHOLDER.into(),
            labels: LabelMode::AssistantOnly,
            assistant_spans: AssistantSpans::Auto,
            ensure_eos: true,
            max_length: None,
            over_length: OverLength::Reject,
            generation_prompt: false,
        }
    }
}

/// Where one image's or video's ids are in [`Encoded::input_ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSpan {
    pub kind: MediaKind,
    /// Position among the sample's images (or videos).
    pub index: usize,
    pub start: usize,
    pub len: usize,
}

/// A tokenized, labelled conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    /// `input_ids` where trained, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    pub media: Vec<MediaSpan>,
    /// The length before [`OverLength::Truncate`] cut it, if it did.
    pub truncated_from: Option<usize>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// How many tokens train.
    pub fn num_labels(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// The result of encoding one sample.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodeOutcome {
    Encoded(Encoded),
    /// Longer than the limit under [`OverLength::Skip`]: leave the sample out, and report it.
    TooLong {
        length: usize,
        limit: usize,
    },
}

impl EncodeOutcome {
    pub fn encoded(self) -> Option<Encoded> {
        match self {
            EncodeOutcome::Encoded(e) => Some(e),
            EncodeOutcome::TooLong { .. } => None,
        }
    }
}

/// [`encode_conversation_with`] where each placeholder stays the token(s) it is.
pub fn encode_conversation(
    tokenizer: &TextTokenizer,
    template: &ChatTemplate,
    sample: &Sample,
    options: &EncodeOptions,
) -> Result<EncodeOutcome> {
    encode_conversation_with(tokenizer, template, sample, options, &mut |_, _| Ok(None))
}

/// Renders, tokenizes and labels `sample` (see the module docs). `expand(kind, index)` gives
/// the ids the `index`-th image or video placeholder becomes (`None`: keep its token). Errors
/// name the sample: a template that raises or is not prefix-stable, placeholders that do not
/// match the media, a sample with nothing to train, a length over the limit under
/// [`OverLength::Reject`].
pub fn encode_conversation_with(
    tokenizer: &TextTokenizer,
    template: &ChatTemplate,
    sample: &Sample,
    options: &EncodeOptions,
    expand: &mut dyn FnMut(MediaKind, usize) -> Result<Option<Vec<u32>>>,
) -> Result<EncodeOutcome> {
    let fail = |reason: String| sample.origin.error(reason);
    let messages = sample_messages(
        sample,
        options.content,
        &options.image_text,
        &options.video_text,
    );
    let render = |msgs: &[Message], gen_prompt: bool| {
        template
            .render_raw(msgs, gen_prompt)
            .map_err(|e| fail(format!("{}: {e}", template.origin())))
    };
    let use_tags = match options.assistant_spans {
        AssistantSpans::Auto => template.has_generation_tags(),
        AssistantSpans::GenerationTags => {
            if !template.has_generation_tags() {
                return Err(fail(format!(
                    "{} has no {{% generation %}} blocks to take the assistant text from",
                    template.origin()
                )));
            }
            true
        }
        AssistantSpans::Incremental => false,
    };
    let (text, tagged) = template
        .render_tracked(&messages, options.generation_prompt)
        .map_err(|e| fail(format!("{}: {e}", template.origin())))?;

    // Byte spans of the assistant text in `text`.
    let mut spans: Vec<Range<usize>> = vec![];
    let need_spans = !options.generation_prompt
        && (options.labels == LabelMode::AssistantOnly || options.ensure_eos);
    if need_spans && use_tags {
        spans = tagged;
    } else if need_spans {
        for (i, m) in messages.iter().enumerate() {
            if m.role != crate::template::role_str(Role::Assistant) {
                continue;
            }
            let prompt = render(&messages[..i], true)?;
            let upto = if i + 1 == messages.len() {
                text.clone()
            } else {
                render(&messages[..=i], false)?
            };
            if !text.starts_with(&upto) {
                return Err(fail(format!(
                    "{}: the chat template renders the conversation up to assistant message {i} \
                     differently from how it renders the start of the whole conversation, so \
                     the reply cannot be located (train on everything instead, or use a \
                     template whose earlier turns do not change)",
                    template.origin()
                )));
            }
            let mut start = common_prefix_len(&prompt, &upto);
            while !upto.is_char_boundary(start) {
                start -= 1;
            }
            if start < upto.len() {
                spans.push(start..upto.len());
            }
        }
    }

    let encoding = tokenizer
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| fail(format!("tokenizer failed: {e}")))?;
    let ids = encoding.get_ids();
    let offsets = encoding.get_offsets();

    // Label flags per token.
    let mut trained =
        vec![options.labels == LabelMode::All && !options.generation_prompt; ids.len()];
    // Token ranges of the assistant spans (for the EOS check).
    let mut span_tokens: Vec<Range<usize>> = vec![];
    for span in &spans {
        let overlapping = |k: &usize| {
            let (s, e) = offsets[*k];
            s < span.end && e > span.start
        };
        let first = (0..ids.len()).find(overlapping);
        let last = (0..ids.len()).rev().find(overlapping);
        if let (Some(first), Some(last)) = (first, last) {
            trained[first..=last].fill(true);
            span_tokens.push(first..last + 1);
        }
    }

    // Media placeholders in the text, in order.
    let mut found: Vec<(usize, MediaKind, usize)> = vec![]; // (byte start, kind, byte len)
    for (pat, kind) in [
        (&options.image_token, MediaKind::Image),
        (&options.video_token, MediaKind::Video),
    ] {
        if pat.is_empty() {
            continue;
        }
        found.extend(
            text.match_indices(pat.as_str())
                .map(|(p, _)| (p, kind, pat.len())),
        );
    }
    found.sort_by_key(|(p, _, _)| *p);
    for (kind, want, pat) in [
        (MediaKind::Image, sample.images.len(), &options.image_token),
        (MediaKind::Video, sample.videos.len(), &options.video_token),
    ] {
        if pat.is_empty() {
            continue;
        }
        let n = found.iter().filter(|(_, k, _)| *k == kind).count();
        if n != want {
            return Err(fail(format!(
                "the rendered conversation has {n} `{pat}` but the sample has {want} {}",
                match kind {
                    MediaKind::Image => "images",
                    MediaKind::Video => "videos",
                }
            )));
        }
    }
    // Token range of each placeholder.
    let mut media_tokens: Vec<(Range<usize>, MediaKind, usize)> = vec![];
    let mut counters = [0usize; 2];
    let mut k = 0;
    for (start, kind, len) in found {
        let end = start + len;
        while k < ids.len() && offsets[k].1 <= start {
            k += 1;
        }
        let first = k;
        while k < ids.len() && offsets[k].0 < end {
            k += 1;
        }
        let whole = first < k && offsets[first].0 == start && offsets[k - 1].1 == end;
        if !whole {
            return Err(fail(format!(
                "`{}` is not a whole token of this tokenizer here (add it as a special token)",
                &text[start..end]
            )));
        }
        let c = &mut counters[kind as usize];
        media_tokens.push((first..k, kind, *c));
        *c += 1;
    }

    // Assemble: media expanded, EOS appended where a reply has no end-of-turn token.
    let media_ids: HashSet<u32> = media_tokens
        .iter()
        .flat_map(|(r, _, _)| ids[r.clone()].iter().copied())
        .collect();
    let mut eos_after: HashSet<usize> = HashSet::new();
    if options.ensure_eos && !options.generation_prompt {
        for r in &span_tokens {
            let has_stop = ids[r.clone()]
                .iter()
                .any(|id| tokenizer.is_special(*id) && !media_ids.contains(id));
            if !has_stop {
                eos_after.insert(r.end - 1);
            }
        }
    }
    let eos = if eos_after.is_empty() {
        None
    } else {
        Some(tokenizer.eos_id().ok_or_else(|| {
            fail(
                "an assistant reply ends without an end-of-turn token and the tokenizer has no \
                 eos_token to add"
                    .into(),
            )
        })?)
    };
    let mut input_ids = Vec::with_capacity(ids.len() + eos_after.len());
    let mut labels = Vec::with_capacity(ids.len() + eos_after.len());
    let mut media = vec![];
    let mut m = media_tokens.into_iter().peekable();
    let mut t = 0;
    while t < ids.len() {
        if let Some((range, _, _)) = m.peek()
            && range.start == t
        {
            let (range, kind, index) = m.next().expect("peeked");
            let expanded = match expand(kind, index)? {
                Some(v) => v,
                None => ids[range.clone()].to_vec(),
            };
            media.push(MediaSpan {
                kind,
                index,
                start: input_ids.len(),
                len: expanded.len(),
            });
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, expanded.len()));
            input_ids.extend(expanded);
            t = range.end;
            continue;
        }
        input_ids.push(ids[t]);
        labels.push(if trained[t] {
            i64::from(ids[t])
        } else {
            IGNORE_INDEX
        });
        if let Some(eos) = eos
            && eos_after.contains(&t)
        {
            input_ids.push(eos);
            labels.push(i64::from(eos));
        }
        t += 1;
    }

    let mut encoded = Encoded {
        input_ids,
        labels,
        media,
        truncated_from: None,
    };
    if let Some(limit) = options.max_length
        && encoded.len() > limit
    {
        let length = encoded.len();
        match options.over_length {
            OverLength::Reject => {
                return Err(fail(format!(
                    "{length} tokens, over the limit of {limit} (raise the limit, or skip or \
                     truncate long samples)"
                )));
            }
            OverLength::Skip => return Ok(EncodeOutcome::TooLong { length, limit }),
            OverLength::Truncate => {
                let mut cut = limit;
                if let Some(span) = encoded
                    .media
                    .iter()
                    .find(|s| s.start < cut && s.start + s.len > cut)
                {
                    cut = span.start;
                }
                encoded.input_ids.truncate(cut);
                encoded.labels.truncate(cut);
                encoded.media.retain(|s| s.start + s.len <= cut);
                encoded.truncated_from = Some(length);
            }
        }
    }
    if encoded.num_labels() == 0 && !options.generation_prompt {
        let why = if encoded.truncated_from.is_some() {
            "truncation to the length limit left no assistant token"
        } else {
            "no assistant token was found in the rendered conversation"
        };
        return Err(fail(format!(
            "every label is -100, nothing would train: {why}"
        )));
    }
    Ok(EncodeOutcome::Encoded(encoded))
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// `encoded` right-padded to the longest with `pad_id` (labels -100, mask 0), as a batch.
pub fn pad_batch(encoded: &[&Encoded], pad_id: u32) -> Tokens {
    let ids: Vec<Vec<i64>> = encoded
        .iter()
        .map(|e| e.input_ids.iter().map(|&i| i64::from(i)).collect())
        .collect();
    let rows: Vec<(&[i64], &[i64])> = ids
        .iter()
        .zip(encoded)
        .map(|(ids, e)| (ids.as_slice(), e.labels.as_slice()))
        .collect();
    Tokens::right_padded(&rows, i64::from(pad_id))
}
