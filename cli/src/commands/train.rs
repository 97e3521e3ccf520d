//! `lmms train`: resolves the options (flags over `--config`), the model, the strategy and the
//! dataset, then runs the family's trainer with a progress bar; Ctrl-C checkpoints and stops.

use crate::train_args::TrainArgs;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lmms_core::backend::DeviceSpec;
use lmms_core::collator::Skipped;
use lmms_core::data::Sample;
use lmms_core::strategy::{
    LoraConfig, PartStrategy, QloraConfig, StrategySpec, TargetModules, TrainStrategy,
};
use lmms_core::train::run::{EpochSource, RunConfig, TrainObserver, TrainRequest};
use lmms_core::train::trainer::StepStats;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The `--config` file: the flags' names at the top level, HF `TrainingArguments` names under
/// `[training]`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(flatten)]
    args: TrainArgs,
    #[serde(default)]
    training: Option<RunConfig>,
}

struct Source(lmms_collators::dataset::Dataset);

impl EpochSource for Source {
    fn epoch_len(&self) -> usize {
        self.0.epoch_len()
    }

    fn epoch(&self, epoch: u64, seed: u64) -> Vec<&Sample> {
        self.0.shuffled_epoch(epoch, seed)
    }
}

fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
}

pub fn run(flags: &TrainArgs) -> anyhow::Result<ExitCode> {
    let file = match &flags.config {
        Some(p) => read_config(p)?,
        None => ConfigFile::default(),
    };
    let args = flags.clone().over(file.args);
    let mut training = file.training.unwrap_or_default();
    apply_training_flags(&args, &mut training);

    let device = args.device.unwrap_or(DeviceSpec::Cpu);
    if !device.is_compiled_in() {
        bail!("--device {device} needs a build with CUDA: cargo build --release --features cuda");
    }
    let model = args
        .model
        .as_deref()
        .context("--model is required (or `model` in --config)")?;
    let loaded = super::common::load_model(model, args.model_path.as_deref())?;
    let strategy = strategy_from_args(&args);
    strategy.validate()?;
    let data = args
        .data
        .as_deref()
        .context("--data is required (or `data` in --config)")?;
    // The data is checked before anything in the output dir is touched.
    let images = args.image_folder.as_ref();
    let videos = args.video_folder.as_ref();
    let train = Source(super::common::load_data(data, images, videos)?);
    let eval = match &args.eval_data {
        Some(p) => Some(Source(super::common::load_data(p, images, videos)?)),
        None => None,
    };
    let output_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("output"));
    let resume = args.resume.unwrap_or(false);
    let previous = [
        "adapter_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
    ]
    .iter()
    .any(|f| output_dir.join(f).is_file())
        || !lmms_core::train::checkpoint::list_checkpoints(&output_dir).is_empty();
    if previous && !resume && args.overwrite_output_dir.unwrap_or(false) {
        clear_previous_run(&output_dir)?;
    } else if !resume && previous {
        bail!(
            "{} already holds a training run; pass --resume to continue it, or choose another --output-dir \
             (nothing there is overwritten)",
            output_dir.display()
        );
    }
    // What this run resolved to, next to its outputs.
    std::fs::create_dir_all(&output_dir)
        .with_context(|| format!("cannot create {}", output_dir.display()))?;
    let resolved_file = ConfigFile {
        args: TrainArgs {
            config: None,
            ..args.clone()
        },
        training: Some(training.clone()),
    };
    let text =
        toml::to_string_pretty(&resolved_file).context("cannot serialise the resolved config")?;
    lmms_core::fs::write_atomic(&output_dir.join("lmms_train_config.toml"), text.as_bytes())?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).ok();
    let mut observer = Progress { bar: None, stop };
    let request = TrainRequest {
        model_dir: &loaded.dir,
        base_name: Some(loaded.model_id.unwrap_or(model)),
        strategy: &strategy,
        data: &train,
        eval: eval.as_ref().map(|e| e as &dyn EpochSource),
        config: &training,
        output_dir: &output_dir,
        resume,
    };
    let report = loaded.runtime.train(&request, device, &mut observer)?;
    if let Some(bar) = observer.bar.take() {
        bar.finish_and_clear();
    }
    let fmt = |l: Option<f64>| l.map_or("-".to_string(), |l| format!("{l:.4}"));
    if report.interrupted {
        eprintln!(
            "interrupted after step {}: checkpoint written to {}; continue with --resume",
            report.steps,
            output_dir.display()
        );
        return Ok(ExitCode::from(130));
    }
    println!(
        "trained {} steps in {:.1} s: loss {} -> {}; output in {} (metrics.jsonl, loss.svg)",
        report.steps,
        report.seconds,
        fmt(report.first_loss),
        fmt(report.last_loss),
        output_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Deletes what a training run wrote into `dir` (and nothing else).
fn clear_previous_run(dir: &Path) -> anyhow::Result<()> {
    for (_, ckpt) in lmms_core::train::checkpoint::list_checkpoints(dir) {
        std::fs::remove_dir_all(&ckpt)
            .with_context(|| format!("cannot remove {}", ckpt.display()))?;
    }
    let mut files: Vec<PathBuf> = [
        "metrics.jsonl",
        "loss.svg",
        "adapter_config.json",
        "adapter_model.safetensors",
        "non_lora_trainables.safetensors",
        "model.safetensors",
        "model.safetensors.index.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    files.extend(
        std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
            }),
    );
    for f in files.iter().filter(|f| f.is_file()) {
        std::fs::remove_file(f).with_context(|| format!("cannot remove {}", f.display()))?;
    }
    Ok(())
}

