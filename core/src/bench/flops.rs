//! Model FLOPs of a training step, for model FLOPs utilisation (MFU), and the bf16 peaks of
//! the GPUs we run on.
//!
//! # The formula
//!
//! For each part (vision tower, projector, LLM) with `N` matmul parameters (every parameter
//! except embedding tables; a tied LM head counts its embedding) of which `N_t` train, and `n`
//! tokens through it (the LLM: `batch x seq_len`; the vision tower and projector: the image
//! patches), a step costs
//!
//! ```text
//! 2·N·n            forward
//! + 2·N·n          gradient w.r.t. the activations (skipped for a frozen vision tower)
//! + 2·N_t·n        gradient w.r.t. the trained weights
//! ```
//!
//! so `6·N·n` for full fine-tuning and `≈ 4·N·n` for LoRA (frozen weights get no gradient),
//! plus attention, `12·L·d·s` per token for `L` layers of width `d` over `s` positions (forward
//! `4·L·d·s`: scores and values; backward twice that; no discount for the causal mask), for the
//! LLM and, with its patch count, the vision tower. This is the usual "6N + 12·L·d·s"
//! (PaLM, appendix B), with the backward of frozen weights left out. MFU = FLOPs per step /
//! (step seconds x the card's dense bf16 peak).

use crate::bench::batch::SyntheticBatch;
use crate::nn::plan::LoraEntry;
use crate::runtime::{FamilyModel, ModelInfo};
use crate::strategy::Part;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde_json::Value;
use std::collections::HashMap;

/// Parameter counts per part: `(all matmul parameters, trained ones)`, and embeddings.
#[derive(Debug, Clone, Default)]
pub struct ParamCount {
    pub matmul: HashMap<Part, (u64, u64)>,
    /// Embedding tables: `(all, trained)`.
    pub embeddings: (u64, u64),
    /// 4-bit weights (QLoRA), counted in `matmul` too.
    pub quantized: u64,
}

impl ParamCount {
    pub fn total(&self) -> u64 {
        self.matmul.values().map(|v| v.0).sum::<u64>() + self.embeddings.0
    }

    pub fn trainable(&self) -> u64 {
        self.matmul.values().map(|v| v.1).sum::<u64>() + self.embeddings.1
    }

    fn part(&self, p: Part) -> (u64, u64) {
        self.matmul.get(&p).copied().unwrap_or_default()
    }
}

fn is_embedding(name: &str) -> bool {
    [
        "embed_tokens.weight",
        "tok_embeddings.weight",
        "wte.weight",
        "position_embedding.weight",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

struct Counter<'a> {
    names: &'a HashMap<ParamId, String>,
    part_of: &'a dyn Fn(&str) -> Part,
    count: ParamCount,
}

impl Counter<'_> {
    fn add(&mut self, id: ParamId, n: u64, trains: bool) {
        let Some(name) = self.names.get(&id) else {
            return;
        };
        let t = if trains { n } else { 0 };
        if is_embedding(name) {
            self.count.embeddings.0 += n;
            self.count.embeddings.1 += t;
        } else {
            let e = self.count.matmul.entry((self.part_of)(name)).or_default();
            e.0 += n;
            e.1 += t;
        }
    }
}

impl<B: Backend> ModuleVisitor<B> for Counter<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.val().shape().num_elements() as u64;
        self.add(param.id, n, param.is_require_grad());
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        // Packed 4-bit codes: two weights a byte.
        let n = 2 * param.val().shape().num_elements() as u64;
        self.count.quantized += n;
        self.add(param.id, n, false);
    }
}

/// Counts the parameters of `model` by part.
pub fn count_params<B: Backend, F: FamilyModel>(
    family: &F,
    model: &F::Model<B>,
    info: &ModelInfo,
    lora: &[LoraEntry],
) -> ParamCount {
    let mut names: HashMap<ParamId, String> = info
        .params
        .iter()
        .map(|(id, p)| (*id, p.name.clone()))
        .collect();
    for e in lora {
        names.insert(e.lora_a, format!("{}.lora_A", e.path));
        names.insert(e.lora_b, format!("{}.lora_B", e.path));
    }
    let part_of = |n: &str| family.part_of(n);
    let mut counter = Counter {
        names: &names,
        part_of: &part_of,
        count: ParamCount::default(),
    };
    model.visit(&mut counter);
    counter.count
}

fn num(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_f64))
}

