//! [`PartPlan`]: what the layers of one model part do while loading: train their weights
//! (full fine-tuning), stay frozen, or get LoRA adapters, fresh or read from a PEFT adapter.

use crate::error::{Error, Result};
use crate::nn::lora::{LoraAdapter, LoraInit};
use crate::nn::partial_lora::PartialLoraSpec;
use crate::nn::quant::QuantSpec;
use crate::strategy::{LoraConfig, PartStrategy, TargetModules};
use crate::weights::{KeyRules, WeightStore};
use burn::module::ParamId;
use burn::tensor::backend::Backend;
use std::path::Path;
use std::sync::Mutex;

/// A PEFT adapter file opened for loading: names are the checkpoint's module paths with
/// `.lora_A.weight` / `.lora_B.weight` appended, after the family's [`KeyRules`].
pub struct AdapterWeights {
    /// The LoRA tensors.
    pub store: WeightStore,
    pub config: LoraConfig,
    /// `config` as a loaded adapter runs: PEFT's eval mode, no dropout (burn's dropout acts on
    /// any autodiff backend, where `lmms parity` takes gradients).
    pub eval_config: LoraConfig,
    /// Files whose other tensors replace base weights (`modules_to_save`, and the
    /// `non_lora_trainables.safetensors` lmms writes), with the rules that name them.
    pub overrides: Vec<(std::path::PathBuf, KeyRules)>,
}

impl AdapterWeights {
    /// Opens `dir/adapter_config.json` + `dir/adapter_model.safetensors`.
    pub fn open(dir: &Path, rules: &KeyRules) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let cfg = crate::model_dir::read_json(&cfg_path)?;
        let config = lora_config_from_peft(&cfg, &cfg_path)?;
        // PEFT prefixes every key with `base_model.model.`; strip it, then map layouts.
        let mut adapter_rules = KeyRules::default();
        for (from, to) in &rules.renames {
            adapter_rules = adapter_rules.rename(&format!("base_model.model.{from}"), to);
        }
        let adapter_rules = adapter_rules.rename("base_model.model.", "");
        let file = dir.join("adapter_model.safetensors");
        let lora_rules = adapter_rules
            .clone()
            .keep_suffix(".lora_A.weight")
            .keep_suffix(".lora_B.weight");
        let store = WeightStore::from_paths(
            std::slice::from_ref(&file),
            &lora_rules,
            crate::loader::DType::F32,
        )?;
        let saved_rules = adapter_rules
            .ignore_suffix(".lora_A.weight")
            .ignore_suffix(".lora_B.weight");
        let mut overrides = vec![(file, saved_rules)];
        let loose = dir.join("non_lora_trainables.safetensors");
        if loose.is_file() {
            overrides.push((loose, rules.clone()));
        }
        Ok(AdapterWeights {
            store,
            eval_config: LoraConfig {
                dropout: 0.0,
                ..config.clone()
            },
            config,
            overrides,
        })
    }
}

/// Reads PEFT's `adapter_config.json`.
pub fn lora_config_from_peft(cfg: &serde_json::Value, path: &Path) -> Result<LoraConfig> {
    let peft_type = cfg
        .get("peft_type")
        .and_then(|v| v.as_str())
        .unwrap_or("LORA");
    if peft_type != "LORA" {
        return Err(Error::config(
            path,
            format!("peft_type `{peft_type}` is not LoRA"),
        ));
    }
    let r = cfg
        .get("r")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::config(path, "no integer `r`"))? as usize;
    let alpha = cfg
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .unwrap_or(8.0);
    let dropout = cfg
        .get("lora_dropout")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let use_rslora = cfg
        .get("use_rslora")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    for unsupported in ["use_dora", "rank_pattern", "alpha_pattern"] {
        let v = cfg.get(unsupported);
        let set = v.is_some_and(|v| {
            v.as_bool() == Some(true) || v.as_object().is_some_and(|o| !o.is_empty())
        });
        if set {
            return Err(Error::config(
                path,
                format!("`{unsupported}` is not supported"),
            ));
        }
    }
    let target_modules = match cfg.get("target_modules") {
        Some(serde_json::Value::String(s)) if s == "all-linear" => TargetModules::AllLinear,
        Some(serde_json::Value::String(s)) => TargetModules::Regex(s.clone()),
        Some(serde_json::Value::Array(a)) => TargetModules::Names(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => return Err(Error::config(path, "no `target_modules`")),
    };
    Ok(LoraConfig {
        r,
        alpha,
        dropout,
        target_modules,
        use_rslora,
    })
}

/// One LoRA layer of a built model: its checkpoint module path and its two parameters.
#[derive(Debug, Clone)]
pub struct LoraEntry {
    pub path: String,
    pub lora_a: ParamId,
    pub lora_b: ParamId,
}

