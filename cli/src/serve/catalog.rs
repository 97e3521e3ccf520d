//! What the page offers to choose from, and how its model field resolves. A model is either a
//! registered id / hub path (resolved by lmms through the local Hugging Face cache) or a model
//! directory inside the workspace. The workspace is scanned (a few levels deep, hidden and
//! build folders skipped) for model directories, dataset files and finished training runs.

use super::error::{ApiError, ApiResult};
use super::workspace::{Kind, Workspace};
use lmms_core::Registry;
use lmms_core::model_dir::{ModelDir, find_in_hf_cache, hf_cache_dir, resolve_model};
use lmms_core::runtime::DynFamily;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The page's model field, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// A registered model id or hub path, as typed.
    Id(String),
    /// A model directory inside the workspace (canonical).
    Dir(PathBuf),
}

impl ModelChoice {
    /// What `lmms train --model` gets, run from the workspace: the id, or the relative dir.
    pub fn arg(&self, ws: &Workspace) -> String {
        match self {
            ModelChoice::Id(id) => id.clone(),
            ModelChoice::Dir(d) => ws.relative(d),
        }
    }
}

pub fn check_model(ws: &Workspace, raw: &str) -> ApiResult<ModelChoice> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "choose a model: a model directory in the workspace or a registered model id",
        ));
    }
    let registry = Registry::linked().map_err(|e| ApiError::internal(format!("{e:#}")))?;
    if registry.by_model_id(raw).is_some() || registry.by_hf_path(raw).is_some() {
        return Ok(ModelChoice::Id(raw.to_string()));
    }
    let dir = ws.existing("model", raw, Kind::Dir).map_err(|e| {
        let hint = registry
            .lookup(raw)
            .err()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        ApiError::bad_request(format!("{e}; nor is it a registered model id{hint}"))
    })?;
    if !dir.join("config.json").is_file() {
        return Err(ApiError::bad_request(format!(
            "model `{raw}` has no config.json: not a Hugging Face model directory"
        )));
    }
    Ok(ModelChoice::Dir(dir))
}

/// A model opened for generation: its directory and its family's model code. A registered id
/// must resolve into the Hugging Face cache; a directory is already inside the workspace.
pub fn open_model(choice: &ModelChoice) -> ApiResult<(ModelDir, &'static dyn DynFamily)> {
    let registry = Registry::linked().map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let arg = match choice {
        ModelChoice::Id(id) => id.clone(),
        ModelChoice::Dir(d) => d.to_string_lossy().into_owned(),
    };
    let resolved = resolve_model(&registry, &arg, None)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    if let ModelChoice::Id(id) = choice {
        let root = resolved.dir.root.canonicalize().unwrap_or_default();
        let cache = hf_cache_dir().and_then(|c| c.canonicalize().ok());
        if !cache.is_some_and(|c| root.starts_with(c)) {
            return Err(ApiError::bad_request(format!(
                "model `{id}` resolved to {} which is not in the Hugging Face cache",
                root.display()
            )));
        }
    }
    let d = resolved.family.descriptor;
    let runtime = d
        .runtime
        .ok_or_else(|| ApiError::bad_request(format!("family `{}` has no model code", d.id)))?;
    Ok((resolved.dir, runtime))
}

#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub value: String,
    pub label: String,
}

/// A training output directory (it holds `lmms_train_config.toml`).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub dir: String,
    /// The `model` it was trained from, as given to `lmms train` (relative to the workspace).
    pub model: Option<String>,
    /// `adapter` (a PEFT LoRA adapter), `full` (a whole model), `checkpoint` (stopped before
    /// the end) or `empty`.
    pub kind: &'static str,
    pub steps: Option<u64>,
    pub last_loss: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Catalog {
    pub models: Vec<Choice>,
    pub datasets: Vec<Choice>,
    pub runs: Vec<Run>,
}

const SKIP_DIRS: &[&str] = &["target", "node_modules", "__pycache__", "venv"];
const NOT_DATA: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "chat_template.json",
    "adapter_config.json",
    "trainer_state.json",
    "package.json",
];
const MAX_DEPTH: usize = 4;
const MAX_ENTRIES: usize = 20_000;

/// Scans the workspace and lists the registered models found in the local Hugging Face cache.
pub fn scan(ws: &Workspace) -> Catalog {
    let mut cat = Catalog::default();
    let mut budget = MAX_ENTRIES;
    walk(ws, ws.root(), 0, &mut budget, &mut cat);
    for list in [&mut cat.models, &mut cat.datasets] {
        list.sort_by(|a, b| a.value.cmp(&b.value));
    }
    cat.runs.sort_by(|a, b| a.dir.cmp(&b.dir));
    if let (Ok(registry), Some(cache)) = (Registry::linked(), hf_cache_dir()) {
        for m in registry.models() {
            if m.family.descriptor.status.is_implemented()
                && find_in_hf_cache(&cache, m.model.hf_path).is_some()
            {
                cat.models.push(Choice {
                    value: m.model.id.to_string(),
                    label: format!("{} (Hugging Face cache)", m.model.id),
                });
            }
        }
    }
    cat
}

