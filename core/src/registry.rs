//! The family registry: every [`FamilyDescriptor`] submitted with
//! [`register_family!`](crate::register_family) by any linked crate, plus lookups by model id,
//! by Hugging Face hub path and by a model directory's `config.json`.

use crate::error::{Error, Result};
use crate::family::{FamilyDescriptor, ModelEntry};
use serde::Serialize;
use std::collections::HashMap;

/// What `inventory` collects: a pointer to a descriptor in the registering crate.
pub struct FamilyRegistration {
    descriptor: &'static FamilyDescriptor,
}

impl FamilyRegistration {
    pub const fn new(descriptor: &'static FamilyDescriptor) -> Self {
        FamilyRegistration { descriptor }
    }
}

inventory::collect!(FamilyRegistration);

/// Where a family's code came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// Linked into this binary; `crate_name` registered it.
    Linked { crate_name: &'static str },
    /// Loaded at run time from the dynamic plugin `plugin` (its package name) at `path`.
    Dylib {
        plugin: String,
        path: std::path::PathBuf,
    },
}

/// Families of the dynamic plugins loaded so far ([`crate::plugin::load`]).
static LOADED: std::sync::Mutex<Vec<RegisteredFamily>> = std::sync::Mutex::new(Vec::new());

/// Adds a loaded plugin's families to what [`Registry::linked`] returns.
pub(crate) fn add_loaded(families: Vec<RegisteredFamily>) {
    LOADED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(families);
}

#[derive(Debug, Clone, Serialize)]
pub struct RegisteredFamily {
    pub descriptor: &'static FamilyDescriptor,
    pub origin: Origin,
}

/// A model id resolved to its family.
#[derive(Debug, Clone, Copy)]
pub struct ModelMatch<'r> {
    pub family: &'r RegisteredFamily,
    pub model: &'static ModelEntry,
}

#[derive(Debug, Clone)]
pub struct Registry {
    families: Vec<RegisteredFamily>,
}

impl Registry {
    /// All families registered by crates linked into this binary and by the dynamic plugins
    /// loaded so far, sorted by family id.
    pub fn linked() -> Result<Self> {
        let mut families: Vec<RegisteredFamily> = inventory::iter::<FamilyRegistration>
            .into_iter()
            .map(|r| RegisteredFamily {
                descriptor: r.descriptor,
                origin: Origin::Linked {
                    crate_name: r.descriptor.crate_name,
                },
            })
            .collect();
        families.extend(
            LOADED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        Self::from_families(families)
    }

    /// Builds a registry, refusing two families that claim the same family id or model id.
    pub fn from_families(mut families: Vec<RegisteredFamily>) -> Result<Self> {
        families.sort_by_key(|f| f.descriptor.id);
        let mut family_ids: HashMap<&str, &str> = HashMap::new();
        let mut model_ids: HashMap<&str, &str> = HashMap::new();
        for f in &families {
            let d = f.descriptor;
            if d.status.is_implemented() && d.runtime.is_none() {
                return Err(Error::Unsupported(format!(
                    "family `{}` (crate `{}`) says it is implemented but has no runtime",
                    d.id, d.crate_name
                )));
            }
            if let Some(prev) = family_ids.insert(d.id, d.crate_name) {
                return Err(Error::DuplicateFamilyId {
                    id: d.id.to_string(),
                    first: prev.to_string(),
                    second: d.crate_name.to_string(),
                });
            }
            for m in d.models {
                if let Some(first) = model_ids.insert(m.id, d.id) {
                    return Err(Error::DuplicateModelId {
                        id: m.id.to_string(),
                        first: first.to_string(),
                        second: d.id.to_string(),
                    });
                }
            }
        }
        Ok(Registry { families })
    }

    pub fn families(&self) -> &[RegisteredFamily] {
        &self.families
    }

    pub fn family(&self, id: &str) -> Option<&RegisteredFamily> {
        self.families.iter().find(|f| f.descriptor.id == id)
    }

    /// Every (family, model) pair, in family order then the family's own model order.
    pub fn models(&self) -> impl Iterator<Item = ModelMatch<'_>> {
        self.families.iter().flat_map(|family| {
            family
                .descriptor
                .models
                .iter()
                .map(move |model| ModelMatch { family, model })
        })
    }

