//! `lmms bench`: the real training step (forward, loss, backward, AdamW) of a model built from a
//! config with random weights, on a synthetic batch, timed; see `lmms_core::bench`.

use anyhow::{Context, bail};
use clap::Args;
use lmms_core::Registry;
use lmms_core::backend::DeviceSpec;
use lmms_core::bench::memory::MemoryProbe;
use lmms_core::bench::{BatchSpec, BenchOptions, BenchReport, SyntheticBatch, flops, presets};
use lmms_core::loader::DType;
use lmms_core::model_dir::{ModelDir, resolve_model};
use lmms_core::runtime::FamilyModel;
use lmms_core::strategy::{LoraConfig, PartStrategy, QloraConfig, StrategySpec, TargetModules};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// LoRA on every linear layer of the LLM, projector trained, vision tower frozen.
    Lora,
    /// QLoRA: the same with the LLM's frozen linear weights in 4 bits.
    Qlora,
    /// The LLM and projector trained fully, vision tower frozen.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    /// Mixed precision: frozen weights and activations bf16, trained weights and optimizer
    /// state f32 (as `lmms train --bf16`).
    Bf16,
}

#[derive(Debug, Args)]
#[command(after_help = "Presets (random weights, nothing downloaded):\n  \
    tiny, llava-100m, llama-7b-layer, llava-interleave-qwen-0.5b, llava-1.5-7b,\n  \
    qwen2-vl-7b-instruct\n\n\
    Examples:\n  \
    lmms bench --model tiny --strategy lora --seq-len 64 --batch 2\n  \
    lmms bench --model qwen2-vl-7b-instruct --device cuda --precision bf16 --seq-len 1024\n  \
    tools/bench/compare.sh tiny lora 64 2   # lmms and HF transformers + peft side by side")]
pub struct BenchArgs {
    /// A preset (see below), a model directory (its config.json), or a registered model id
    /// found locally. Weights are always random: only the config's shapes matter.
    #[arg(long, value_name = "PRESET|DIR|ID")]
    pub model: String,

    /// The local directory of a registered model id.
    #[arg(long, value_name = "DIR")]
    pub model_path: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = Strategy::Lora)]
    pub strategy: Strategy,

    /// Tokens per row (image tokens included).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub seq_len: usize,

    /// Rows per step.
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub batch: usize,

    /// Timed steps.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub steps: usize,

    /// Untimed steps first.
    #[arg(long, default_value_t = 2, value_name = "W")]
    pub warmup: usize,

    /// Images per row (0: text only). LLaVA images have the tower's size; Qwen2-VL's are
    /// --image-size pixels square.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub images: usize,

    /// Qwen2-VL: the side of each image in pixels.
    #[arg(long, default_value_t = 448, value_name = "PX")]
    pub image_size: usize,

    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,

    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,

    /// Layer-level activation checkpointing: each decoder layer keeps only its input and reruns
    /// in the backward pass (as `lmms train --gradient-checkpointing`).
    #[arg(long)]
    pub gradient_checkpointing: bool,

    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_name = "R")]
    pub lora_rank: usize,

    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0, value_name = "ALPHA")]
    pub lora_alpha: f64,

    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub lora_dropout: f64,

    /// Learning rate (the constant schedule's).
    #[arg(long, default_value_t = 1e-5, value_name = "LR")]
    pub learning_rate: f64,

    /// Seed of the weights and the batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Keep the model's config.json and the batch (inputs.safetensors) here: the Python
    /// baseline (tools/bench/hf_bench.py --dir) runs the same ones.
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<PathBuf>,

    /// Write the config and the batch to --save-dir and stop (no run).
    #[arg(long, requires = "save_dir")]
    pub prepare_only: bool,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    fn strategy(&self) -> StrategySpec {
        let lora = LoraConfig {
            r: self.lora_rank,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules: TargetModules::AllLinear,
            use_rslora: false,
        };
        StrategySpec {
            vision_tower: PartStrategy::Frozen,
            projector: PartStrategy::Full,
            llm: match self.strategy {
                Strategy::Lora => PartStrategy::Lora(lora),
                Strategy::Qlora => PartStrategy::Qlora(QloraConfig {
                    lora,
                    ..Default::default()
                }),
                Strategy::Full => PartStrategy::Full,
            },
            vision_tower_lr: None,
            projector_lr: None,
            llm_lr: None,
        }
    }
}

