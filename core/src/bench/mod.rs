//! `lmms bench`: the training step of a model of a given config (random weights, so no
//! checkpoint is needed) on a synthetic batch of a given shape, timed. The step is the one
//! `lmms train` runs ([`Trainer::micro_step`]: forward, loss, backward, the grouped AdamW step
//! with global-norm clipping); only the model's weights and the batch are made up.
//!
//! - [`presets`]: configs with the real shapes of a few hub models, and small ones for CPU.
//! - [`random`]: the random weights a [`WeightStore::random`] hands out.
//! - [`batch`]: the synthetic batch, in the fixture format (`inputs.safetensors`), which the
//!   Python baseline `tools/bench/hf_bench.py` reads too.
//! - [`flops`]: the FLOPs count behind model FLOPs utilisation, and the GPUs' peaks.
//! - [`memory`]: peak memory (CPU: peak RSS; CUDA: what cubecl's memory pools report).

pub mod batch;
pub mod flops;
pub mod memory;
pub mod presets;
pub mod random;

use crate::error::{Error, Result};
use crate::loader::DType;
use crate::model_dir::ModelDir;
use crate::nn::plan::{LoraRegistry, PartPlan};
use crate::runtime::{FamilyModel, ModelInfo, Plans};
use crate::strategy::{Part, StrategySpec, TrainStrategy};
use crate::tensor_file::TensorFile;
use crate::train::optimizer::OptimizerConfig;
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::train::trainer::{Trainer, param_groups};
use crate::weights::WeightStore;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use std::path::Path;
use std::time::Instant;

pub use batch::{BatchSpec, SyntheticBatch, synthetic_batch};
pub use random::RandomWeights;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub strategy: StrategySpec,
    pub batch: BatchSpec,
    pub warmup: usize,
    pub steps: usize,
    /// Weights as loaded: `Bf16` is `lmms train --bf16`'s mixed precision (frozen weights and
    /// activations bf16, trained weights and optimizer state f32).
    pub dtype: DType,
    pub learning_rate: f64,
    /// Layer-level activation checkpointing, as `lmms train --gradient-checkpointing`.
    pub gradient_checkpointing: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BenchReport {
    /// Wall time of each timed step, seconds.
    pub step_seconds: Vec<f64>,
    pub mean_seconds: f64,
    pub median_seconds: f64,
    pub min_seconds: f64,
    /// Tokens (batch x seq_len) per step.
    pub tokens_per_step: usize,
    /// `tokens_per_step / median_seconds`.
    pub tokens_per_second: f64,
    /// Peak memory over warm-up and timed steps, bytes (see [`memory`]).
    pub peak_memory_bytes: Option<u64>,
    /// What `peak_memory_bytes` is.
    pub memory_kind: String,
    pub params_total: u64,
    pub params_trainable: u64,
    /// Model FLOPs of one step ([`flops::step_flops`]).
    pub flops_per_step: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Seconds to build the model with random weights.
    pub build_seconds: f64,
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (mean, median, v[0])
}

/// Writes the batch of `options` for the model in `dir` to `dir/inputs.safetensors`.
pub fn write_batch(dir: &ModelDir, spec: &BatchSpec) -> Result<SyntheticBatch> {
    let batch = synthetic_batch(&dir.config, spec)?;
    crate::tensor_file::write_any(&dir.path("inputs.safetensors"), &batch.tensors)?;
    Ok(batch)
}

/// Builds `family`'s model for the config in `dir` with random weights, under `strategy`.
pub fn build_random<B: AutodiffBackend, F: FamilyModel>(
    family: &F,
    dir: &ModelDir,
    strategy: &StrategySpec,
    dtype: DType,
    registry: &LoraRegistry,
    device: &B::Device,
) -> Result<(F::Model<B>, ModelInfo)> {
    let names = |n: &str| family.runtime_name(n);
    let plan = |part: Part| {
        PartPlan::from_strategy(strategy.part(part), registry).with_runtime_names(&names)
    };
    let plans = Plans {
        vision_tower: plan(Part::VisionTower),
        projector: plan(Part::Projector),
        llm: plan(Part::Llm),
        adapter: None,
    };
    let store = WeightStore::random(RandomWeights::default(), dtype);
    let model = family.build(dir, &store, &plans, device)?;
    Ok((
        model,
        ModelInfo {
            params: store.param_infos(),
        },
    ))
}