/// Collects the LoRA layers while a model loads, so that gradients and exports can name them.
#[derive(Debug, Default)]
pub struct LoraRegistry {
    entries: Mutex<Vec<LoraEntry>>,
}

impl LoraRegistry {
    pub fn entries(&self) -> Vec<LoraEntry> {
        self.entries.lock().expect("lora registry lock").clone()
    }
}

/// How one part's layers load.
#[derive(Clone, Copy)]
pub struct PartPlan<'a> {
    /// Base weights train (full fine-tuning).
    pub trainable: bool,
    pub lora: Option<&'a LoraConfig>,
    /// Where LoRA weights come from; fresh PEFT initialisation when `None`.
    pub adapter: Option<&'a WeightStore>,
    pub registry: Option<&'a LoraRegistry>,
    /// The family's run-time module names: PEFT matches `target_modules` against those, so a
    /// layer is targeted when its checkpoint path or its run-time name matches.
    pub runtime_name: Option<&'a (dyn Fn(&str) -> String + Sync)>,
    /// QLoRA: frozen linear weights (except the LM head) are held quantized.
    pub quant: Option<QuantSpec>,
    /// Linears that carry a partial adapter of the base model (XComposer2's PLoRA); set by the
    /// family for its LLM, never by a strategy.
    pub partial: Option<PartialLoraSpec>,
    /// The plan of the LM head (whatever the checkpoint calls it: `lm_head`, InternLM2's
    /// `output`): PEFT's `all-linear` and bitsandbytes' quantization leave it alone.
    pub output_head: bool,
}

impl<'a> PartPlan<'a> {
    pub const FROZEN: PartPlan<'static> = PartPlan {
        trainable: false,
        lora: None,
        adapter: None,
        registry: None,
        runtime_name: None,
        quant: None,
        partial: None,
        output_head: false,
    };

    pub fn from_strategy(s: &'a PartStrategy, registry: &'a LoraRegistry) -> Self {
        PartPlan {
            trainable: matches!(s, PartStrategy::Full),
            lora: s.lora(),
            adapter: None,
            registry: Some(registry),
            runtime_name: None,
            quant: match s {
                PartStrategy::Qlora(q) => Some(QuantSpec {
                    kind: q.quant,
                    block_size: q.block_size,
                }),
                _ => None,
            },
            partial: None,
            output_head: false,
        }
    }

    /// LoRA from a PEFT adapter (frozen base).
    pub fn from_adapter(a: &'a AdapterWeights, registry: &'a LoraRegistry) -> Self {
        PartPlan {
            trainable: false,
            lora: Some(&a.eval_config),
            adapter: Some(&a.store),
            registry: Some(registry),
            runtime_name: None,
            quant: None,
            partial: None,
            output_head: false,
        }
    }

    /// This plan for the LM head.
    pub fn for_output_head(&self) -> Self {
        PartPlan {
            output_head: true,
            ..*self
        }
    }

    fn is_output_head(&self, path: &str) -> bool {
        self.output_head || path.ends_with("lm_head")
    }

    pub fn with_runtime_names(mut self, f: &'a (dyn Fn(&str) -> String + Sync)) -> Self {
        self.runtime_name = Some(f);
        self
    }

    /// How the frozen weight of the linear layer at `path` is stored: quantized under QLoRA,
    /// except the LM head (bitsandbytes leaves the output layer unquantized too).
    pub fn quant_for(&self, path: &str) -> Option<QuantSpec> {
        self.quant
            .filter(|_| !self.trainable && !self.is_output_head(path))
    }

    /// The LoRA adapter for the linear layer at `path`, if this plan targets it.
    pub fn lora_for<B: Backend>(
        &self,
        path: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Option<LoraAdapter<B>>> {
        let Some(config) = self.lora else {
            return Ok(None);
        };
        let targeted = match &config.target_modules {
            // PEFT's "all-linear" leaves the output layer alone.
            TargetModules::AllLinear => !self.is_output_head(path),
            t => {
                t.matches(path)?
                    || match self.runtime_name {
                        Some(f) => t.matches(&f(path))?,
                        None => false,
                    }
            }
        };
        if !targeted {
            return Ok(None);
        }
        let adapter = match self.adapter {
            Some(store) => {
                let v = store.root().pp(path);
                let a = v.linear_weight("lora_A.weight", d_in, config.r, device)?;
                let b = v.linear_weight("lora_B.weight", config.r, d_out, device)?;
                LoraAdapter::from_tensors(path, a, b, config)
            }
            None => LoraAdapter::new(path, d_in, d_out, config, LoraInit::Peft, device),
        };
        if let Some(registry) = self.registry {
            registry
                .entries
                .lock()
                .expect("lora registry lock")
                .push(LoraEntry {
                    path: path.to_string(),
                    lora_a: adapter.lora_a.id,
                    lora_b: adapter.lora_b.id,
                });
        }
        Ok(Some(adapter))
    }
}