/// The config of `--model`: a preset's, or the config.json of a directory or registered id.
fn model_config(args: &BenchArgs) -> anyhow::Result<(String, serde_json::Value)> {
    if let Some(p) = presets::find(&args.model) {
        return Ok((format!("preset {}", p.name), p.config()));
    }
    let path = Path::new(&args.model);
    if path.is_dir() {
        return Ok((path.display().to_string(), ModelDir::open(path)?.config));
    }
    let registry = Registry::linked()?;
    let resolved =
        resolve_model(&registry, &args.model, args.model_path.as_deref()).with_context(|| {
            let names: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
            format!(
                "`{}` is not a preset ({}) nor a model found locally",
                args.model,
                names.join(", ")
            )
        })?;
    Ok((resolved.dir.root.display().to_string(), resolved.dir.config))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.device.is_compiled_in() {
        bail!(
            "--device {} needs a build with CUDA: cargo build --release --features cuda",
            args.device
        );
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let (source, config) = model_config(args)?;
    // The config (and batch) go to --save-dir, else to a temporary directory.
    let tmp = TempDir(match &args.save_dir {
        Some(_) => None,
        None => Some(std::env::temp_dir().join(format!("lmms-bench-{}", std::process::id()))),
    });
    let dir_path = args
        .save_dir
        .clone()
        .or_else(|| tmp.0.clone())
        .expect("one of them");
    let dir = lmms_core::bench::write_model_dir(&dir_path, &config)?;
    let registry = Registry::linked()?;
    let family = registry.for_config(&dir.config).with_context(|| {
        format!(
            "{source}: no registered family handles architectures {}",
            dir.config
                .get("architectures")
                .unwrap_or(&serde_json::Value::Null)
        )
    })?;
    let family_id = family.descriptor.id;
    let spec = BatchSpec {
        batch: args.batch,
        seq_len: args.seq_len,
        images: args.images,
        image_side: args.image_size,
        seed: args.seed,
    };
    let batch = lmms_core::bench::write_batch(&dir, &spec)?;
    if args.prepare_only {
        eprintln!(
            "wrote {} and {}",
            dir.path("config.json").display(),
            dir.path("inputs.safetensors").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let options = BenchOptions {
        strategy: args.strategy(),
        batch: spec,
        warmup: args.warmup,
        steps: args.steps,
        dtype: match args.precision {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::Bf16,
        },
        learning_rate: args.learning_rate,
        gradient_checkpointing: args.gradient_checkpointing,
    };
    let (report, device_name) = dispatch(family_id, &dir, &batch, &options, args)?;
    let peak = match args.device {
        DeviceSpec::Cuda(_) => flops::bf16_peak_tflops(&device_name),
        DeviceSpec::Cpu => None,
    };
    let mfu = peak.map(|p| report.flops_per_step / report.median_seconds / (p * 1e12));
    let threads = cpu_threads();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        let extra = serde_json::json!({
            "tool": "lmms", "model": args.model, "source": source, "family": family_id,
            "strategy": args.strategy, "precision": args.precision, "seq_len": args.seq_len,
            "batch": args.batch, "images": args.images, "warmup": args.warmup,
            "steps": args.steps, "device": args.device.to_string(), "device_name": device_name,
            "threads": threads, "gradient_checkpointing": args.gradient_checkpointing,
            "media_tokens": batch.media_tokens, "vision_patches": batch.vision_patches,
            "peak_bf16_tflops": peak, "mfu": mfu,
        });
        for (k, x) in extra.as_object().expect("an object") {
            v[k] = x.clone();
        }
        println!("{v}");
    } else {
        print_report(
            args,
            &source,
            family_id,
            &device_name,
            threads,
            &report,
            mfu,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A directory removed when dropped.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Threads the CPU backend's pool uses (`RAYON_NUM_THREADS`, else every core).
fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn print_report(
    args: &BenchArgs,
    source: &str,
    family: &str,
    device_name: &str,
    threads: usize,
    r: &BenchReport,
    mfu: Option<f64>,
) {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "lmms bench: {source} (family {family}), {:?} {:?}{}, batch {} x {} tokens, {} image(s)/row",
        args.strategy,
        args.precision,
        if args.gradient_checkpointing {
            ", gradient checkpointing"
        } else {
            ""
        },
        args.batch,
        args.seq_len,
        args.images
    );
    println!("device: {} ({device_name}, {threads} threads)", args.device);
    println!(
        "parameters: {:.1}M, trainable {:.2}M; built in {:.1} s",
        r.params_total as f64 / 1e6,
        r.params_trainable as f64 / 1e6,
        r.build_seconds
    );
    println!(
        "step time: mean {:.1} ms, median {:.1} ms, min {:.1} ms over {} steps (after {} warm-up)",
        r.mean_seconds * 1e3,
        r.median_seconds * 1e3,
        r.min_seconds * 1e3,
        r.step_seconds.len(),
        args.warmup
    );
    println!("throughput: {:.0} tokens/s", r.tokens_per_second);
    match r.peak_memory_bytes {
        Some(b) => println!("peak memory: {:.2} GiB ({})", gib(b), r.memory_kind),
        None => println!("peak memory: unknown"),
    }
    print!("model FLOPs: {:.3} TFLOP/step", r.flops_per_step / 1e12);
    match mfu {
        Some(m) => println!(", MFU {:.1}%", m * 100.0),
        None => println!(),
    }
    println!("loss: {:.4} -> {:.4}", r.first_loss, r.last_loss);
}

fn dispatch(
    family_id: &str,
    dir: &ModelDir,
    batch: &SyntheticBatch,
    options: &BenchOptions,
    args: &BenchArgs,
) -> anyhow::Result<(BenchReport, String)> {
    use lmms_core::backend::CpuTrain;
    // One monomorphisation per (family, backend): each family's concrete model type.
    macro_rules! families {
        ($B:ty, $device:expr, $probe:expr) => {
            match family_id {
                "llava" | "llava_next" | "llava_next_video" | "llava_onevision" => on::<$B, _>(
                    &lmms_llava::LlavaFamily,
                    dir,
                    batch,
                    options,
                    $device,
                    $probe,
                ),
                "qwen2_vl" => on::<$B, _>(
                    &lmms_qwen2_vl::QWEN2_VL_RUNTIME,
                    dir,
                    batch,
                    options,
                    $device,
                    $probe,
                ),
                "qwen2_5_vl" => on::<$B, _>(
                    &lmms_qwen2_vl::QWEN2_5_VL_RUNTIME,
                    dir,
                    batch,
                    options,
                    $device,
                    $probe,
                ),
                other => {
                    bail!("lmms bench runs the llava and qwen2_vl families for now, not `{other}`")
                }
            }
        };
    }
    match args.device {
        DeviceSpec::Cpu => {
            let probe = lmms_core::bench::memory::CpuMemory::default();
            let device = Default::default();
            let report = families!(CpuTrain, &device, &probe)?;
            Ok((report, lmms_core::backend::CPU_BACKEND.to_string()))
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => {
            use lmms_core::backend::CudaTrain;
            let device = lmms_core::burn::backend::cuda::CudaDevice::new(n);
            let probe = lmms_core::bench::memory::CudaMemory::new(device.clone());
            let report = families!(CudaTrain, &device, &probe)?;
            let name = flops::nvidia_gpu_name(n).unwrap_or_else(|| format!("CUDA device {n}"));
            Ok((report, name))
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by is_compiled_in"),
    }
}

fn on<B, F>(
    family: &F,
    dir: &ModelDir,
    batch: &SyntheticBatch,
    options: &BenchOptions,
    device: &B::Device,
    probe: &dyn MemoryProbe,
) -> anyhow::Result<BenchReport>
where
    B: lmms_core::burn::tensor::backend::AutodiffBackend,
    F: FamilyModel,
    F::Model<B>: lmms_core::burn::module::AutodiffModule<B>,
{
    Ok(lmms_core::bench::run::<B, F>(
        family, dir, batch, options, device, probe,
    )?)
}
