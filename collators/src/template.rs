//! Chat templates: found wherever Hugging Face keeps them, rendered with minijinja the way
//! transformers renders them with jinja2, plus built-in fallbacks for models that ship none.
//!
//! transformers' environment, reproduced here: `trim_blocks` and `lstrip_blocks` on, the variables
//! `messages`, `add_generation_prompt`, `tools`/`documents` (none) and the tokenizer's special
//! tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`), the functions `raise_exception` and
//! `strftime_now`, a `tojson` filter that writes what Python's `json.dumps(ensure_ascii=False)`
//! writes, Python's string/dict methods (`.strip()`, `.items()`, ... via minijinja-contrib's
//! pycompat), and the `{% generation %}` tag (rendered as its body; label masking does not need
//! it, see [`crate::text`]).

use lmms_core::data::{Role, Sample};
use lmms_core::{Error, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Special tokens as `tokenizer_config.json` (or `special_tokens_map.json`) names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

impl SpecialTokens {
    /// Reads `bos_token` etc. from a parsed `tokenizer_config.json` / `special_tokens_map.json`;
    /// each may be a string or an `{"content": ...}` object.
    pub fn from_json(config: &serde_json::Value) -> Self {
        let get = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        SpecialTokens {
            bos: get("bos_token"),
            eos: get("eos_token"),
            pad: get("pad_token"),
            unk: get("unk_token"),
        }
    }

    /// From `tokenizer_config.json`, filling gaps from `special_tokens_map.json`. Missing files
    /// give no tokens.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let mut out = SpecialTokens::default();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let t = SpecialTokens::from_json(&read_json(&path)?);
            out.bos = out.bos.or(t.bos);
            out.eos = out.eos.or(t.eos);
            out.pad = out.pad.or(t.pad);
            out.unk = out.unk.or(t.unk);
        }
        Ok(out)
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// One chat message as HF templates receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

/// A message's content: a string (text models, lmms-finetune's inline `<image>`), or a list of
/// typed parts as HF processors of VLMs take it (`[{"type": "image"}, {"type": "text", ...}]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentPart {
    Text { text: String },
    Image,
    Video,
}

/// Which [`Content`] form messages get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentStyle {
    /// Plain strings, placeholders inline.
    #[default]
    Text,
    /// Typed parts: text split at each `<image>` / `<video>`, each piece trimmed, empty pieces
    /// dropped.
    Parts,
    /// [`ContentStyle::Parts`] for the turns, a plain string for the system message, for
    /// templates that read the system content as a string (Llama 3.2 Vision's
    /// `messages[0]['content']|trim`, which would print a list's repr).
    PartsTextSystem,
}

impl ContentStyle {
    /// What `template` expects: VLM templates that read `content[i]['type']` get typed parts,
    /// others plain strings (as HF processors pass them).
    pub fn for_template(template: &ChatTemplate) -> Self {
        if template.source().contains("type") {
            ContentStyle::Parts
        } else {
            ContentStyle::Text
        }
    }
}

/// The role names HF templates use.
pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A sample's conversation as template messages: its system prompt first (if any), then the
/// turns. In [`ContentStyle::Text`], each `<image>` / `<video>` of the sample is replaced by
/// `image_text` / `video_text` (pass `"<image>"` / `"<video>"` to keep them).
pub fn sample_messages(
    sample: &Sample,
    style: ContentStyle,
    image_text: &str,
    video_text: &str,
) -> Vec<Message> {
    let mut out = Vec::with_capacity(sample.turns.len() + 1);
    let mut push = |role: Role, text: &str| {
        let content = match style {
            ContentStyle::Text => {
                let mut t = text.to_string();
                if image_text != crate::dataset::IMAGE_PLACEHOLDER {
                    t = t.replace(crate::dataset::IMAGE_PLACEHOLDER, image_text);
                }
                if video_text != crate::dataset::VIDEO_PLACEHOLDER {
                    t = t.replace(crate::dataset::VIDEO_PLACEHOLDER, video_text);
                }
                Content::Text(t)
            }
            ContentStyle::PartsTextSystem if role == Role::System => {
                Content::Text(text.to_string())
            }
            ContentStyle::Parts | ContentStyle::PartsTextSystem => {
                Content::Parts(split_parts(text))
            }
        };
        out.push(Message {
            role: role_str(role).to_string(),
            content,
        });
    };
    if let Some(system) = &sample.system {
        push(Role::System, system);
    }
    for t in &sample.turns {
        push(t.role, &t.content);
    }
    out
}