    /// Exact lookup of a user-facing model id (`qwen2-vl-7b-instruct`).
    pub fn by_model_id(&self, id: &str) -> Option<ModelMatch<'_>> {
        self.models().find(|m| m.model.id == id)
    }

    /// Lookup by Hugging Face hub path; case-insensitive like the hub itself.
    pub fn by_hf_path(&self, path: &str) -> Option<ModelMatch<'_>> {
        let path = path.trim_end_matches('/');
        self.models()
            .find(|m| m.model.hf_path.eq_ignore_ascii_case(path))
    }

    /// Model id or hub path, with a "did you mean" hint in the error.
    pub fn lookup(&self, query: &str) -> Result<ModelMatch<'_>> {
        self.by_model_id(query)
            .or_else(|| self.by_hf_path(query))
            .ok_or_else(|| Error::UnknownModel {
                query: query.to_string(),
                hint: self.suggestion(query),
            })
    }

    /// The family that loads a model directory, from its parsed `config.json`: the
    /// `architectures` list first (it tells LLaVA from LLaVA-NeXT), then `model_type`.
    pub fn for_config(&self, config: &serde_json::Value) -> Option<&RegisteredFamily> {
        let archs = config
            .get("architectures")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str());
        for arch in archs {
            if let Some(f) = self
                .families
                .iter()
                .find(|f| f.descriptor.handles_architecture(arch))
            {
                return Some(f);
            }
        }
        let model_type = config.get("model_type")?.as_str()?;
        self.families
            .iter()
            .find(|f| f.descriptor.handles_model_type(model_type))
    }

    fn suggestion(&self, query: &str) -> String {
        let q = query.to_ascii_lowercase();
        let best = self
            .models()
            .map(|m| (strsim::levenshtein(&q, m.model.id), m.model.id))
            .min_by_key(|(d, _)| *d);
        match best {
            Some((d, id)) if d <= q.len().max(4) / 2 => {
                format!("; did you mean `{id}`? (`lmms supported-models` lists every id)")
            }
            _ => "; `lmms supported-models` lists every id, or pass a local model directory"
                .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::{Modality, Status, StrategyKind};

    static A: FamilyDescriptor = FamilyDescriptor {
        id: "fam_a",
        name: "Family A",
        architectures: &["AForCausalLM"],
        model_types: &["a"],
        models: &[
            ModelEntry::new("a-1b", "org/A-1B"),
            ModelEntry::new("a-7b", "org/A-7B"),
        ],
        modalities: &[Modality::Image],
        strategies: &[StrategyKind::Lora],
        status: Status::Planned { note: "test" },
        crate_name: "test",
        runtime: None,
    };
    static B: FamilyDescriptor = FamilyDescriptor {
        id: "fam_b",
        name: "Family B",
        architectures: &["BForConditionalGeneration"],
        model_types: &["b", "a_next"],
        models: &[ModelEntry::new("a-7b", "org/B-7B")],
        modalities: &[Modality::Image],
        strategies: &[StrategyKind::Lora],
        status: Status::Planned { note: "later" },
        crate_name: "test",
        runtime: None,
    };

    fn reg(list: &[&'static FamilyDescriptor]) -> Result<Registry> {
        Registry::from_families(
            list.iter()
                .map(|d| RegisteredFamily {
                    descriptor: d,
                    origin: Origin::Linked { crate_name: "test" },
                })
                .collect(),
        )
    }

    #[test]
    fn duplicate_model_ids_are_refused() {
        let err = reg(&[&A, &B]).unwrap_err().to_string();
        assert!(
            err.contains("`a-7b`") && err.contains("fam_a") && err.contains("fam_b"),
            "{err}"
        );
    }

    #[test]
    fn lookups() {
        let r = reg(&[&A]).unwrap();
        assert_eq!(r.by_model_id("a-1b").unwrap().model.hf_path, "org/A-1B");
        assert_eq!(r.by_hf_path("ORG/a-7b/").unwrap().model.id, "a-7b");
        let err = r.lookup("a-1c").unwrap_err().to_string();
        assert!(err.contains("did you mean `a-1b`"), "{err}");
        let err = r.lookup("something-else-entirely").unwrap_err().to_string();
        assert!(err.contains("supported-models"), "{err}");
    }

    #[test]
    fn config_lookup_prefers_architectures() {
        let mut b = reg(&[&A]).unwrap().families;
        static B2: FamilyDescriptor = FamilyDescriptor {
            models: &[ModelEntry::new("b-7b", "org/B-7B")],
            ..B
        };
        b.push(RegisteredFamily {
            descriptor: &B2,
            origin: Origin::Linked { crate_name: "test" },
        });
        let r = Registry::from_families(b).unwrap();
        let cfg =
            serde_json::json!({"architectures": ["BForConditionalGeneration"], "model_type": "a"});
        assert_eq!(r.for_config(&cfg).unwrap().descriptor.id, "fam_b");
        let cfg = serde_json::json!({"model_type": "a"});
        assert_eq!(r.for_config(&cfg).unwrap().descriptor.id, "fam_a");
        let cfg = serde_json::json!({"architectures": ["Unknown"], "model_type": "zzz"});
        assert!(r.for_config(&cfg).is_none());
    }
}
