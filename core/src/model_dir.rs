//! A Hugging Face model directory as the hub and `save_pretrained` lay it out, and the resolution
//! of what a user passes to `--model` (a local directory, a registered model id or a hub path) to
//! such a directory: `--model-path`, then the local Hugging Face cache. Nothing is downloaded.

use crate::error::{Error, Result};
use crate::registry::{ModelMatch, RegisteredFamily, Registry};
use std::path::{Path, PathBuf};

/// The weight files of a model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// `model.safetensors`.
    Single(PathBuf),
    /// `model.safetensors.index.json` and the shards its `weight_map` names, in order.
    Sharded {
        index: PathBuf,
        shards: Vec<PathBuf>,
    },
}

impl WeightFiles {
    pub fn files(&self) -> Vec<&Path> {
        match self {
            WeightFiles::Single(p) => vec![p.as_path()],
            WeightFiles::Sharded { shards, .. } => shards.iter().map(PathBuf::as_path).collect(),
        }
    }
}

/// An opened model directory: its parsed `config.json` and where its other files are.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
    pub config: serde_json::Value,
}

impl ModelDir {
    /// Opens `root`, reading `config.json`. Weight files are looked up by [`ModelDir::weights`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::config(&root, "not a directory"));
        }
        let config_path = root.join("config.json");
        if !config_path.is_file() {
            return Err(Error::config(
                &root,
                "no config.json: not a Hugging Face model directory",
            ));
        }
        let config = read_json(&config_path)?;
        Ok(ModelDir { root, config })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The optional file `name`, if present.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let p = self.path(name);
        p.is_file().then_some(p)
    }

    /// `torch_dtype` (older configs) or `dtype` (transformers 5), e.g. `bfloat16`.
    pub fn torch_dtype(&self) -> Option<&str> {
        let c = &self.config;
        c.get("torch_dtype")
            .or_else(|| c.get("dtype"))
            .or_else(|| c.get("text_config").and_then(|t| t.get("torch_dtype")))
            .and_then(|v| v.as_str())
    }

    /// Finds the safetensors weights. Pickled PyTorch weights are refused: unpickling runs
    /// arbitrary code, and converting them once is easy.
    pub fn weights(&self) -> Result<WeightFiles> {
        let index = self.path("model.safetensors.index.json");
        if index.is_file() {
            let json = read_json(&index)?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::config(&index, "no `weight_map` object"))?;
            let mut shards: Vec<PathBuf> = Vec::new();
            for file in map.values() {
                let file = file
                    .as_str()
                    .ok_or_else(|| Error::config(&index, "a `weight_map` value is not a string"))?;
                let p = self.path(file);
                if !shards.contains(&p) {
                    shards.push(p);
                }
            }
            shards.sort();
            if let Some(missing) = shards.iter().find(|p| !p.is_file()) {
                return Err(Error::config(
                    &index,
                    format!("names shard {} which does not exist", missing.display()),
                ));
            }
            return Ok(WeightFiles::Sharded { index, shards });
        }
        let single = self.path("model.safetensors");
        if single.is_file() {
            return Ok(WeightFiles::Single(single));
        }
        for pickle in ["pytorch_model.bin", "pytorch_model.bin.index.json"] {
            if self.path(pickle).is_file() {
                return Err(Error::config(
                    &self.root,
                    format!(
                        "has only pickled PyTorch weights ({pickle}); lmms reads safetensors only. \
                         Convert once with: python -c \"from transformers import AutoModel as M; \
                         M.from_pretrained('{0}', trust_remote_code=True).save_pretrained('{0}', safe_serialization=True)\"",
                        self.root.display()
                    ),
                ));
            }
        }
        Err(Error::config(
            &self.root,
            "no model.safetensors or model.safetensors.index.json",
        ))
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The root of the local Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or
/// `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// The snapshot directory of `hf_path` (e.g. `Qwen/Qwen2-VL-7B-Instruct`) in a hub cache:
/// the revision `refs/main` points at, else the only snapshot there is.
pub fn find_in_hf_cache(cache: &Path, hf_path: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", hf_path.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.join("config.json").is_file() {
            return Some(dir);
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    candidates.sort();
    (candidates.len() == 1).then(|| candidates.remove(0))
}

/// `--model` resolved: the family that loads it, the registered model id if one was named,
/// and the opened directory.
#[derive(Debug, Clone)]
pub struct ResolvedModel<'r> {
    pub family: &'r RegisteredFamily,
    pub model_id: Option<&'static str>,
    pub dir: ModelDir,
}

