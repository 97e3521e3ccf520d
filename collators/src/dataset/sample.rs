//! One raw JSON sample -> [`Sample`], collecting every problem of the sample.

use super::alpaca;
use super::{
    DatasetOptions, Format, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, XCOMPOSER_IMAGE_PLACEHOLDER,
    resolve_media_path,
};
use lmms_core::data::{Role, Sample, SampleOrigin, Turn};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A sample that did not parse: its problems, and the media it names (checked all the same).
pub(super) struct Broken {
    pub problems: Vec<String>,
    pub images: Vec<PathBuf>,
    pub videos: Vec<PathBuf>,
}

pub(super) struct Parser<'a> {
    file: &'a Path,
    options: &'a DatasetOptions,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Non-overlapping occurrences of `pat` in `text`.
fn count(text: &str, pat: &str) -> usize {
    text.matches(pat).count()
}

impl<'a> Parser<'a> {
    pub fn new(file: &'a Path, options: &'a DatasetOptions) -> Self {
        Parser { file, options }
    }

    fn image_placeholders(&self) -> &'static [&'static str] {
        match self.options.format {
            Format::Auto => &[IMAGE_PLACEHOLDER, XCOMPOSER_IMAGE_PLACEHOLDER],
            Format::Llava => &[IMAGE_PLACEHOLDER],
            Format::XComposer2 => &[XCOMPOSER_IMAGE_PLACEHOLDER],
        }
    }

    /// The sample at `index`, or every problem it has (each a reason without file and index).
    pub fn parse(&self, value: Value, index: usize) -> Result<Sample, Broken> {
        let mut problems = vec![];
        let Value::Object(obj) = value else {
            return Err(Broken {
                problems: vec![format!("expected a JSON object, found {}", kind_of(&value))],
                images: vec![],
                videos: vec![],
            });
        };

        let mut system = match obj.get("system_prompt").or_else(|| obj.get("system")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                problems.push(format!(
                    "`system_prompt` must be a string, found {}",
                    kind_of(v)
                ));
                None
            }
        };

        let before = problems.len();
        let images = self.media_list(&obj, &["image", "images"], &mut problems);
        let videos = self.media_list(&obj, &["video", "videos"], &mut problems);
        let media_ok = problems.len() == before;

        let alpaca_turns;
        let turns_value = if alpaca::is_alpaca(&obj) {
            let roles = &self.options.roles;
            let name = |names: &[String], default: &'static str| {
                names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| default.to_string())
            };
            match alpaca::to_turns(
                &obj,
                &name(&roles.user, "user"),
                &name(&roles.assistant, "assistant"),
            ) {
                Ok(t) => {
                    alpaca_turns = Value::Array(t);
                    Ok(Some(&alpaca_turns))
                }
                Err(p) => Err(p),
            }
        } else {
            Ok(obj.get("conversations").or_else(|| obj.get("messages")))
        };
        let mut turns = vec![];
        // Every turn's text (whatever its role), for the placeholder count.
        let mut texts: Vec<(usize, Option<Role>, String)> = vec![];
        let mut all_texts = false;
        match turns_value {
            Err(p) => problems.extend(p),
            Ok(None) => problems.push(
                "missing `conversations` (the list of turns; or `messages`, or Alpaca's \
                 `instruction`/`output`)"
                    .into(),
            ),
            Ok(Some(Value::Array(list))) if list.is_empty() => {
                problems.push("`conversations` is empty".into())
            }
            Ok(Some(Value::Array(list))) => {
                turns = self.turns(list, &mut system, &mut texts, &mut problems);
                all_texts = texts.len() == list.len();
            }
            Ok(Some(v)) => problems.push(format!(
                "`conversations` must be a list of turns, found {}",
                kind_of(v)
            )),
        }

        // Placeholders against media files (when every turn has a text).
        let mut image_count = 0;
        let mut video_count = 0;
        for (i, role, text) in &texts {
            let n_img: usize = self
                .image_placeholders()
                .iter()
                .map(|p| count(text, p))
                .sum();
            let n_vid = count(text, VIDEO_PLACEHOLDER);
            if *role == Some(Role::Assistant) && n_img + n_vid > 0 {
                problems.push(format!(
                    "turn {}: a media placeholder in an assistant reply (images and videos \
                     belong in user turns)",
                    i
                ));
            }
            image_count += n_img;
            video_count += n_vid;
        }
        if let Some(s) = &system
            && (s.contains(IMAGE_PLACEHOLDER) || s.contains(VIDEO_PLACEHOLDER))
        {
            problems.push("a media placeholder in the system prompt".into());
        }
        if all_texts && media_ok {
            let names = self.image_placeholders().join("` or `");
            if image_count != images.len() {
                problems.push(format!(
                    "{image_count} `{names}` placeholder{} in the text but {} image{} in `image`",
                    plural(image_count),
                    images.len(),
                    plural(images.len()),
                ));
            }
            if video_count != videos.len() {
                problems.push(format!(
                    "{video_count} `{VIDEO_PLACEHOLDER}` placeholder{} in the text but {} video{} \
                     in `video`",
                    plural(video_count),
                    videos.len(),
                    plural(videos.len()),
                ));
            }
        }

        let images: Vec<PathBuf> = images
            .iter()
            .map(|p| resolve_media_path(self.options.image_folder.as_deref(), self.file, p))
            .collect();
        let videos: Vec<PathBuf> = videos
            .iter()
            .map(|p| resolve_media_path(self.options.video_folder.as_deref(), self.file, p))
            .collect();
        if !problems.is_empty() {
            return Err(Broken {
                problems,
                images,
                videos,
            });
        }
        if self.options.format != Format::Llava {
            for (_, t) in &mut turns {
                if t.content.contains(XCOMPOSER_IMAGE_PLACEHOLDER) {
                    t.content = t
                        .content
                        .replace(XCOMPOSER_IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER);
                }
            }
        }
        Ok(Sample {
            origin: SampleOrigin {
                file: self.file.to_path_buf(),
                index,
            },
            system,
            turns: turns.into_iter().map(|(_, t)| t).collect(),
            images,
            videos,
        })
    }

    fn media_list(
        &self,
        obj: &serde_json::Map<String, Value>,
        keys: &[&str],
        problems: &mut Vec<String>,
    ) -> Vec<String> {
        let Some((key, value)) = keys.iter().find_map(|k| obj.get(*k).map(|v| (*k, v))) else {
            return vec![];
        };
        let mut out = vec![];
        let mut push = |s: &str, problems: &mut Vec<String>| {
            if s.trim().is_empty() {
                problems.push(format!("`{key}` has an empty path"));
            } else {
                out.push(s.to_string());
            }
        };
        match value {
            Value::Null => {}
            Value::String(s) => push(s, problems),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(s) => push(s, problems),
                        v => problems.push(format!(
                            "`{key}` must hold file paths (strings), found {}",
                            kind_of(v)
                        )),
                    }
                }
            }
            v => problems.push(format!(
                "`{key}` must be a path or a list of paths, found {}",
                kind_of(v)
            )),
        }
        out
    }

    /// The user/assistant turns; a leading system turn moves into `system`.
    fn turns(
        &self,
        list: &[Value],
        system: &mut Option<String>,
        texts: &mut Vec<(usize, Option<Role>, String)>,
        problems: &mut Vec<String>,
    ) -> Vec<(usize, Turn)> {
        let roles = &self.options.roles;
        let mut turns = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, item) in list.iter().enumerate() {
            let Value::Object(t) = item else {
                problems.push(format!(
                    "turn {i}: expected an object with `from` and `value`, found {}",
                    kind_of(item)
                ));
                ok = false;
                continue;
            };
            let from = t.get("from").or_else(|| t.get("role"));
            let value = t.get("value").or_else(|| t.get("content"));
            let role = match from {
                Some(Value::String(name)) => match roles.role_of(name) {
                    Some(r) => Some(r),
                    None => {
                        problems.push(format!(
                            "turn {i}: unknown role `{name}` (known roles: {})",
                            roles.all_names()
                        ));
                        None
                    }
                },
                Some(v) => {
                    problems.push(format!(
                        "turn {i}: `from` must be a string, found {}",
                        kind_of(v)
                    ));
                    None
                }
                None => {
                    problems.push(format!("turn {i}: missing `from` (the speaker's role)"));
                    None
                }
            };
            let text = match value {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(parts)) => match content_parts(parts) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        problems.push(format!("turn {i}: {e}"));
                        None
                    }
                },
                Some(v) => {
                    problems.push(format!(
                        "turn {i}: `value` must be a string, found {}",
                        kind_of(v)
                    ));
                    None
                }
                None => {
                    problems.push(format!("turn {i}: missing `value` (the text)"));
                    None
                }
            };
            if let Some(text) = &text {
                texts.push((i, role, text.clone()));
            }
            let (Some(role), Some(text)) = (role, text) else {
                ok = false;
                continue;
            };
            if text.trim().is_empty() {
                problems.push(format!("turn {i}: empty {} turn", role_name(role)));
                ok = false;
                continue;
            }
            if role == Role::System {
                if i != 0 {
                    problems.push(format!("turn {i}: a system turn must be the first turn"));
                    ok = false;
                } else if system.is_some() {
                    problems.push(
                        "both `system_prompt` and a system turn: give the system prompt once"
                            .into(),
                    );
                    ok = false;
                } else {
                    *system = Some(text);
                }
                continue;
            }
            turns.push((
                i,
                Turn {
                    role,
                    content: text,
                },
            ));
        }
        if !ok {
            return vec![];
        }
        // Alternation: user, assistant, user, ..., assistant.
        for (k, (i, t)) in turns.iter().enumerate() {
            let expected = if k % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if t.role != expected {
                problems.push(format!(
                    "turn {i}: expected {} turn, found {} (turns must alternate user/assistant, \
                     starting with the user)",
                    match expected {
                        Role::User => "a user",
                        _ => "an assistant",
                    },
                    role_name(t.role)
                ));
                return vec![];
            }
        }
        match turns.last() {
            None => {
                problems.push("no user or assistant turn".into());
                return vec![];
            }
            Some((i, t)) if t.role == Role::User => {
                problems.push(format!(
                    "turn {i}: the conversation ends with a user turn: it has no reply to learn"
                ));
                return vec![];
            }
            _ => {}
        }
        turns
    }
}

/// OpenAI-style content parts: `{"type": "text", "text"}` parts joined, `{"type": "image"}` and
/// `{"type": "video"}` parts as placeholders (their files are listed in `images` / `videos`).
fn content_parts(parts: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (k, part) in parts.iter().enumerate() {
        let kind = part.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => match part.get("text") {
                Some(Value::String(t)) => out.push_str(t),
                _ => {
                    return Err(format!(
                        "content part {k}: a text part needs a string `text`"
                    ));
                }
            },
            Some("image") => out.push_str(IMAGE_PLACEHOLDER),
            Some("video") => out.push_str(VIDEO_PLACEHOLDER),
            Some(other) => {
                return Err(format!(
                    "content part {k}: unknown type `{other}` (known: text, image, video; \
                     image and video files go in the sample's `images` / `videos`)"
                ));
            }
            None => return Err(format!("content part {k}: missing `type`")),
        }
    }
    Ok(out)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