fn walk(ws: &Workspace, dir: &Path, depth: usize, budget: &mut usize, cat: &mut Catalog) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    let is_model = dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file());
    let is_run = dir.join("lmms_train_config.toml").is_file();
    if depth > 0 && is_run {
        cat.runs.push(read_run(ws, dir));
    }
    if depth > 0 && is_model {
        let rel = ws.relative(dir);
        cat.models.push(Choice {
            label: rel.clone(),
            value: rel,
        });
    }
    if is_model || is_run {
        return;
    }
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Symlinks are not followed: what the page lists is what the fence accepts.
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_dir() {
            if depth < MAX_DEPTH && !SKIP_DIRS.contains(&name.as_str()) {
                walk(ws, &path, depth + 1, budget, cat);
            }
        } else if ft.is_file() && is_dataset_name(&name) && looks_like_dataset(&path) {
            let rel = ws.relative(&path);
            cat.datasets.push(Choice {
                label: rel.clone(),
                value: rel,
            });
        }
    }
}

fn is_dataset_name(name: &str) -> bool {
    if NOT_DATA.contains(&name) || name.ends_with(".index.json") {
        return false;
    }
    name.ends_with(".json")
        || name.ends_with(".jsonl")
        || (name.ends_with(".txt") && name.contains("data"))
}

/// Whether a file's beginning has what lmms datasets have: turns (`conversations` /
/// `messages`), Alpaca's `instruction`, or a data.txt mixture line (`<file>.json <count>`).
fn looks_like_dataset(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(8192);
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    if file.take(8192).read_to_end(&mut head).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    if path.extension().is_some_and(|e| e == "txt") {
        return text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| {
                let mut parts = l.split_whitespace();
                let file = parts.next().unwrap_or("");
                (file.ends_with(".json") || file.ends_with(".jsonl"))
                    && parts.next().is_some_and(|n| n.parse::<f64>().is_ok())
            });
    }
    ["\"conversations\"", "\"messages\"", "\"instruction\""]
        .iter()
        .any(|k| text.contains(k))
}

fn read_run(ws: &Workspace, dir: &Path) -> Run {
    let model = std::fs::read_to_string(dir.join("lmms_train_config.toml"))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("model").and_then(|m| m.as_str()).map(str::to_string));
    let kind = if dir.join("adapter_config.json").is_file() {
        "adapter"
    } else if dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
    {
        "full"
    } else if !lmms_core::train::checkpoint::list_checkpoints(dir).is_empty() {
        "checkpoint"
    } else {
        "empty"
    };
    let (mut steps, mut last_loss) = (None, None);
    if let Ok(text) = std::fs::read_to_string(dir.join("metrics.jsonl")) {
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["split"] == "train"
            {
                steps = v["step"].as_u64();
                last_loss = v["loss"].as_f64();
            }
        }
    }
    Run {
        dir: ws.relative(dir),
        model,
        kind,
        steps,
        last_loss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_scan_finds_models_datasets_and_runs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("models/tiny")).unwrap();
        fs::write(p.join("models/tiny/config.json"), "{}").unwrap();
        fs::write(p.join("models/tiny/model.safetensors"), "").unwrap();
        fs::write(p.join("models/tiny/tokenizer.json"), "{}").unwrap();
        fs::write(p.join("train.json"), "[{\"conversations\": []}]").unwrap();
        fs::write(p.join("meta.json"), "{\"family\": \"llava\"}").unwrap();
        fs::write(p.join("data.txt"), "# mix\ntrain.json 0.5\n").unwrap();
        fs::write(p.join("mydata.txt"), "just notes\n").unwrap();
        fs::create_dir_all(p.join("out/run1")).unwrap();
        fs::write(
            p.join("out/run1/lmms_train_config.toml"),
            "model = \"models/tiny\"\n",
        )
        .unwrap();
        fs::write(p.join("out/run1/adapter_config.json"), "{}").unwrap();
        fs::write(
            p.join("out/run1/metrics.jsonl"),
            "{\"step\":1,\"split\":\"train\",\"loss\":2.0}\n{\"step\":2,\"split\":\"train\",\"loss\":1.5}\n",
        )
        .unwrap();
        fs::create_dir_all(p.join(".hidden")).unwrap();
        fs::write(p.join(".hidden/x.json"), "[]").unwrap();
        let ws = Workspace::new(p).unwrap();
        let cat = scan(&ws);
        let values = |l: &[Choice]| l.iter().map(|c| c.value.clone()).collect::<Vec<_>>();
        assert!(values(&cat.models).contains(&"models/tiny".to_string()));
        assert_eq!(values(&cat.datasets), vec!["data.txt", "train.json"]);
        assert_eq!(cat.runs.len(), 1);
        let r = &cat.runs[0];
        assert_eq!(
            (r.dir.as_str(), r.model.as_deref(), r.kind, r.steps),
            ("out/run1", Some("models/tiny"), "adapter", Some(2))
        );
    }
}
