//! A whole training run for any family: epochs or max steps over a dataset, batches collated by
//! the family's collator, gradient accumulation, metrics (`metrics.jsonl`), evaluation,
//! checkpoints every N steps with exact resume, and the final export (PEFT adapter for LoRA,
//! full HF checkpoint otherwise) plus a loss plot.

use crate::collator::{CollateOptions, Collator, Skipped};
use crate::data::Sample;
use crate::error::{Error, Result};
use crate::export::{PeftExport, copy_side_files, save_full_model, save_peft_adapter};
use crate::loader::DType;
use crate::model_dir::ModelDir;
use crate::nn::plan::{LoraRegistry, PartPlan};
use crate::runtime::{FamilyModel, Plans, build_model};
use crate::strategy::{Part, PartStrategy, StrategySpec, TrainStrategy};
use crate::train::checkpoint::{self, TrainerState};
use crate::train::optimizer::OptimizerConfig;
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::train::trainer::{StepStats, Trainer, param_groups};
use burn::module::{AutodiffModule, ParamId};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Run settings; field names follow HF `TrainingArguments` where one exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: f64,
    /// Overrides `num_train_epochs` when set.
    pub max_steps: Option<u64>,
    pub lr_scheduler_type: ScheduleKind,
    pub warmup_ratio: f64,
    /// Overrides `warmup_ratio` when set.
    pub warmup_steps: Option<u64>,
    pub logging_steps: u64,
    pub save_steps: Option<u64>,
    pub save_total_limit: Option<usize>,
    pub eval_steps: Option<u64>,
    pub seed: u64,
    /// Mixed precision: frozen weights and activations in bf16; what trains (LoRA, fully
    /// trained parts) keeps f32 weights and optimizer state.
    pub bf16: bool,
    /// Layer-level activation checkpointing ([`crate::nn::recompute`]): each decoder layer
    /// keeps only its input and reruns in the backward pass, as HF's
    /// `gradient_checkpointing` does.
    pub gradient_checkpointing: bool,
    #[serde(flatten)]
    pub optimizer: OptimizerConfig,
    #[serde(flatten)]
    pub collate: CollateOptions,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            per_device_train_batch_size: 1,
            gradient_accumulation_steps: 1,
            num_train_epochs: 1.0,
            max_steps: None,
            lr_scheduler_type: ScheduleKind::Cosine,
            warmup_ratio: 0.03,
            warmup_steps: None,
            logging_steps: 1,
            save_steps: None,
            save_total_limit: Some(2),
            eval_steps: None,
            seed: 42,
            bf16: false,
            gradient_checkpointing: false,
            optimizer: OptimizerConfig::default(),
            collate: CollateOptions::default(),
        }
    }
}

/// A dataset the run draws epochs from.
pub trait EpochSource: Sync {
    /// Samples per epoch.
    fn epoch_len(&self) -> usize;
    /// The (shuffled) samples of epoch `epoch`; the same `(epoch, seed)` gives the same order.
    fn epoch(&self, epoch: u64, seed: u64) -> Vec<&Sample>;
}

/// Hears how the run goes (progress bars, logs). Every method has a quiet default.
pub trait TrainObserver {
    fn on_start(&mut self, _total_steps: u64, _start_step: u64) {}
    fn on_step(&mut self, _stats: &StepStats, _epoch: f64, _tokens_per_second: f64) {}
    fn on_eval(&mut self, _step: u64, _loss: f64) {}
    fn on_skipped(&mut self, _skipped: &Skipped) {}
    fn on_checkpoint(&mut self, _dir: &Path) {}
    /// Polled between steps; `true` makes the run checkpoint and stop (Ctrl-C).
    fn should_stop(&self) -> bool {
        false
    }
}

pub struct TrainRequest<'a> {
    pub model_dir: &'a ModelDir,
    /// The name written into adapters as `base_model_name_or_path`.
    pub base_name: Option<&'a str>,
    pub strategy: &'a StrategySpec,
    pub data: &'a dyn EpochSource,
    pub eval: Option<&'a dyn EpochSource>,
    pub config: &'a RunConfig,
    pub output_dir: &'a Path,
    pub resume: bool,
}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub interrupted: bool,
    /// Where the final model or adapter was written (None when interrupted).
    pub output: Option<PathBuf>,
    pub seconds: f64,
}