/// Model FLOPs of one training step (see the module docs).
pub fn step_flops(
    config: &Value,
    count: &ParamCount,
    tokens: usize,
    batch: &SyntheticBatch,
) -> f64 {
    let text = config
        .get("text_config")
        .filter(|t| t.is_object())
        .unwrap_or(config);
    let vision = config.get("vision_config").unwrap_or(&Value::Null);
    let tokens = tokens as f64;
    let patches = batch.vision_patches as f64;
    let seq = tokens / batch_rows(batch).max(1) as f64;
    let tied = text
        .get("tie_word_embeddings")
        .or_else(|| config.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let part = |p: Part, n: f64, backward: bool| {
        let (all, trained) = count.part(p);
        let (all, trained) = (all as f64, trained as f64);
        n * (2.0 * all + if backward { 2.0 * all } else { 0.0 } + 2.0 * trained)
    };
    let vision_trains = count.part(Part::VisionTower).1 > 0;
    let mut flops = part(Part::Llm, tokens, true)
        + part(Part::Projector, patches, vision_trains)
        + part(Part::VisionTower, patches, vision_trains);
    if tied {
        let (v, d) = (
            num(text, &["vocab_size"]).unwrap_or(0.0),
            num(text, &["hidden_size"]).unwrap_or(0.0),
        );
        flops += 4.0 * v * d * tokens;
    }
    let (l, d) = (
        num(text, &["num_hidden_layers"]).unwrap_or(0.0),
        num(text, &["hidden_size"]).unwrap_or(0.0),
    );
    flops += 12.0 * l * d * seq * tokens;
    if patches > 0.0 {
        let (lv, dv) = (
            num(vision, &["num_hidden_layers", "depth"]).unwrap_or(0.0),
            num(vision, &["hidden_size", "embed_dim"]).unwrap_or(0.0),
        );
        // Qwen2-VL's `hidden_size` is the merger's output; its tower's width is `embed_dim`.
        let dv = num(vision, &["embed_dim"]).unwrap_or(dv);
        let per_image = patches / images(batch).max(1) as f64;
        let factor = if vision_trains { 12.0 } else { 4.0 };
        flops += factor * lv * dv * per_image * patches;
    }
    flops
}

fn batch_rows(batch: &SyntheticBatch) -> usize {
    batch
        .tensors
        .iter()
        .find(|(n, _)| n == "input_ids")
        .map(|(_, t)| match t {
            crate::tensor_file::AnyTensor::I64(t) => t.shape[0],
            crate::tensor_file::AnyTensor::F32(t) => t.shape[0],
        })
        .unwrap_or(1)
}

fn images(batch: &SyntheticBatch) -> usize {
    let grid = batch.tensors.iter().find(|(n, _)| n == "image_grid_thw");
    let pixels = batch.tensors.iter().find(|(n, _)| n == "pixel_values");
    match (grid, pixels) {
        (Some((_, crate::tensor_file::AnyTensor::I64(g))), _) => g.shape[0],
        (None, Some((_, crate::tensor_file::AnyTensor::F32(p)))) => p.shape[0],
        _ => 0,
    }
}

/// Dense bf16 tensor-core peaks, TFLOPS, by a substring of the device name (first match wins).
pub const GPU_BF16_PEAKS: &[(&str, f64)] = &[
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("A10G", 70.0),
];

/// The dense bf16 peak of the device called `name`, TFLOPS (`LMMS_PEAK_TFLOPS` overrides).
pub fn bf16_peak_tflops(name: &str) -> Option<f64> {
    if let Some(v) = std::env::var("LMMS_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(v);
    }
    GPU_BF16_PEAKS
        .iter()
        .find(|(k, _)| name.contains(k))
        .map(|(_, v)| *v)
}

/// The name of NVIDIA GPU `index` as the driver reports it (`/proc/driver/nvidia/gpus/*/
/// information`, in bus order), without nvidia-smi.
pub fn nvidia_gpu_name(index: usize) -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let info = std::fs::read_to_string(dirs.get(index)?.join("information")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Model:"))
        .map(|m| m.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_by_name() {
        assert_eq!(bf16_peak_tflops("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(bf16_peak_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(bf16_peak_tflops("NVIDIA H200"), Some(989.4));
        assert_eq!(bf16_peak_tflops("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(bf16_peak_tflops("Tesla T4"), None);
    }

    #[test]
    fn lora_costs_four_n_full_six_n() {
        let batch = SyntheticBatch {
            tensors: vec![],
            media_tokens: 0,
            vision_patches: 0,
        };
        let cfg = serde_json::json!({"num_hidden_layers": 0, "hidden_size": 0});
        let mut c = ParamCount::default();
        c.matmul.insert(Part::Llm, (100, 0));
        assert_eq!(step_flops(&cfg, &c, 10, &batch), 4.0 * 100.0 * 10.0);
        c.matmul.insert(Part::Llm, (100, 100));
        assert_eq!(step_flops(&cfg, &c, 10, &batch), 6.0 * 100.0 * 10.0);
    }
}
