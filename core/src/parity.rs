//! `lmms parity`: runs a fixture directory (see the fixture contract in the design notes) and
//! compares with the reference outputs: forward logits and loss, and with `adapter/`, the LoRA
//! logits, loss and the gradient of the loss with respect to every LoRA tensor.

use crate::error::{Error, Result};
use crate::llm::loss::causal_lm_loss;
use crate::loader::DType;
use crate::model_dir::ModelDir;
use crate::nn::plan::{AdapterWeights, LoraRegistry, PartPlan};
use crate::runtime::{FamilyModel, ParityCheck, ParityReport, Plans, build_model};
use crate::tensor_file::TensorFile;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

pub const LOGITS_TOLERANCE: f64 = 1e-4;
pub const GRAD_TOLERANCE: f64 = 1e-3;

/// Compares `ours` with `reference` on the elements `keep` selects (all when `None`).
pub fn compare(
    name: &str,
    ours: &[f32],
    reference: &[f32],
    keep: Option<&[bool]>,
    tolerance: f64,
) -> ParityCheck {
    let mut max_abs = 0f64;
    let mut max_ref = 0f64;
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        if keep.is_some_and(|k| !k[i]) {
            continue;
        }
        let (a, b) = (*a as f64, *b as f64);
        let d = if a.is_finite() {
            (a - b).abs()
        } else {
            f64::INFINITY
        };
        max_abs = max_abs.max(d);
        max_ref = max_ref.max(b.abs());
    }
    ParityCheck {
        name: name.to_string(),
        max_abs_err: max_abs,
        max_rel_err: max_abs / max_ref.max(f64::MIN_POSITIVE),
        tolerance,
        note: None,
    }
}

fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(burn::tensor::DType::F32)
        .into_data()
        .to_vec::<f32>()
        .expect("f32 tensor data")
}

struct Tolerances {
    logits: f64,
    grads: f64,
    /// Cached vs rerun decoding logits: RoPE scalings that follow the sequence length (dynamic
    /// NTK) legitimately differ, as in transformers, since cached keys keep their rotation.
    cache_logits: f64,
}

fn tolerances(dir: &Path) -> Result<Tolerances> {
    let meta = dir.join("meta.json");
    let mut t = Tolerances {
        logits: LOGITS_TOLERANCE,
        grads: GRAD_TOLERANCE,
        cache_logits: LOGITS_TOLERANCE,
    };
    if meta.is_file() {
        let v = crate::model_dir::read_json(&meta)?;
        if let Some(x) = v.get("logits_rtol").and_then(|x| x.as_f64()) {
            t.logits = x;
        }
        if let Some(x) = v.get("grad_rtol").and_then(|x| x.as_f64()) {
            t.grads = x;
        }
        if let Some(x) = v.get("cache_logits_rtol").and_then(|x| x.as_f64()) {
            t.cache_logits = x;
        }
    }
    Ok(t)
}

/// Runs one fixture directory with family `F` on backend `B`.
pub fn run<B: AutodiffBackend, F: FamilyModel>(
    family: &F,
    dir: &Path,
    device: &B::Device,
) -> Result<ParityReport> {
    let model_dir = ModelDir::open(dir)?;
    let tol = tolerances(dir)?;
    let inputs = family.read_inputs(&TensorFile::open(dir.join("inputs.safetensors"))?)?;
    let tokens = family.tokens(&inputs);
    let labels = tokens
        .labels
        .as_ref()
        .ok_or_else(|| Error::tensor(dir.join("inputs.safetensors"), "labels", "is missing"))?;
    let vocab_keep = |vocab: usize| -> Option<Vec<bool>> {
        tokens.attention_mask.as_ref().map(|m| {
            m.data
                .iter()
                .flat_map(|&x| std::iter::repeat_n(x != 0, vocab))
                .collect()
        })
    };
    let expected = TensorFile::open(dir.join("expected.safetensors"))?;
    let mut checks = Vec::new();

    let frozen = Plans::uniform(PartPlan::FROZEN, None);
    let (model, _) = build_model::<B, F>(family, &model_dir, DType::F32, &frozen, device)?;
    let start = Instant::now();
    let logits = family.forward(&model, &inputs, device)?;
    let vocab = logits.dims()[2];
    let (loss, _) = causal_lm_loss(logits.clone(), &labels.data);
    let logits = to_vec(logits);
    let forward_seconds = start.elapsed().as_secs_f64();
    let keep = vocab_keep(vocab);
    checks.push(compare(
        "logits",
        &logits,
        &expected.f32("logits")?.data,
        keep.as_deref(),
        tol.logits,
    ));
    checks.push(compare(
        "loss",
        &to_vec(loss),
        &expected.f32("loss")?.data,
        None,
        tol.logits,
    ));
    let generate = dir.join("generate.safetensors");
    if generate.is_file() {
        checks.extend(greedy_checks(
            family,
            &model,
            &generate,
            tol.cache_logits,
            device,
        )?);
    }
    drop(model);

    let adapter_dir = dir.join("adapter");
    if adapter_dir.is_dir() {
        let registry = LoraRegistry::default();
        let adapter = AdapterWeights::open(&adapter_dir, &family.key_rules())?;
        let names = |n: &str| family.runtime_name(n);
        let plan = PartPlan::from_adapter(&adapter, &registry).with_runtime_names(&names);
        let plans = Plans::uniform(plan, Some(&adapter));
        let (model, _) = build_model::<B, F>(family, &model_dir, DType::F32, &plans, device)?;
        let expected = TensorFile::open(dir.join("expected_lora.safetensors"))?;
        let logits = family.forward(&model, &inputs, device)?;
        let (loss, _) = causal_lm_loss(logits.clone(), &labels.data);
        checks.push(compare(
            "lora.logits",
            &to_vec(logits),
            &expected.f32("logits")?.data,
            keep.as_deref(),
            tol.logits,
        ));
        checks.push(compare(
            "lora.loss",
            &to_vec(loss.clone()),
            &expected.f32("loss")?.data,
            None,
            tol.logits,
        ));

        let grads = loss.backward();
        let mut wanted: HashMap<ParamId, (String, bool)> = HashMap::new();
        for e in registry.entries() {
            for (id, which) in [(e.lora_a, "lora_A"), (e.lora_b, "lora_B")] {
                let canonical = format!("{}.{which}.weight", e.path);
                let peft = adapter
                    .store
                    .original_name(&canonical)
                    .unwrap_or(&canonical)
                    .to_string();
                wanted.insert(id, (peft, which == "lora_A"));
            }
        }
        let mut collector = GradCollector::<B> {
            wanted: &wanted,
            grads: &grads,
            found: HashMap::new(),
        };
        model.visit(&mut collector);
        let mut expected_grads: Vec<String> = expected
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix("grad.").map(str::to_string))
            .collect();
        expected_grads.sort();
        for name in &expected_grads {
            let ours = collector.found.remove(name).ok_or_else(|| {
                Error::tensor(
                    dir.join("expected_lora.safetensors"),
                    format!("grad.{name}"),
                    "has no LoRA parameter of that name in the model lmms built",
                )
            })?;
            let theirs = expected.f32(&format!("grad.{name}"))?;
            checks.push(compare(
                &format!("lora.grad.{name}"),
                &ours,
                &theirs.data,
                None,
                tol.grads,
            ));
        }
        if let Some(extra) = collector.found.keys().next() {
            return Err(Error::tensor(
                dir.join("expected_lora.safetensors"),
                format!("grad.{extra}"),
                "is missing: lmms built a LoRA parameter the reference has no gradient for",
            ));
        }
    }
    Ok(ParityReport {
        checks,
        forward_seconds,
    })
}