fn apply_training_flags(a: &TrainArgs, t: &mut RunConfig) {
    macro_rules! set {
        ($flag:expr => $field:expr) => {
            if let Some(v) = $flag.clone() {
                $field = v;
            }
        };
    }
    set!(a.learning_rate => t.optimizer.learning_rate);
    set!(a.weight_decay => t.optimizer.weight_decay);
    set!(a.batch_size => t.per_device_train_batch_size);
    set!(a.grad_accum => t.gradient_accumulation_steps);
    set!(a.epochs => t.num_train_epochs);
    set!(a.lr_scheduler => t.lr_scheduler_type);
    set!(a.warmup_ratio => t.warmup_ratio);
    set!(a.logging_steps => t.logging_steps);
    set!(a.seed => t.seed);
    set!(a.bf16 => t.bf16);
    set!(a.gradient_checkpointing => t.gradient_checkpointing);
    if a.max_steps.is_some() {
        t.max_steps = a.max_steps;
    }
    if let Some(n) = a.max_grad_norm {
        t.optimizer.max_grad_norm = (n > 0.0).then_some(n);
    }
    if a.model_max_length.is_some() {
        t.collate.model_max_length = a.model_max_length;
    }
    t.collate.min_pixels = a.min_pixels;
    t.collate.max_pixels = a.max_pixels;
    t.collate.video_min_pixels = a.video_min_pixels;
    t.collate.video_max_pixels = a.video_max_pixels;
    if a.save_steps.is_some() {
        t.save_steps = a.save_steps;
    }
    if a.save_total_limit.is_some() {
        t.save_total_limit = a.save_total_limit;
    }
    if a.eval_steps.is_some() {
        t.eval_steps = a.eval_steps;
    }
}

/// lmms-finetune's switches mapped onto per-part strategies.
fn strategy_from_args(a: &TrainArgs) -> StrategySpec {
    let target_modules = match a.lora_target_modules.as_deref() {
        None => TargetModules::AllLinear,
        Some([one]) if one == "all-linear" => TargetModules::AllLinear,
        Some(names) => TargetModules::Names(names.to_vec()),
    };
    let lora = LoraConfig {
        r: a.lora_rank.unwrap_or(8),
        alpha: a.lora_alpha.unwrap_or(8.0),
        dropout: a.lora_dropout.unwrap_or(0.05),
        target_modules,
        use_rslora: false,
    };
    let llm = if a.q_lora.unwrap_or(false) {
        PartStrategy::Qlora(QloraConfig {
            lora: lora.clone(),
            ..Default::default()
        })
    } else if a.use_lora.unwrap_or(false) {
        PartStrategy::Lora(lora.clone())
    } else {
        PartStrategy::Full
    };
    let vision_tower = match (
        a.train_vision_encoder.unwrap_or(false),
        a.use_vision_lora.unwrap_or(false),
    ) {
        (false, _) => PartStrategy::Frozen,
        (true, false) => PartStrategy::Full,
        (true, true) => PartStrategy::Lora(lora),
    };
    let projector = if a.train_vision_projector.unwrap_or(true) {
        PartStrategy::Full
    } else {
        PartStrategy::Frozen
    };
    StrategySpec {
        vision_tower,
        projector,
        llm,
        vision_tower_lr: a.vision_lr,
        projector_lr: a.projector_lr,
        llm_lr: None,
    }
}

struct Progress {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicBool>,
}

impl TrainObserver for Progress {
    fn on_start(&mut self, total_steps: u64, start_step: u64) {
        let bar = ProgressBar::new(total_steps);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
                .expect("valid template"),
        );
        bar.set_position(start_step);
        self.bar = Some(bar);
    }

    fn on_step(&mut self, s: &StepStats, epoch: f64, tps: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(s.step);
            bar.set_message(format!(
                "loss {:.4}  lr {:.2e}  {:.0} tok/s  epoch {:.2}",
                s.loss, s.lr, tps, epoch
            ));
        }
    }

    fn on_eval(&mut self, step: u64, loss: f64) {
        let line = format!("step {step}: eval loss {loss:.4}");
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn on_skipped(&mut self, s: &Skipped) {
        tracing::warn!(
            "{}: sample {}: skipped: {}",
            s.origin.file.display(),
            s.origin.index,
            s.reason
        );
    }

    fn on_checkpoint(&mut self, dir: &Path) {
        tracing::info!("checkpoint written: {}", dir.display());
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
