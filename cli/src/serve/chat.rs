//! Chat from the page: a conversation (the page keeps it and sends it whole with each
//! message), answered by a model and optional LoRA adapter through core's `Generator`, which
//! renders the family's chat template. Each loaded (model, adapter) pair lives on its own
//! thread, since generation is long blocking work and a generator is not `Send`; requests
//! reach it over a channel and its text comes back piece by piece for the SSE stream. The two
//! most recently used pairs stay loaded; a retrained adapter (newer weights file) is loaded
//! afresh.

use super::catalog::{ModelChoice, check_model, open_model};
use super::error::{ApiError, ApiResult};
use super::workspace::{Kind, Workspace};
use lmms_core::backend::DeviceSpec;
use lmms_core::collator::CollateOptions;
use lmms_core::data::{Role, Sample};
use lmms_core::generate::{GenerateOptions, Generator, StopReason, conversation};
use serde::Deserialize;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Loaded generators kept at once.
const CACHED: usize = 2;
/// Longest reply the page may ask for.
const MAX_NEW_TOKENS: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatTurn {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// Images of a user turn (workspace paths, e.g. uploads).
    #[serde(default)]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatForm {
    pub model: String,
    #[serde(default)]
    pub adapter: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    pub messages: Vec<ChatTurn>,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Which loaded generator serves a request: model, adapter, and the weights' modification
/// times (a retrained output is loaded again).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    model: ModelChoice,
    adapter: Option<PathBuf>,
    stamp: Vec<Option<SystemTime>>,
}

/// A checked chat request.
pub struct ChatPlan {
    key: Key,
    sample: Sample,
    options: GenerateOptions,
}

fn stamp_of(dir: &std::path::Path) -> Vec<Option<SystemTime>> {
    [
        "adapter_model.safetensors",
        "model.safetensors",
        "model.safetensors.index.json",
    ]
    .iter()
    .map(|f| {
        std::fs::metadata(dir.join(f))
            .and_then(|m| m.modified())
            .ok()
    })
    .collect()
}

impl ChatForm {
    pub fn plan(&self, ws: &Workspace) -> ApiResult<ChatPlan> {
        let model = check_model(ws, &self.model)?;
        let adapter = match self.adapter.as_deref().map(str::trim) {
            Some(a) if !a.is_empty() => {
                let dir = ws.existing("adapter", a, Kind::Dir)?;
                if !dir.join("adapter_config.json").is_file() {
                    return Err(ApiError::bad_request(format!(
                        "adapter `{a}` has no adapter_config.json: choose the output dir of \
                         a finished LoRA run"
                    )));
                }
                Some(dir)
            }
            _ => None,
        };
        let Some(last) = self.messages.last() else {
            return Err(ApiError::bad_request("type a message first"));
        };
        if last.role != "user" {
            return Err(ApiError::bad_request(
                "the conversation must end with a user message",
            ));
        }
        let placeholder = lmms_collators::dataset::IMAGE_PLACEHOLDER;
        let mut turns = Vec::with_capacity(self.messages.len());
        let mut images = Vec::new();
        for (i, t) in self.messages.iter().enumerate() {
            let role = match t.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "message {i}: unknown role `{other}` (user or assistant)"
                    )));
                }
            };
            if role == Role::Assistant && !t.images.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "message {i}: only user messages carry images"
                )));
            }
            for img in &t.images {
                images.push(ws.existing("image", img, Kind::File)?);
            }
            let text = if !t.images.is_empty() && !t.content.contains(placeholder) {
                format!("{}\n{}", placeholder.repeat(t.images.len()), t.content)
            } else {
                t.content.clone()
            };
            turns.push((role, text));
        }
        let defaults = GenerateOptions::default();
        let options = GenerateOptions {
            max_new_tokens: self
                .max_new_tokens
                .unwrap_or(defaults.max_new_tokens)
                .clamp(1, MAX_NEW_TOKENS),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            repetition_penalty: self
                .repetition_penalty
                .unwrap_or(defaults.repetition_penalty),
            seed: self.seed.unwrap_or(defaults.seed),
        };
        if !(options.temperature >= 0.0 && options.temperature.is_finite()) {
            return Err(ApiError::bad_request("temperature must be >= 0"));
        }
        if !(options.top_p > 0.0 && options.top_p <= 1.0) {
            return Err(ApiError::bad_request("top-p must be in (0, 1]"));
        }
        if !(options.repetition_penalty > 0.0 && options.repetition_penalty.is_finite()) {
            return Err(ApiError::bad_request("repetition penalty must be > 0"));
        }
        let system = self
            .system
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let mut stamp = match &model {
            ModelChoice::Dir(d) => stamp_of(d),
            ModelChoice::Id(_) => vec![],
        };
        if let Some(a) = &adapter {
            stamp.extend(stamp_of(a));
        }
        Ok(ChatPlan {
            key: Key {
                model,
                adapter,
                stamp,
            },
            sample: conversation(system, &turns, &images),
            options,
        })
    }
}