/// Splits text at `<image>` / `<video>` into typed parts (text pieces trimmed, empty ones
/// dropped).
pub fn split_parts(text: &str) -> Vec<ContentPart> {
    use crate::dataset::{IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER};
    let mut parts = vec![];
    let mut rest = text;
    loop {
        let next = [
            (
                rest.find(IMAGE_PLACEHOLDER),
                IMAGE_PLACEHOLDER,
                ContentPart::Image,
            ),
            (
                rest.find(VIDEO_PLACEHOLDER),
                VIDEO_PLACEHOLDER,
                ContentPart::Video,
            ),
        ]
        .into_iter()
        .filter_map(|(pos, pat, part)| pos.map(|p| (p, pat, part)))
        .min_by_key(|(p, _, _)| *p);
        let (before, after) = match &next {
            Some((p, pat, _)) => (&rest[..*p], Some(&rest[p + pat.len()..])),
            None => (rest, None),
        };
        let piece = before.trim();
        if !piece.is_empty() {
            parts.push(ContentPart::Text {
                text: piece.to_string(),
            });
        }
        match (next, after) {
            (Some((_, _, part)), Some(after)) => {
                parts.push(part);
                rest = after;
            }
            _ => break,
        }
    }
    parts
}

/// Where a template came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// A file of a model directory (`chat_template.jinja`, `tokenizer_config.json`, ...).
    File(PathBuf),
    /// A built-in template, by name.
    BuiltIn(&'static str),
    /// Given as a string.
    Inline,
}

impl std::fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateOrigin::File(p) => write!(f, "{}", p.display()),
            TemplateOrigin::BuiltIn(name) => write!(f, "built-in template `{name}`"),
            TemplateOrigin::Inline => f.write_str("chat template"),
        }
    }
}

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    has_generation: bool,
    origin: TemplateOrigin,
    special: SpecialTokens,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special", &self.special)
            .finish_non_exhaustive()
    }
}

const TEMPLATE_NAME: &str = "chat_template";
const GENERATION_FILTER: &str = "lmms_generation";
/// Private-use characters that bracket `{% generation %}` output while rendering.
const GENERATION_START: char = '\u{E000}';
const GENERATION_END: char = '\u{E001}';

impl ChatTemplate {
    /// Compiles `source` (no special tokens yet: see [`ChatTemplate::with_special_tokens`]).
    pub fn new(source: impl Into<String>) -> Result<Self> {
        Self::with_origin(source.into(), TemplateOrigin::Inline)
    }