/// The greedy continuation of the prompt in `generate.safetensors` (`prompt_<input name>`
/// tensors, batch 1) against the reference's `generated_ids` `[1, N]`: with the family's KV
/// cache when it has one, and without.
fn greedy_checks<B: Backend, F: FamilyModel>(
    family: &F,
    model: &F::Model<B>,
    path: &Path,
    cache_tolerance: f64,
    device: &B::Device,
) -> Result<Vec<ParityCheck>> {
    let file = TensorFile::open(path)?;
    let want = file.i64("generated_ids")?;
    if want.shape.first() != Some(&1) {
        return Err(Error::tensor(
            path,
            "generated_ids",
            format!("must be [1, N] (one prompt), is {:?}", want.shape),
        ));
    }
    let prompt = file.with_prefix("prompt_");
    let mut checks = Vec::new();
    let n = want.data.len();
    let mut runs = Vec::new();
    for use_cache in [true, false] {
        let mut inputs = family.read_inputs(&prompt)?;
        if !use_cache && family.tokens_mut(&mut inputs).is_none() {
            // Only the cached path exists (the inputs hold more than token ids per position).
            continue;
        }
        let run = crate::decode::greedy(family, model, inputs, n, use_cache, device)?;
        if use_cache != run.cached {
            // No KV cache in this family: the uncached run below is the only one.
            continue;
        }
        let equal = run
            .ids
            .iter()
            .zip(&want.data)
            .take_while(|(a, b)| i64::from(**a) == **b)
            .count();
        checks.push(ParityCheck {
            name: if run.cached {
                "generate"
            } else {
                "generate.no_cache"
            }
            .into(),
            max_abs_err: (n - equal) as f64,
            max_rel_err: (n - equal) as f64,
            tolerance: 0.0,
            note: Some(if equal == n {
                format!("{n}/{n} greedy ids equal")
            } else {
                format!(
                    "first {equal}/{n} greedy ids equal; ours {:?}, reference {:?}",
                    run.ids, want.data
                )
            }),
        });
        runs.push(run);
    }
    // The cache must not change the numbers: each step's logits, cached vs rerun.
    if let [cached, full] = runs.as_slice() {
        let steps = cached
            .ids
            .iter()
            .zip(&full.ids)
            .take_while(|(a, b)| a == b)
            .count();
        let flat = |r: &crate::decode::Greedy| r.logits[..steps].concat();
        checks.push(compare(
            "generate.cache_logits",
            &flat(cached),
            &flat(full),
            None,
            cache_tolerance,
        ));
    }
    Ok(checks)
}

/// Gradients of the LoRA parameters, in PEFT's `[r, in]` / `[out, r]` layout.
struct GradCollector<'a, B: AutodiffBackend> {
    wanted: &'a HashMap<ParamId, (String, bool)>,
    grads: &'a B::Gradients,
    found: HashMap<String, Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradCollector<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((name, _)) = self.wanted.get(&param.id) else {
            return;
        };
        // LoRA parameters are 2-D: ours `[in, r]` / `[r, out]`, PEFT's the transpose.
        let dims = param.val().dims();
        let (rows, cols) = (dims[0], dims[D - 1]);
        let grad = match param.val().grad(self.grads) {
            Some(g) => to_vec(g.reshape([rows, cols]).transpose()),
            // A parameter the loss does not reach has a zero gradient.
            None => vec![0.0; rows * cols],
        };
        self.found.insert(name.clone(), grad);
    }
}
