//! `lmms train` arguments. Every option can also come from a TOML file (`--config`): the same
//! names in snake_case at the top level, and HF `TrainingArguments` names under `[training]`;
//! flags override the file.

use clap::Args;
use lmms_core::backend::DeviceSpec;
use lmms_core::train::ScheduleKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Args, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(after_help = "Examples:\n  \
    lmms train --model qwen2-vl-7b-instruct --data train.json --image-folder images/ --use-lora\n  \
    lmms train --model ./my-llava-dir --data train.jsonl --output-dir out/ --max-steps 100\n  \
    lmms train --config my_run.toml --learning-rate 1e-4\n\n\
    Outputs in --output-dir: the PEFT adapter (LoRA) or the full model (HF layout), metrics.jsonl,\n\
    loss.svg, lmms_train_config.toml (the resolved settings) and checkpoint-N/ directories.")]
pub struct TrainArgs {
    /// A registered model id (see `supported-models`), a Hugging Face hub path found in the
    /// local cache, or a local model directory.
    #[arg(long, value_name = "ID|DIR")]
    pub model: Option<String>,

    /// The local directory holding the weights of a registered model id (skips the cache
    /// lookup).
    #[arg(long, value_name = "DIR")]
    pub model_path: Option<PathBuf>,

    /// Training data: a JSON list or JSONL file of conversations, or a data.txt mixture.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,

    /// Evaluation data in the same formats; its loss is logged with split "eval".
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,

    /// Folder that relative image paths in the data are resolved against.
    #[arg(long, value_name = "DIR")]
    pub image_folder: Option<PathBuf>,

    /// Folder that relative video paths in the data are resolved against.
    #[arg(long, value_name = "DIR")]
    pub video_folder: Option<PathBuf>,

    /// Where checkpoints, metrics and the final model or adapter are written [default: output].
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Train LoRA adapters on the LLM instead of all its weights.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub use_lora: Option<bool>,

    /// QLoRA: keep the LLM's frozen weights in 4 bits and train LoRA on top.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub q_lora: Option<bool>,

    /// LoRA rank [default: 8].
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<usize>,

    /// LoRA alpha; the update is scaled by alpha / rank [default: 8].
    #[arg(long, value_name = "ALPHA")]
    pub lora_alpha: Option<f64>,

    /// LoRA dropout probability [default: 0.05].
    #[arg(long, value_name = "P")]
    pub lora_dropout: Option<f64>,

    /// Modules that get LoRA: names (PEFT semantics, comma-separated) or `all-linear`
    /// [default: all-linear].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub lora_target_modules: Option<Vec<String>>,

    /// Train the vision tower too (fully, or with LoRA given --use-vision-lora).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub train_vision_encoder: Option<bool>,

    /// Use LoRA on the vision tower (with --train-vision-encoder).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub use_vision_lora: Option<bool>,

    /// Whether the projector trains [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub train_vision_projector: Option<bool>,

    /// Learning rate of the vision tower [default: --learning-rate].
    #[arg(long, value_name = "LR")]
    pub vision_lr: Option<f64>,

    /// Learning rate of the projector [default: --learning-rate].
    #[arg(long, value_name = "LR")]
    pub projector_lr: Option<f64>,

    /// Base learning rate [default: 2e-5].
    #[arg(long, value_name = "LR")]
    pub learning_rate: Option<f64>,

    /// Samples per micro-batch [default: 1].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Micro-batches per optimizer step [default: 1].
    #[arg(long, value_name = "N")]
    pub grad_accum: Option<usize>,

    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,

    /// Number of passes over the data [default: 1].
    #[arg(long, value_name = "N")]
    pub epochs: Option<f64>,

    /// Learning-rate schedule after warmup [default: cosine].
    #[arg(long, value_name = "KIND", value_parser = parse_schedule)]
    pub lr_scheduler: Option<ScheduleKind>,

    /// Fraction of the steps spent warming the learning rate up [default: 0.03].
    #[arg(long, value_name = "F")]
    pub warmup_ratio: Option<f64>,

    /// AdamW weight decay (never applied to norms and biases) [default: 0].
    #[arg(long, value_name = "W")]
    pub weight_decay: Option<f64>,