/// What the SSE stream of a reply carries.
#[derive(Debug)]
pub enum ChatEvent {
    /// Progress before the reply ("loading the model").
    Status(String),
    /// The next piece of the reply.
    Text(String),
    /// The reply is complete: token count, time, speed.
    Done(serde_json::Value),
    Error(String),
}

struct Request {
    sample: Sample,
    options: GenerateOptions,
    events: UnboundedSender<ChatEvent>,
}

struct Worker {
    key: Key,
    requests: std::sync::mpsc::Sender<Request>,
}

/// The loaded generators, most recently used last.
#[derive(Default)]
pub struct Generators {
    workers: Mutex<VecDeque<Worker>>,
}

impl Generators {
    /// Queues `plan` on its generator's thread (starting one, which loads the model, if
    /// needed) and returns the reply's events.
    pub fn submit(&self, plan: ChatPlan) -> UnboundedReceiver<ChatEvent> {
        let (tx, rx) = unbounded_channel();
        let mut request = Request {
            sample: plan.sample,
            options: plan.options,
            events: tx,
        };
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = workers.iter().position(|w| w.key == plan.key) {
            let w = workers.remove(i).expect("index from position");
            match w.requests.send(request) {
                Ok(()) => {
                    workers.push_back(w);
                    return rx;
                }
                // The thread ended (it panicked): start a new one.
                Err(e) => request = e.0,
            }
        }
        // Older generators of the same output (retrained since) and the least recently used
        // beyond the limit are dropped; their threads end once their queue is empty.
        workers.retain(|w| w.key.model != plan.key.model || w.key.adapter != plan.key.adapter);
        while workers.len() >= CACHED {
            workers.pop_front();
        }
        let (req_tx, req_rx) = std::sync::mpsc::channel::<Request>();
        let key = plan.key.clone();
        let spawned = std::thread::Builder::new()
            .name("lmms-serve-chat".into())
            .spawn(move || serve_generator(key, req_rx));
        match spawned {
            Ok(_) => {
                let _ = req_tx.send(request);
                workers.push_back(Worker {
                    key: plan.key,
                    requests: req_tx,
                });
            }
            Err(e) => {
                let _ = request
                    .events
                    .send(ChatEvent::Error(format!("cannot start a thread: {e}")));
            }
        }
        rx
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn load(key: &Key) -> Result<Box<dyn Generator>, String> {
    let (dir, runtime) = open_model(&key.model).map_err(|e| e.message)?;
    runtime
        .generator(
            &dir,
            key.adapter.as_deref(),
            &CollateOptions::default(),
            DeviceSpec::Cpu,
        )
        .map_err(|e| format!("{e:#}"))
}

/// The thread of one (model, adapter): loads it at the first request, then answers requests
/// in order until the server drops it.
fn serve_generator(key: Key, requests: std::sync::mpsc::Receiver<Request>) {
    let mut generator: Option<Box<dyn Generator>> = None;
    for req in requests {
        if req.events.is_closed() {
            continue;
        }
        let g = match &mut generator {
            Some(g) => g,
            None => {
                let _ = req
                    .events
                    .send(ChatEvent::Status("loading the model…".into()));
                let t = Instant::now();
                match std::panic::catch_unwind(|| load(&key)) {
                    Ok(Ok(g)) => {
                        let _ = req.events.send(ChatEvent::Status(format!(
                            "model loaded in {:.1} s",
                            t.elapsed().as_secs_f64()
                        )));
                        generator.insert(g)
                    }
                    Ok(Err(e)) => {
                        let _ = req.events.send(ChatEvent::Error(e));
                        continue;
                    }
                    Err(p) => {
                        let _ = req.events.send(ChatEvent::Error(format!(
                            "loading the model failed: {}",
                            panic_text(p.as_ref())
                        )));
                        continue;
                    }
                }
            }
        };
        let events = req.events.clone();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            g.generate(&req.sample, &req.options, &mut |piece| {
                if !piece.is_empty() {
                    let _ = events.send(ChatEvent::Text(piece.to_string()));
                }
            })
        }));
        let event = match result {
            Ok(Ok(out)) => {
                let tokens = out.ids.len();
                ChatEvent::Done(serde_json::json!({
                    "tokens": tokens,
                    "seconds": out.seconds,
                    "tokens_per_second": tokens as f64 / out.seconds.max(1e-9),
                    "prompt_tokens": out.prompt_tokens,
                    "stop": match out.stop {
                        StopReason::Stop(_) => "end of turn",
                        StopReason::MaxNewTokens => "max new tokens",
                    },
                }))
            }
            Ok(Err(e)) => ChatEvent::Error(format!("{e:#}")),
            Err(p) => {
                // The model's state is unknown after a panic: load it again next time.
                generator = None;
                ChatEvent::Error(format!("generation failed: {}", panic_text(p.as_ref())))
            }
        };
        let _ = req.events.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("m")).unwrap();
        std::fs::write(d.path().join("m/config.json"), "{}").unwrap();
        std::fs::create_dir_all(d.path().join("run")).unwrap();
        std::fs::write(d.path().join("pic.png"), "").unwrap();
        let w = Workspace::new(d.path()).unwrap();
        (d, w)
    }

    fn form(v: serde_json::Value) -> ChatForm {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn images_get_placeholders_and_paths_are_fenced() {
        let (_d, w) = ws();
        let plan = form(serde_json::json!({
            "model": "m", "system": " ",
            "messages": [{"role": "user", "content": "What is it?", "images": ["pic.png"]}]
        }))
        .plan(&w)
        .unwrap();
        assert_eq!(plan.sample.turns[0].content, "<image>\nWhat is it?");
        assert_eq!(plan.sample.images.len(), 1);
        assert_eq!(plan.sample.system, None);
        let e = form(serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x", "images": ["../etc/passwd"]}]
        }))
        .plan(&w)
        .err()
        .unwrap();
        assert!(e.message.contains("`..`"), "{}", e.message);
    }

    #[test]
    fn bad_conversations_and_adapters_are_refused() {
        let (_d, w) = ws();
        let e = form(serde_json::json!({"model": "m", "messages": []}))
            .plan(&w)
            .err()
            .unwrap();
        assert!(e.message.contains("message"), "{}", e.message);
        let e = form(serde_json::json!({
            "model": "m", "messages": [{"role": "assistant", "content": "hi"}]
        }))
        .plan(&w)
        .err()
        .unwrap();
        assert!(e.message.contains("end with a user"), "{}", e.message);
        let e = form(serde_json::json!({
            "model": "m", "adapter": "run", "messages": [{"role": "user", "content": "hi"}]
        }))
        .plan(&w)
        .err()
        .unwrap();
        assert!(e.message.contains("adapter_config.json"), "{}", e.message);
        let e = form(serde_json::json!({
            "model": "m", "top_p": 0.0, "messages": [{"role": "user", "content": "hi"}]
        }))
        .plan(&w)
        .err()
        .unwrap();
        assert!(e.message.contains("top-p"), "{}", e.message);
    }
}