fn mix(seed: u64, n: u64) -> u64 {
    // splitmix64 of (seed, n): decorrelated per-step seeds for dropout.
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Metrics {
    file: std::fs::File,
    pub train: Vec<(u64, f64)>,
    pub eval: Vec<(u64, f64)>,
}

impl Metrics {
    /// Opens `metrics.jsonl`, keeping only lines up to `start_step` (a resumed run rewrites
    /// what came after its checkpoint).
    fn open(path: &Path, start_step: u64) -> Result<Self> {
        let mut kept = String::new();
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        if start_step > 0
            && let Ok(text) = std::fs::read_to_string(path)
        {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let step = v["step"].as_u64().unwrap_or(u64::MAX);
                if step <= start_step {
                    let loss = v["loss"].as_f64().unwrap_or(f64::NAN);
                    if v["split"] == "eval" {
                        eval.push((step, loss))
                    } else {
                        train.push((step, loss))
                    }
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        crate::fs::write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Metrics { file, train, eval })
    }

    fn write(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}").map_err(|e| Error::io("metrics.jsonl", e))
    }
}

/// Runs training of `family` on backend `B`.
pub fn run<B: AutodiffBackend, F: FamilyModel>(
    family: &F,
    req: &TrainRequest<'_>,
    device: &B::Device,
    observer: &mut dyn TrainObserver,
) -> Result<TrainReport>
where
    F::Model<B>: AutodiffModule<B>,
{
    let started = Instant::now();
    let cfg = req.config;
    req.strategy.validate()?;
    if let PartStrategy::Qlora(q) = req.strategy.part(Part::Llm) {
        tracing::info!(
            "QLoRA: the LLM's frozen linear weights are held in 4 bits (blocks of {})",
            q.block_size
        );
    }
    std::fs::create_dir_all(req.output_dir).map_err(|e| Error::io(req.output_dir, e))?;
    let collator = family.collator(req.model_dir, &cfg.collate)?;

    // The model, with LoRA where the strategy asks.
    let registry = LoraRegistry::default();
    let names = |n: &str| family.runtime_name(n);
    let plan = |part: Part| {
        PartPlan::from_strategy(req.strategy.part(part), &registry).with_runtime_names(&names)
    };
    let plans = Plans {
        vision_tower: plan(Part::VisionTower),
        projector: plan(Part::Projector),
        llm: plan(Part::Llm),
        adapter: None,
    };
    B::seed(device, cfg.seed);
    let dtype = if cfg.bf16 { DType::Bf16 } else { DType::F32 };
    let (mut model, info) = build_model::<B, F>(family, req.model_dir, dtype, &plans, device)?;
    let lora = registry.entries();
    let groups = param_groups(family, &model, &info, &lora)?;
    // Names of everything that trains, for checkpoints.
    let mut trainable_names: HashMap<ParamId, String> = HashMap::new();
    for e in &lora {
        trainable_names.insert(e.lora_a, format!("{}.lora_A", e.path));
        trainable_names.insert(e.lora_b, format!("{}.lora_B", e.path));
    }
    for id in groups.keys() {
        if let Some(p) = info.params.get(id) {
            trainable_names.insert(*id, p.name.clone());
        }
    }

    // Steps.
    let batch = cfg.per_device_train_batch_size.max(1);
    let accum = cfg.gradient_accumulation_steps.max(1);
    let epoch_len = req.data.epoch_len();
    if epoch_len == 0 {
        return Err(Error::Unsupported(
            "the training data has no samples".into(),
        ));
    }
    let batches_per_epoch = epoch_len.div_ceil(batch) as u64;
    let steps_per_epoch = batches_per_epoch.div_ceil(accum as u64).max(1);
    let total_steps = cfg
        .max_steps
        .unwrap_or_else(|| (cfg.num_train_epochs * steps_per_epoch as f64).ceil() as u64)
        .max(1);
    let warmup = cfg
        .warmup_steps
        .unwrap_or_else(|| (cfg.warmup_ratio * total_steps as f64).ceil() as u64);
    let schedule = Schedule {
        kind: cfg.lr_scheduler_type,
        warmup_steps: warmup,
        total_steps,
    };

    // Resume.
    let mut state = TrainerState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        seed: cfg.seed,
    };
    let mut resume_dir = None;
    if req.resume {
        match checkpoint::list_checkpoints(req.output_dir).pop() {
            Some((_, dir)) => {
                state = checkpoint::read_state(&dir)?;
                if state.seed != cfg.seed {
                    return Err(Error::config(
                        dir.join(checkpoint::STATE_FILE),
                        format!(
                            "was written with seed {} but this run has seed {}",
                            state.seed, cfg.seed
                        ),
                    ));
                }
                model = checkpoint::load_params(&dir, model, &trainable_names)?;
                resume_dir = Some(dir);
            }
            None => tracing::warn!(
                "--resume: no checkpoint in {}, starting from scratch",
                req.output_dir.display()
            ),
        }
    }
    let mut trainer = Trainer::new(
        family,
        model,
        groups,
        req.strategy,
        cfg.optimizer.clone(),
        schedule,
        accum,
        device.clone(),
    )
    .with_gradient_checkpointing(cfg.gradient_checkpointing);
    if let Some(dir) = &resume_dir {
        trainer.load_optimizer(dir)?;
        trainer.set_steps(state.step);
    }
    let mut metrics = Metrics::open(&req.output_dir.join("metrics.jsonl"), state.step)?;
    observer.on_start(total_steps, state.step);

    let mut first_loss = metrics.train.first().map(|(_, l)| *l);
    let mut last_loss = None;
    let mut interrupted = false;
    let mut tokens_since = 0usize;
    let mut clock = Instant::now();
    'epochs: loop {
        let order = req.data.epoch(state.epoch, cfg.seed);
        let batches: Vec<&[&Sample]> = order.chunks(batch).collect();
        while (state.batch_in_epoch as usize) < batches.len() {
            if trainer.steps() >= total_steps {
                break 'epochs;
            }
            let (inputs, skipped) = collator.collate(batches[state.batch_in_epoch as usize])?;
            for s in &skipped {
                observer.on_skipped(s);
            }
            state.batch_in_epoch += 1;
            let Some(inputs) = inputs else { continue };
            // Dropout masks depend only on (seed, epoch, batch): a resumed run draws the same.
            B::seed(
                device,
                mix(cfg.seed, (state.epoch << 32) | state.batch_in_epoch),
            );
            let Some(stats) = trainer.micro_step(&inputs)? else {
                continue;
            };
            state.step = stats.step;
            tokens_since += stats.tokens;
            first_loss.get_or_insert(stats.loss);
            last_loss = Some(stats.loss);
            let epoch_f = state.epoch as f64 + state.batch_in_epoch as f64 / batches.len() as f64;
            let tps = tokens_since as f64 / clock.elapsed().as_secs_f64().max(1e-9);
            if state.step.is_multiple_of(cfg.logging_steps.max(1)) || state.step == total_steps {
                metrics.write(serde_json::json!({
                    "step": stats.step, "split": "train", "loss": stats.loss, "lr": stats.lr,
                    "grad_norm": stats.grad_norm, "tokens": stats.tokens, "epoch": epoch_f,
                    "tokens_per_second": tps,
                }))?;
                metrics.train.push((stats.step, stats.loss));
            }
            observer.on_step(&stats, epoch_f, tps);
            tokens_since = 0;
            clock = Instant::now();
            if let (Some(every), Some(eval)) = (cfg.eval_steps, req.eval)
                && state.step.is_multiple_of(every)
            {
                let loss = evaluate(&trainer, &collator, eval, cfg)?;
                metrics.write(
                    serde_json::json!({"step": state.step, "split": "eval", "loss": loss}),
                )?;
                metrics.eval.push((state.step, loss));
                observer.on_eval(state.step, loss);
            }
            let stop = observer.should_stop();
            if cfg
                .save_steps
                .is_some_and(|n| n > 0 && state.step.is_multiple_of(n))
                || stop
            {
                let dir = save_checkpoint(&trainer, req, &trainable_names, &state, cfg)?;
                observer.on_checkpoint(&dir);
            }
            if stop {
                interrupted = true;
                break 'epochs;
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    write_loss_plot(
        &req.output_dir.join("loss.svg"),
        &metrics.train,
        &metrics.eval,
    )?;
    let output = if interrupted {
        None
    } else {
        if let (Some(eval), None) = (req.eval, cfg.eval_steps) {
            let loss = evaluate(&trainer, &collator, eval, cfg)?;
            metrics
                .write(serde_json::json!({"step": state.step, "split": "eval", "loss": loss}))?;
            observer.on_eval(state.step, loss);
        }
        export(family, &trainer, req, &info, &lora)?;
        Some(req.output_dir.to_path_buf())
    };
    Ok(TrainReport {
        steps: state.step,
        first_loss,
        last_loss,
        interrupted,
        output,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn save_checkpoint<B: AutodiffBackend, F: FamilyModel>(
    trainer: &Trainer<'_, B, F>,
    req: &TrainRequest<'_>,
    names: &HashMap<ParamId, String>,
    state: &TrainerState,
    cfg: &RunConfig,
) -> Result<PathBuf>
where
    F::Model<B>: AutodiffModule<B>,
{
    checkpoint::save(
        req.output_dir,
        trainer.model(),
        names,
        state,
        cfg.save_total_limit,
        |tmp| trainer.save_optimizer(tmp),
    )
}

/// Mean loss over the eval set (token-weighted, as one big batch would give).
fn evaluate<B: AutodiffBackend, F: FamilyModel>(
    trainer: &Trainer<'_, B, F>,
    collator: &F::Collator,
    eval: &dyn EpochSource,
    cfg: &RunConfig,
) -> Result<f64>
where
    F::Model<B>: AutodiffModule<B>,
{
    let samples = eval.epoch(0, cfg.seed);
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in samples.chunks(cfg.per_device_train_batch_size.max(1)) {
        if let (Some(inputs), _) = collator.collate(chunk)? {
            let (loss, n) = trainer.eval_loss(&inputs)?;
            sum += loss * n as f64;
            count += n;
        }
    }
    Ok(if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    })
}

fn export<B: AutodiffBackend, F: FamilyModel>(
    family: &F,
    trainer: &Trainer<'_, B, F>,
    req: &TrainRequest<'_>,
    info: &crate::runtime::ModelInfo,
    lora: &[crate::nn::plan::LoraEntry],
) -> Result<()>
where
    F::Model<B>: AutodiffModule<B>,
{
    let s = req.strategy;
    let lora_config = [Part::Llm, Part::VisionTower, Part::Projector]
        .iter()
        .find_map(|p| s.part(*p).lora());
    match lora_config {
        Some(config) => {
            // Fully trained parts travel with the adapter.
            let full: Vec<Part> = [Part::VisionTower, Part::Projector, Part::Llm]
                .into_iter()
                .filter(|p| matches!(s.part(*p), PartStrategy::Full))
                .collect();
            let trained: HashSet<ParamId> = info
                .params
                .iter()
                .filter(|(_, p)| full.contains(&family.part_of(&p.name)))
                .map(|(id, _)| *id)
                .collect();
            let prefixes: Vec<&str> = full
                .iter()
                .flat_map(|p| family.part_modules(*p).iter().copied())
                .collect();
            let names = |n: &str| family.runtime_name(n);
            let export = PeftExport {
                lora,
                config,
                info,
                trained: &trained,
                module_prefixes: &prefixes,
                runtime_name: &names,
                base_model_name_or_path: req.base_name,
            };
            save_peft_adapter(req.output_dir, trainer.model(), &export)?;
            copy_side_files(&req.model_dir.root, req.output_dir)
        }
        None => save_full_model(
            req.output_dir,
            trainer.model(),
            info,
            &req.model_dir.root,
            5 << 30,
        ),
    }
}

/// A small SVG line chart of the train (and eval) loss per step.
pub fn write_loss_plot(path: &Path, train: &[(u64, f64)], eval: &[(u64, f64)]) -> Result<()> {
    let (w, h, m) = (720.0, 400.0, 50.0);
    let all = train.iter().chain(eval).filter(|(_, l)| l.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (s, l) in all {
        x0 = x0.min(*s as f64);
        x1 = x1.max(*s as f64);
        y0 = y0.min(*l);
        y1 = y1.max(*l);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let px = |s: f64| m + (s - x0) / (x1 - x0) * (w - 2.0 * m);
    let py = |l: f64| h - m - (l - y0) / (y1 - y0) * (h - 2.0 * m);
    let line = |pts: &[(u64, f64)], color: &str| {
        let p: Vec<String> = pts
            .iter()
            .filter(|(_, l)| l.is_finite())
            .map(|(s, l)| format!("{:.1},{:.1}", px(*s as f64), py(*l)))
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            p.join(" ")
        )
    };
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="black"/>
<text x="{m}" y="{ty}">step {x0}</text><text x="{r}" y="{ty}" text-anchor="end">step {x1}</text>
<text x="{lx}" y="{b}" text-anchor="end">{y0:.3}</text><text x="{lx}" y="{m}" text-anchor="end">{y1:.3}</text>
<text x="{cx}" y="20" text-anchor="middle">loss (train: blue, eval: orange)</text>
{train}
{eval}
</svg>
"##,
        b = h - m,
        r = w - m,
        ty = h - m + 20.0,
        lx = m - 5.0,
        cx = w / 2.0,
        train = line(train, "#1f77b4"),
        eval = line(eval, "#ff7f0e"),
    );
    crate::fs::write_atomic(path, svg.as_bytes())
}