/// Resolves `--model` (and `--model-path`). A planned family is reported as not implemented
/// before any file is looked for, since no file would help.
pub fn resolve_model<'r>(
    registry: &'r Registry,
    model: &str,
    model_path: Option<&Path>,
) -> Result<ResolvedModel<'r>> {
    let as_path = Path::new(model);
    if model_path.is_none() && as_path.is_dir() {
        let dir = ModelDir::open(as_path)?;
        let family = registry.for_config(&dir.config).ok_or_else(|| {
            Error::config(
                dir.path("config.json"),
                format!(
                    "no registered family handles architectures {} / model_type {}; \
                     `lmms supported-models` lists the families",
                    dir.config
                        .get("architectures")
                        .unwrap_or(&serde_json::Value::Null),
                    dir.config
                        .get("model_type")
                        .unwrap_or(&serde_json::Value::Null),
                ),
            )
        })?;
        ensure_implemented(family, model)?;
        return Ok(ResolvedModel {
            family,
            model_id: None,
            dir,
        });
    }
    let ModelMatch {
        family,
        model: entry,
    } = registry.lookup(model)?;
    ensure_implemented(family, entry.id)?;
    let root = match model_path {
        Some(p) => p.to_path_buf(),
        None => {
            let cache = hf_cache_dir();
            cache
                .as_deref()
                .and_then(|c| find_in_hf_cache(c, entry.hf_path))
                .ok_or_else(|| Error::UnknownModel {
                    query: model.to_string(),
                    hint: format!(
                        ": no local copy of {} in the Hugging Face cache ({}); download it \
                         (e.g. `hf download {}`) or pass --model-path DIR",
                        entry.hf_path,
                        cache.map_or("no cache directory".into(), |c| c.display().to_string()),
                        entry.hf_path
                    ),
                })?
        }
    };
    let dir = ModelDir::open(root)?;
    if let Some(other) = registry.for_config(&dir.config)
        && other.descriptor.id != family.descriptor.id
    {
        return Err(Error::config(
            dir.path("config.json"),
            format!(
                "`{}` is a `{}` model but this directory holds a `{}` model",
                entry.id, family.descriptor.id, other.descriptor.id
            ),
        ));
    }
    Ok(ResolvedModel {
        family,
        model_id: Some(entry.id),
        dir,
    })
}

fn ensure_implemented(family: &RegisteredFamily, model: &str) -> Result<()> {
    match family.descriptor.status {
        crate::Status::Implemented => Ok(()),
        crate::Status::Planned { note } | crate::Status::ParityOnly { note } => {
            Err(Error::NotImplemented {
                model: model.to_string(),
                family: family.descriptor.id.to_string(),
                note: note.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn sharded_weights_follow_the_index() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("config.json"), r#"{"model_type":"x"}"#).unwrap();
        fs::write(
            d.path().join("model.safetensors.index.json"),
            r#"{"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let dir = ModelDir::open(d.path()).unwrap();
        let err = dir.weights().unwrap_err().to_string();
        assert!(
            err.contains("model-00001-of-00002.safetensors which does not exist"),
            "{err}"
        );
        fs::write(d.path().join("model-00001-of-00002.safetensors"), b"").unwrap();
        fs::write(d.path().join("model-00002-of-00002.safetensors"), b"").unwrap();
        match dir.weights().unwrap() {
            WeightFiles::Sharded { shards, .. } => {
                assert_eq!(shards.len(), 2);
                assert!(shards[0].ends_with("model-00001-of-00002.safetensors"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pickle_is_refused_with_a_conversion_hint() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("config.json"), r#"{"dtype":"bfloat16"}"#).unwrap();
        fs::write(d.path().join("pytorch_model.bin"), b"").unwrap();
        let dir = ModelDir::open(d.path()).unwrap();
        assert_eq!(dir.torch_dtype(), Some("bfloat16"));
        let err = dir.weights().unwrap_err().to_string();
        assert!(
            err.contains("pickled") && err.contains("safe_serialization"),
            "{err}"
        );
    }

    #[test]
    fn missing_config_is_named() {
        let d = tempfile::tempdir().unwrap();
        let err = ModelDir::open(d.path()).unwrap_err().to_string();
        assert!(err.contains("no config.json"), "{err}");
    }

    #[test]
    fn hf_cache_snapshot_follows_refs_main() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("models--Org--Name");
        for rev in ["aaa", "bbb"] {
            fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
            fs::write(repo.join("snapshots").join(rev).join("config.json"), "{}").unwrap();
        }
        assert_eq!(
            find_in_hf_cache(d.path(), "Org/Name"),
            None,
            "ambiguous without refs/main"
        );
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), "bbb\n").unwrap();
        assert_eq!(
            find_in_hf_cache(d.path(), "Org/Name").unwrap(),
            repo.join("snapshots/bbb")
        );
    }

    /// A planned (or parity-only) family is refused by id and by local directory before any
    /// file is looked for. (No built-in family is planned any more, so the CLI cannot show it.)
    #[test]
    fn planned_families_are_not_implemented() {
        use crate::family::{FamilyDescriptor, Modality, ModelEntry, Status, StrategyKind};
        use crate::registry::Origin;
        static PLANNED: FamilyDescriptor = FamilyDescriptor {
            id: "fam_planned",
            name: "Planned",
            architectures: &["PlannedForConditionalGeneration"],
            model_types: &["planned"],
            models: &[ModelEntry::new("planned-7b", "org/Planned-7B")],
            modalities: &[Modality::Image],
            strategies: &[StrategyKind::Lora],
            status: Status::Planned { note: "later" },
            crate_name: "test",
            runtime: None,
        };
        let registry = Registry::from_families(vec![RegisteredFamily {
            descriptor: &PLANNED,
            origin: Origin::Linked { crate_name: "test" },
        }])
        .unwrap();
        let err = resolve_model(&registry, "planned-7b", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`planned-7b`")
                && err.contains("family `fam_planned`")
                && err.contains("not implemented yet"),
            "{err}"
        );
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("config.json"),
            r#"{"architectures": ["PlannedForConditionalGeneration"]}"#,
        )
        .unwrap();
        let err = resolve_model(&registry, d.path().to_str().unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("family `fam_planned`") && err.contains("not implemented yet"),
            "{err}"
        );
    }
}
