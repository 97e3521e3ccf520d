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

/// Writes the adapter into `dir` (created if needed; other files there are left alone). Each
/// file is written atomically, the weights first and `adapter_config.json` last, so a config
/// never points at missing or partial weights.
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
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_f32(&dir.join("adapter_model.safetensors"), &tensors)?;
    let loose_path = dir.join("non_lora_trainables.safetensors");
    if !loose.is_empty() {
        write_f32(&loose_path, &loose)?;
    } else if loose_path.is_file() {
        std::fs::remove_file(&loose_path).map_err(|e| Error::io(&loose_path, e))?;
    }
    let json = serde_json::to_string_pretty(&config).expect("json");
    crate::fs::write_atomic(&dir.join("adapter_config.json"), json.as_bytes())
}

/// The base linear weights with each LoRA update folded in: `W + s * A * B` in our `[in, out]`
/// layout, by the base weight's parameter id.
pub fn merged_lora_weights<B: Backend, M: Module<B>>(
    model: &M,
    lora: &[LoraEntry],
    scaling: f64,
) -> Result<HashMap<ParamId, HostTensor<f32>>> {
    let mut ids = HashSet::new();
    for e in lora {
        ids.extend([
            e.lora_a,
            e.lora_b,
            crate::weights::param_id(&format!("{}.weight", e.path)),
        ]);
    }
    let mut v = collect_values(model, &ids);
    let mut out = HashMap::new();
    for e in lora {
        let wid = crate::weights::param_id(&format!("{}.weight", e.path));
        let (Some(a), Some(b), Some(mut w)) =
            (v.remove(&e.lora_a), v.remove(&e.lora_b), v.remove(&wid))
        else {
            return Err(Error::Unsupported(format!(
                "{}: LoRA or base weight missing",
                e.path
            )));
        };
        let (d_in, r, d_out) = (a.shape[0], a.shape[1], b.shape[1]);
        for i in 0..d_in {
            for k in 0..r {
                let aik = a.data[i * r + k] as f64 * scaling;
                if aik == 0.0 {
                    continue;
                }
                for o in 0..d_out {
                    w.data[i * d_out + o] += (aik * b.data[k * d_out + o] as f64) as f32;
                }
            }
        }
        out.insert(wid, w);
    }
    Ok(out)
}

/// Files of a model directory that describe how to use it rather than its weights; copied
/// next to what training writes so the output is a complete model or adapter directory.
pub const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
];

/// Copies the [`SIDE_FILES`] present in `from` into `to`.
pub fn copy_side_files(from: &Path, to: &Path) -> Result<()> {
    for name in SIDE_FILES {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::fs::write_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Writes a full model in the base checkpoint's own layout: every parameter under its file
/// name and shape, `config.json` and the side files copied from `base`. Shards above
/// `shard_bytes` with a `model.safetensors.index.json`, as `save_pretrained` does.
pub fn save_full_model<B: Backend, M: Module<B>>(
    dir: &Path,
    model: &M,
    info: &ModelInfo,
    base: &Path,
    shard_bytes: usize,
) -> Result<()> {
    save_full_model_with(dir, model, info, base, shard_bytes, HashMap::new())
}

/// [`save_full_model`] with some parameters' values replaced (in the module's layout), e.g.
/// linear weights with a LoRA update folded in.
pub fn save_full_model_with<B: Backend, M: Module<B>>(
    dir: &Path,
    model: &M,
    info: &ModelInfo,
    base: &Path,
    shard_bytes: usize,
    replaced: HashMap<ParamId, HostTensor<f32>>,
) -> Result<()> {
    let ids: HashSet<ParamId> = info.params.keys().copied().collect();
    let mut values = collect_values(model, &ids);
    values.extend(replaced);
    let mut tensors: Vec<(String, HostTensor<f32>)> = Vec::with_capacity(ids.len());
    for (id, p) in &info.params {
        let v = values.remove(id).ok_or_else(|| {
            Error::Unsupported(format!("{}: parameter not found in the model", p.name))
        })?;
        tensors.push((p.original.clone(), p.to_checkpoint(v)));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let total: usize = tensors.iter().map(|(_, t)| t.data.len() * 4).sum();
    if total <= shard_bytes {
        write_f32(&dir.join("model.safetensors"), &tensors)?;
    } else {
        let mut shards: Vec<Vec<(String, HostTensor<f32>)>> = vec![Vec::new()];
        let mut size = 0;
        for t in tensors {
            let bytes = t.1.data.len() * 4;
            if size + bytes > shard_bytes && !shards.last().expect("one shard").is_empty() {
                shards.push(Vec::new());
                size = 0;
            }
            size += bytes;
            shards.last_mut().expect("one shard").push(t);
        }
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        for (i, shard) in shards.iter().enumerate() {
            let name = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
            for (k, _) in shard {
                weight_map.insert(k.clone(), serde_json::Value::String(name.clone()));
            }
            write_f32(&dir.join(&name), shard)?;
        }
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let json = serde_json::to_string_pretty(&index).expect("json");
        crate::fs::write_atomic(&dir.join("model.safetensors.index.json"), json.as_bytes())?;
    }
    // The weights are f32 now, whatever the base was.
    let cfg_path = base.join("config.json");
    let mut cfg = crate::model_dir::read_json(&cfg_path)?;
    if let Some(obj) = cfg.as_object_mut() {
        for key in ["torch_dtype", "dtype"] {
            if obj.contains_key(key) {
                obj.insert(key.into(), serde_json::Value::String("float32".into()));
            }
        }
    }
    let json = serde_json::to_string_pretty(&cfg).expect("json");
    crate::fs::write_atomic(&dir.join("config.json"), json.as_bytes())?;
    copy_side_files(base, dir)
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
