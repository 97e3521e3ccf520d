//! Writing what the Hugging Face stack loads unchanged. A PEFT LoRA adapter
//! (`adapter_config.json` + `adapter_model.safetensors`) under the module names transformers
//! gives the model at run time, as PEFT itself saves them; parts trained fully next to LoRA go to
//! `modules_to_save`, and trained parameters that are not whole modules (LLaVA-NeXT's
//! `image_newline`) to `non_lora_trainables.safetensors` beside the adapter.

use crate::error::{Error, Result};
use crate::nn::plan::LoraEntry;
use crate::runtime::ModelInfo;
use crate::strategy::LoraConfig;
use crate::tensor_file::{HostTensor, write_f32};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

/// Values of the parameters in `wanted`, as stored in the module (row-major f32).
pub fn collect_values<B: Backend, M: Module<B>>(
    model: &M,
    wanted: &HashSet<ParamId>,
) -> HashMap<ParamId, HostTensor<f32>> {
    struct Collect<'a> {
        wanted: &'a HashSet<ParamId>,
        out: HashMap<ParamId, HostTensor<f32>>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if self.wanted.contains(&p.id) {
                let t = p.val();
                let shape = t.dims().to_vec();
                let data = t
                    .cast(burn::tensor::DType::F32)
                    .into_data()
                    .to_vec::<f32>()
                    .expect("f32 data");
                self.out.insert(p.id, HostTensor { shape, data });
            }
        }
    }
    let mut c = Collect {
        wanted,
        out: HashMap::new(),
    };
    model.visit(&mut c);
    c.out
}

fn transpose(t: HostTensor<f32>) -> HostTensor<f32> {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut data = vec![0f32; t.data.len()];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor {
        shape: vec![c, r],
        data,
    }
}

/// A `target_modules` regex that PEFT full-matches against exactly these module paths (layer
/// indices generalised, so the adapter reads well).
pub fn target_modules_regex(paths: &[String]) -> String {
    let mut alternatives = BTreeSet::new();
    for p in paths {
        let parts: Vec<String> = p
            .split('.')
            .map(|seg| {
                if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                    r"\d+".to_string()
                } else {
                    regex::escape(seg)
                }
            })
            .collect();
        alternatives.insert(parts.join(r"\."));
    }
    alternatives.into_iter().collect::<Vec<_>>().join("|")
}

/// What goes into a PEFT adapter directory.
pub struct PeftExport<'a> {
    pub lora: &'a [LoraEntry],
    pub config: &'a LoraConfig,
    pub info: &'a ModelInfo,
    /// Fully trained base parameters to save next to the LoRA weights.
    pub trained: &'a HashSet<ParamId>,
    /// Canonical module prefixes (e.g. `multi_modal_projector`) that PEFT should keep whole
    /// (`modules_to_save`); trained parameters outside them go to `non_lora_trainables`.
    pub module_prefixes: &'a [&'a str],
    /// Canonical name -> the module name transformers uses at run time.
    pub runtime_name: &'a dyn Fn(&str) -> String,
    pub base_model_name_or_path: Option<&'a str>,
}

/// Writes the adapter into `dir` (created or replaced atomically).
pub fn save_peft_adapter<B: Backend, M: Module<B>>(
    dir: &Path,
    model: &M,
    export: &PeftExport<'_>,
) -> Result<()> {
    let mut wanted: HashSet<ParamId> = export.trained.clone();
    for e in export.lora {
        wanted.insert(e.lora_a);
        wanted.insert(e.lora_b);
    }
    let mut values = collect_values(model, &wanted);
    let take = |values: &mut HashMap<ParamId, HostTensor<f32>>, id: ParamId, what: &str| {
        values
            .remove(&id)
            .ok_or_else(|| Error::Unsupported(format!("{what}: parameter not found in the model")))
    };
    let mut tensors: Vec<(String, HostTensor<f32>)> = Vec::new();
    let mut paths = Vec::new();
    for e in export.lora {
        let module = (export.runtime_name)(&e.path);
        // Ours are [in, r] and [r, out]; PEFT stores nn.Linear weights [r, in] and [out, r].
        let a = transpose(take(&mut values, e.lora_a, &e.path)?);
        let b = transpose(take(&mut values, e.lora_b, &e.path)?);
        tensors.push((format!("base_model.model.{module}.lora_A.weight"), a));
        tensors.push((format!("base_model.model.{module}.lora_B.weight"), b));
        paths.push(module);
    }
    let mut modules_to_save = BTreeSet::new();
    let mut loose: Vec<(String, HostTensor<f32>)> = Vec::new();
    let mut trained: Vec<&ParamId> = export.trained.iter().collect();
    trained.sort_by_key(|id| export.info.params.get(id).map(|p| p.name.clone()));
    for id in trained {
        let info = export.info.params.get(id).ok_or_else(|| {
            Error::Unsupported("a trained parameter has no checkpoint name".into())
        })?;
        let value = info.to_checkpoint(take(&mut values, *id, &info.name)?);
        let runtime = (export.runtime_name)(&info.name);
        match export
            .module_prefixes
            .iter()
            .find(|p| info.name.starts_with(&format!("{p}.")))
        {
            Some(prefix) => {
                let module = (export.runtime_name)(prefix);
                modules_to_save.insert(module.rsplit('.').next().unwrap_or(&module).to_string());
                tensors.push((format!("base_model.model.{runtime}"), value));
            }
            None => loose.push((runtime, value)),
        }
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": export.base_model_name_or_path,
        "r": export.config.r,
        "lora_alpha": export.config.alpha,
        "lora_dropout": export.config.dropout,
        "use_rslora": export.config.use_rslora,
        "target_modules": target_modules_regex(&paths),
        "modules_to_save": if modules_to_save.is_empty() { serde_json::Value::Null } else { serde_json::json!(modules_to_save) },
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_dora": false,
        "lora_bias": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": null,
        "layers_pattern": null,
        "exclude_modules": null,
        "target_parameters": null,
        "trainable_token_indices": null,
        "revision": null,
        "created_by": format!("lmms {}", crate::CORE_VERSION),
    });
    crate::fs::write_dir_atomic(dir, |tmp| {
        let json = serde_json::to_string_pretty(&config).expect("json");
        crate::fs::write_atomic(&tmp.join("adapter_config.json"), json.as_bytes())?;
        write_f32(&tmp.join("adapter_model.safetensors"), &tensors)?;
        if !loose.is_empty() {
            write_f32(&tmp.join("non_lora_trainables.safetensors"), &loose)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_regex_generalises_layers_and_full_matches() {
        let paths = vec![
            "model.language_model.layers.0.self_attn.q_proj".to_string(),
            "model.language_model.layers.1.self_attn.q_proj".to_string(),
            "model.language_model.layers.1.mlp.down_proj".to_string(),
        ];
        let re = target_modules_regex(&paths);
        assert_eq!(
            re,
            r"model\.language_model\.layers\.\d+\.mlp\.down_proj|model\.language_model\.layers\.\d+\.self_attn\.q_proj"
        );
        let full = regex::Regex::new(&format!("^(?:{re})$")).unwrap();
        assert!(full.is_match("model.language_model.layers.17.self_attn.q_proj"));
        assert!(!full.is_match("model.vision_tower.encoder.layers.1.self_attn.q_proj"));
    }
}