/// Runs the benchmark of `family` on backend `B`: the model of `dir`'s config with random
/// weights, the batch in `dir/inputs.safetensors` (see [`write_batch`]), `warmup` steps, then
/// `steps` timed ones. `memory` reads the backend's memory figure after each step.
pub fn run<B: AutodiffBackend, F: FamilyModel>(
    family: &F,
    dir: &ModelDir,
    batch: &SyntheticBatch,
    options: &BenchOptions,
    device: &B::Device,
    memory: &dyn memory::MemoryProbe,
) -> Result<BenchReport>
where
    F::Model<B>: AutodiffModule<B>,
{
    options.strategy.validate()?;
    B::seed(device, options.batch.seed);
    let started = Instant::now();
    let registry = LoraRegistry::default();
    let (model, info) = build_random::<B, F>(
        family,
        dir,
        &options.strategy,
        options.dtype,
        &registry,
        device,
    )?;
    let lora = registry.entries();
    let count = flops::count_params(family, &model, &info, &lora);
    let groups = param_groups(family, &model, &info, &lora)?;
    let build_seconds = started.elapsed().as_secs_f64();

    let file = TensorFile::open(dir.path("inputs.safetensors"))?;
    let inputs = family.read_inputs(&file)?;
    let tokens = family.tokens(&inputs);
    let tokens_per_step = tokens.batch() * tokens.seq();
    let optimizer = OptimizerConfig {
        learning_rate: options.learning_rate,
        ..Default::default()
    };
    let schedule = Schedule {
        kind: ScheduleKind::Constant,
        warmup_steps: 0,
        total_steps: (options.warmup + options.steps) as u64,
    };
    let mut trainer = Trainer::new(
        family,
        model,
        groups,
        &options.strategy,
        optimizer,
        schedule,
        1,
        device.clone(),
    )
    .with_gradient_checkpointing(options.gradient_checkpointing);
    let sync =
        || B::sync(device).map_err(|e| Error::Unsupported(format!("device sync failed: {e:?}")));
    memory.reset();
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut times = Vec::with_capacity(options.steps);
    for i in 0..options.warmup + options.steps {
        let t0 = Instant::now();
        let stats = trainer
            .micro_step(&inputs)?
            .ok_or_else(|| Error::Unsupported("no optimizer step was taken".into()))?;
        sync()?;
        let dt = t0.elapsed().as_secs_f64();
        memory.sample();
        if i == 0 {
            first_loss = stats.loss;
        }
        last_loss = stats.loss;
        if i >= options.warmup {
            times.push(dt);
        }
        tracing::debug!("step {}: {:.1} ms, loss {:.4}", i + 1, dt * 1e3, stats.loss);
    }
    let (mean, median, min) = stats(times.clone());
    Ok(BenchReport {
        step_seconds: times,
        mean_seconds: mean,
        median_seconds: median,
        min_seconds: min,
        tokens_per_step,
        tokens_per_second: tokens_per_step as f64 / median,
        peak_memory_bytes: memory.peak(),
        memory_kind: memory.kind().to_string(),
        params_total: count.total(),
        params_trainable: count.trainable(),
        flops_per_step: flops::step_flops(&dir.config, &count, tokens_per_step, batch),
        first_loss,
        last_loss,
        build_seconds,
    })
}

/// Writes `config` as `dir/config.json` (creating `dir`) and opens it.
pub fn write_model_dir(dir: &Path, config: &serde_json::Value) -> Result<ModelDir> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(config).expect("a JSON value serialises");
    crate::fs::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    ModelDir::open(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(stats(vec![3.0, 1.0, 2.0]), (2.0, 2.0, 1.0));
        assert_eq!(stats(vec![4.0, 1.0, 2.0, 3.0]).1, 2.5);
    }
}