    /// Clip gradients to this global norm; 0 disables [default: 1].
    #[arg(long, value_name = "NORM")]
    pub max_grad_norm: Option<f64>,

    /// Longest sequence in tokens, media included; longer samples are skipped with a warning.
    #[arg(long, value_name = "N")]
    pub model_max_length: Option<usize>,

    /// Fewest pixels an image is resized to (Qwen2-VL / Qwen2.5-VL: `min_pixels` of the image
    /// processor; other families ignore it) [default: the processor config's].
    #[arg(long, value_name = "N")]
    pub min_pixels: Option<usize>,

    /// Most pixels an image is resized to: bounds the vision tokens, hence memory (Qwen2-VL /
    /// Qwen2.5-VL; other families ignore it) [default: the processor config's].
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<usize>,

    /// Fewest pixels of a video frame (Qwen2-VL / Qwen2.5-VL's video processor).
    #[arg(long, value_name = "N")]
    pub video_min_pixels: Option<usize>,

    /// Most pixels of a video frame (Qwen2-VL / Qwen2.5-VL's video processor).
    #[arg(long, value_name = "N")]
    pub video_max_pixels: Option<usize>,

    /// Write a checkpoint every N steps.
    #[arg(long, value_name = "N")]
    pub save_steps: Option<u64>,

    /// Keep only the newest N checkpoints [default: 2].
    #[arg(long, value_name = "N")]
    pub save_total_limit: Option<usize>,

    /// Evaluate on --eval-data every N steps (else once at the end).
    #[arg(long, value_name = "N")]
    pub eval_steps: Option<u64>,

    /// Log a metrics line every N steps [default: 1].
    #[arg(long, value_name = "N")]
    pub logging_steps: Option<u64>,

    /// Mixed precision: frozen weights and activations in bf16, trained weights and optimizer
    /// state in f32.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub bf16: Option<bool>,

    /// Gradient (activation) checkpointing: each decoder layer keeps only its input and reruns
    /// in the backward pass, as HF's `gradient_checkpointing`: much less activation memory for
    /// about one more forward pass of the layers.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub gradient_checkpointing: Option<bool>,

    /// Seed for shuffling, dropout and initialisation [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Start afresh in an --output-dir that holds an earlier run: its checkpoints, metrics and
    /// trained model or adapter are deleted first.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub overwrite_output_dir: Option<bool>,

    /// Continue from the last checkpoint in --output-dir.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub resume: Option<bool>,

    /// A TOML file with any of these options (flags given here override it).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Device to train on: cpu, cuda or cuda:N [default: cpu].
    #[arg(long, value_name = "DEVICE")]
    #[serde(with = "device_serde")]
    pub device: Option<DeviceSpec>,
}

fn parse_schedule(s: &str) -> Result<ScheduleKind, String> {
    match s {
        "cosine" => Ok(ScheduleKind::Cosine),
        "linear" => Ok(ScheduleKind::Linear),
        "constant" => Ok(ScheduleKind::Constant),
        other => Err(format!(
            "unknown schedule `{other}`: cosine, linear or constant"
        )),
    }
}

mod device_serde {
    use lmms_core::backend::DeviceSpec;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<DeviceSpec>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DeviceSpec>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl TrainArgs {
    /// Flags win over the file: fields set in `self` override `file`'s.
    pub fn over(self, file: TrainArgs) -> TrainArgs {
        macro_rules! pick {
            ($($f:ident),*) => { TrainArgs { $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            model,
            model_path,
            data,
            eval_data,
            image_folder,
            video_folder,
            output_dir,
            use_lora,
            q_lora,
            lora_rank,
            lora_alpha,
            lora_dropout,
            lora_target_modules,
            train_vision_encoder,
            use_vision_lora,
            train_vision_projector,
            vision_lr,
            projector_lr,
            learning_rate,
            batch_size,
            grad_accum,
            max_steps,
            epochs,
            lr_scheduler,
            warmup_ratio,
            weight_decay,
            max_grad_norm,
            model_max_length,
            min_pixels,
            max_pixels,
            video_min_pixels,
            video_max_pixels,
            save_steps,
            save_total_limit,
            eval_steps,
            logging_steps,
            seed,
            bf16,
            gradient_checkpointing,
            overwrite_output_dir,
            resume,
            config,
            device
        )
    }
}