    fn with_origin(source: String, origin: TemplateOrigin) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter(GENERATION_FILTER, |body: String| {
            format!("{GENERATION_START}{body}{GENERATION_END}")
        });
        let (rewritten, has_generation) = rewrite_generation_tags(&source);
        env.add_template_owned(TEMPLATE_NAME, rewritten)
            .map_err(|e| Error::config(origin.to_string(), format!("chat template: {e}")))?;
        Ok(ChatTemplate {
            env,
            source,
            has_generation,
            origin,
            special: SpecialTokens::default(),
            extra: Default::default(),
        })
    }

    /// Sets the special tokens the template sees as `bos_token`, `eos_token`, ...
    pub fn with_special_tokens(mut self, special: SpecialTokens) -> Self {
        self.special = special;
        self
    }

    /// Passes an extra variable to every render (e.g. `date_string`).
    pub fn with_variable(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }

    /// A built-in template by name (see [`BUILTIN_TEMPLATES`]).
    pub fn builtin(name: &str) -> Option<Self> {
        let (name, source) = BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == name)?;
        Some(
            Self::with_origin(source.to_string(), TemplateOrigin::BuiltIn(name))
                .expect("built-in templates compile"),
        )
    }

    /// The template of a model directory, looked for where HF keeps one:
    /// `chat_template.jinja`, `chat_template.json`, `tokenizer_config.json`'s `chat_template` (a
    /// string, or a list of `{name, template}` of which `name` — default `"default"` — is taken),
    /// then `processor_config.json`'s. Special tokens come from `tokenizer_config.json`.
    /// `Ok(None)` when the directory has none.
    pub fn from_model_dir(dir: &Path, name: Option<&str>) -> Result<Option<Self>> {
        let Some((source, path)) = find_chat_template(dir, name)? else {
            return Ok(None);
        };
        let t = Self::with_origin(source, TemplateOrigin::File(path))?
            .with_special_tokens(SpecialTokens::from_model_dir(dir)?);
        Ok(Some(t))
    }

    /// Whether the template marks assistant text with `{% generation %}` blocks (then
    /// [`ChatTemplate::render_with_generation_spans`] reports them).
    pub fn has_generation_tags(&self) -> bool {
        self.has_generation
    }

    /// The template source as given (with any `{% generation %}` tags).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn origin(&self) -> &TemplateOrigin {
        &self.origin
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Renders `messages` as `apply_chat_template(..., tokenize=False)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_raw(messages, add_generation_prompt)
            .map_err(|reason| Error::config(self.origin.to_string(), reason))
    }

    /// Renders and returns the byte ranges of the text that `{% generation %}` blocks wrote
    /// (what transformers reports for `return_assistant_tokens_mask`).
    pub fn render_with_generation_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<std::ops::Range<usize>>)> {
        self.render_tracked(messages, add_generation_prompt)
            .map_err(|reason| Error::config(self.origin.to_string(), reason))
    }

    /// [`ChatTemplate::render`] with the failure as text (e.g. a `raise_exception` message).
    pub(crate) fn render_raw(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        self.render_tracked(messages, add_generation_prompt)
            .map(|(text, _)| text)
    }

    pub(crate) fn render_tracked(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<(String, Vec<std::ops::Range<usize>>), String> {
        let raw = self.render_marked(messages, add_generation_prompt)?;
        if !self.has_generation {
            return Ok((raw, vec![]));
        }
        let mut text = String::with_capacity(raw.len());
        let mut spans = vec![];
        let mut open: Option<usize> = None;
        for c in raw.chars() {
            match c {
                GENERATION_START if open.is_none() => open = Some(text.len()),
                GENERATION_END if open.is_some() => {
                    let start = open.take().expect("checked");
                    if start < text.len() {
                        spans.push(start..text.len());
                    }
                }
                GENERATION_START | GENERATION_END => {
                    return Err(
                        "nested {% generation %} blocks (or U+E000/U+E001 in the text)".into(),
                    );
                }
                c => text.push(c),
            }
        }
        if open.is_some() {
            return Err("unbalanced {% generation %} markers (U+E000/U+E001 in the text?)".into());
        }
        Ok((text, spans))
    }

    fn render_marked(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        #[derive(Serialize)]
        struct Ctx<'a> {
            messages: &'a [Message],
            add_generation_prompt: bool,
            tools: Option<()>,
            documents: Option<()>,
            #[serde(skip_serializing_if = "Option::is_none")]
            bos_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            eos_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pad_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            unk_token: Option<&'a str>,
            #[serde(flatten)]
            extra: &'a serde_json::Map<String, serde_json::Value>,
        }
        let ctx = Ctx {
            messages,
            add_generation_prompt,
            tools: None,
            documents: None,
            bos_token: self.special.bos.as_deref(),
            eos_token: self.special.eos.as_deref(),
            pad_token: self.special.pad.as_deref(),
            unk_token: self.special.unk.as_deref(),
            extra: &self.extra,
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| format!("chat template: {e}"))?;
        template
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| {
                if e.kind() == ErrorKind::InvalidOperation
                    && let Some(detail) = e.detail()
                {
                    format!("chat template raised: {detail}")
                } else {
                    format!("chat template failed: {e}")
                }
            })
    }
}

/// `(source, file it came from)` of a model directory's chat template; see
/// [`ChatTemplate::from_model_dir`].
pub fn find_chat_template(dir: &Path, name: Option<&str>) -> Result<Option<(String, PathBuf)>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() && name.is_none_or(|n| n == "default") {
        let text = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
        return Ok(Some((text, jinja)));
    }
    if name.is_some_and(|n| n != "default") {
        let named = dir
            .join("additional_chat_templates")
            .join(format!("{}.jinja", name.unwrap_or_default()));
        if named.is_file() {
            let text = std::fs::read_to_string(&named).map_err(|e| Error::io(&named, e))?;
            return Ok(Some((text, named)));
        }
    }
    for file in [
        "chat_template.json",
        "tokenizer_config.json",
        "processor_config.json",
    ] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let json = read_json(&path)?;
        match json.get("chat_template") {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) => {
                if name.is_none_or(|n| n == "default") {
                    return Ok(Some((s.clone(), path)));
                }
            }
            Some(serde_json::Value::Array(list)) => {
                let want = name.unwrap_or("default");
                let mut names = vec![];
                for item in list {
                    let n = item.get("name").and_then(|v| v.as_str());
                    let t = item.get("template").and_then(|v| v.as_str());
                    if let (Some(n), Some(t)) = (n, t) {
                        if n == want {
                            return Ok(Some((t.to_string(), path)));
                        }
                        names.push(n.to_string());
                    }
                }
                return Err(Error::config(
                    path,
                    format!(
                        "no chat template named `{want}` (the file has: {})",
                        names.join(", ")
                    ),
                ));
            }
            Some(_) => {
                return Err(Error::config(
                    path,
                    "`chat_template` must be a string or a list of {name, template}",
                ));
            }
        }
    }
    Ok(None)
}

/// transformers' `{% generation %}` ... `{% endgeneration %}` marks assistant text for
/// `return_assistant_tokens_mask`; minijinja has no such tag, so the tags become a filter block
/// (`{% filter lmms_generation %}` ... `{% endfilter %}`, whitespace control kept) whose filter
/// brackets the body with markers. Returns the new source and whether any tag was found.
fn rewrite_generation_tags(source: &str) -> (String, bool) {
    let mut found = false;
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return (out, found);
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[b.len()..]),
            None => (body, ""),
        };
        let keyword = match body.trim() {
            "generation" => Some("filter lmms_generation"),
            "endgeneration" => Some("endfilter"),
            _ => None,
        };
        match keyword {
            Some(k) => {
                found = true;
                let _ = write!(out, "{{%{lead} {k} {trail}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC time (transformers uses local time).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(secs, &format)
}

/// A small strftime over a Unix time (UTC): `%Y %y %m %d %e %b %B %a %A %H %I %M %S %p %j %%`.
pub(crate) fn strftime(unix_secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (h, mi, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{y}"),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)),
            Some('m') => write!(out, "{m:02}"),
            Some('d') => write!(out, "{d:02}"),
            Some('e') => write!(out, "{d:>2}"),
            Some('b') => write!(out, "{}", &month[..3]),
            Some('B') => write!(out, "{month}"),
            Some('a') => write!(out, "{}", &weekday[..3]),
            Some('A') => write!(out, "{weekday}"),
            Some('H') => write!(out, "{h:02}"),
            Some('I') => write!(out, "{:02}", if h % 12 == 0 { 12 } else { h % 12 }),
            Some('M') => write!(out, "{mi:02}"),
            Some('S') => write!(out, "{s:02}"),
            Some('p') => write!(out, "{}", if h < 12 { "AM" } else { "PM" }),
            Some('j') => write!(out, "{yday:03}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(v.as_usize().unwrap_or(0))),
        },
    };
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let a = v.get_item_by_index(0)?;
            let b = v.get_item_by_index(1)?;
            (
                a.as_str().unwrap_or(", ").to_string(),
                b.as_str().unwrap_or(": ").to_string(),
            )
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn write_json(
    out: &mut String,
    v: &Value,
    style: &JsonStyle,
    depth: usize,
) -> Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(ind) = &style.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                let _ = write!(out, "{v}");
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else if f == f.trunc() && f.abs() < 1e16 {
                    let _ = write!(out, "{f:.1}");
                } else {
                    let _ = write!(out, "{f}");
                }
            }
        }
        ValueKind::String => json_string(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, style, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                match k.as_str() {
                    Some(s) => json_string(out, s),
                    None => json_string(out, &k.to_string()),
                }
                out.push_str(&style.key_sep);
                write_json(out, &v.get_item(k)?, style, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => json_string(out, &v.to_string()),
    }
    Ok(())
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Built-in templates for models that ship none, by name (sources in `src/template/*.jinja`).
/// Each takes string content (placeholders inline) or typed parts; only `vicuna`, `qwen2` and
/// `qwen2-vl` add a default system prompt.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("llava-1.5", include_str!("template/llava-1.5.jinja")),
    ("vicuna", include_str!("template/vicuna.jinja")),
    ("chatml", include_str!("template/chatml.jinja")),
    ("qwen2", include_str!("template/qwen2.jinja")),
    ("qwen2-vl", include_str!("template/qwen2-vl.jinja")),
    ("internlm2", include_str!("template/internlm2.jinja")),
    ("llama-3", include_str!("template/llama-3.jinja")),
    ("phi-3", include_str!("template/phi-3.jinja")),
];

/// The names of the built-in templates.
pub fn builtin_template_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_TEMPLATES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_filter_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{% generation %}b{%- endgeneration -%}c{{ x }}{%if y%}"),
            (
                "a{% filter lmms_generation %}b{%- endfilter -%}c{{ x }}{%if y%}".to_string(),
                true
            )
        );
        assert!(!rewrite_generation_tags("{% if x %}{% endif %}").1);
        let t = ChatTemplate::new(
            "A{% generation %}B{{ 1 }}{% endgeneration %}C{% generation %}{% endgeneration %}",
        )
        .unwrap();
        assert!(t.has_generation_tags());
        let (text, spans) = t.render_with_generation_spans(&[], false).unwrap();
        assert_eq!(text, "AB1C");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0], 1..3);
    }

    #[test]
    fn strftime_known_dates() {
        assert_eq!(
            strftime(0, "%d %b %Y %H:%M:%S %A %j"),
            "01 Jan 1970 00:00:00 Thursday 001"
        );
        // 2024-02-29 12:34:56 UTC
        assert_eq!(
            strftime(1_709_210_096, "%Y-%m-%d %I%p %B %a %j"),
            "2024-02-29 12PM February Thu 060"
        );
        assert_eq!(strftime(1_735_689_599, "%d %B %Y"), "31 December 2024");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new(
            "{% set x = {'b': [1, 2], 'a': {'c': none, 'd': true}, 'e': []} %}\
             {{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'a<b>\"é\\n' | tojson }}|{{ 1.0 | tojson }}",
        )
        .unwrap();
        let out = t.render(&[], false).unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2], \"a\": {\"c\": null, \"d\": true}, \"e\": []}|{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": {\n    \"c\": null,\n    \"d\": true\n  },\n  \"e\": []\n}|\"a<b>\\\"é\\n\"|1.0"
        );
    }

    #[test]
    fn parts_split_at_placeholders() {
        assert_eq!(
            split_parts("<image>\nWhat is <video> this?  "),
            vec![
                ContentPart::Image,
                ContentPart::Text {
                    text: "What is".into()
                },
                ContentPart::Video,
                ContentPart::Text {
                    text: "this?".into()
                },
            ]
        );
        assert_eq!(
            split_parts("plain"),
            vec![ContentPart::Text {
                text: "plain".into()
            }]
        );
    }
}
