//! Command-line arguments (clap derive). Each subcommand's arguments live here so `--help` is
//! the one place a user reads; the commands themselves are in `commands/`.

use clap::{Args, Parser, Subcommand};
use lmms_core::backend::DeviceSpec;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lmms",
    version,
    about = "Fine-tune vision-language models and chat LLMs on CPU or CUDA",
    long_about = "Fine-tune vision-language models (LLaVA, Qwen2-VL, Phi-3-Vision, Llama-3.2-Vision, \
                  InternLM-XComposer2, Qwen-VL) and chat LLMs (InternLM2) with full fine-tuning, \
                  LoRA or QLoRA. Models are read from Hugging Face model directories; what lmms \
                  writes loads unchanged in transformers and peft.",
    after_help = "Run `lmms <COMMAND> --help` for the options of a command.\n\
                  Logging: -v / -vv, or the LMMS_LOG variable (e.g. LMMS_LOG=debug)."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every model id lmms knows, with its Hugging Face path, family, inputs and status.
    SupportedModels(SupportedModelsArgs),

    /// Fine-tune a model on a dataset.
    Train(Box<TrainArgs>),

    /// Check a model family against Hugging Face transformers on fixture directories.
    Parity(ParityArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "A fixture directory holds config.json and model.safetensors as save_pretrained \
    writes them, inputs.safetensors (input_ids, attention_mask, labels and the family's vision \
    tensors), expected.safetensors (logits, loss) and optionally adapter/ (a PEFT LoRA adapter) \
    with expected_lora.safetensors (logits, loss, grad.<peft parameter name>). Logits are \
    compared where attention_mask is 1."
)]
pub struct ParityArgs {
    /// Fixture directories to check.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,

    /// Device to run on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
}

#[derive(Debug, Args)]
pub struct SupportedModelsArgs {
    /// Print JSON (one array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Only the models of this family (e.g. `qwen2_vl`).
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,

    /// Only models whose family is implemented.
    #[arg(long)]
    pub implemented: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    lmms train --model qwen2-vl-7b-instruct --data train.json --image-folder images/ --use-lora\n  \
    lmms train --model ./my-llava-dir --data train.jsonl --output-dir out/ --max-steps 100")]
pub struct TrainArgs {
    /// A registered model id (see `supported-models`), a Hugging Face hub path found in the
    /// local cache, or a local model directory.
    #[arg(long, value_name = "ID|DIR")]
    pub model: String,

    /// The local directory holding the weights of a registered model id (skips the cache
    /// lookup).
    #[arg(long, value_name = "DIR")]
    pub model_path: Option<PathBuf>,

    /// Training data: a JSON list or JSONL file of conversations.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,

    /// Folder that relative image paths in the data are resolved against.
    #[arg(long, value_name = "DIR")]
    pub image_folder: Option<PathBuf>,

    /// Folder that relative video paths in the data are resolved against.
    #[arg(long, value_name = "DIR")]
    pub video_folder: Option<PathBuf>,

    /// Where checkpoints, metrics and the final model or adapter are written.
    #[arg(long, value_name = "DIR", default_value = "output")]
    pub output_dir: PathBuf,

    /// Train LoRA adapters on the LLM instead of all its weights.
    #[arg(long)]
    pub use_lora: bool,

    /// QLoRA: keep the LLM's frozen weights in 4 bits and train LoRA on top.
    #[arg(long, conflicts_with = "use_lora")]
    pub q_lora: bool,

    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_name = "R")]
    pub lora_rank: usize,

    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 8.0, value_name = "ALPHA")]
    pub lora_alpha: f64,

    /// LoRA dropout probability.
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub lora_dropout: f64,

    /// Train the vision tower too (fully, or with LoRA given --use-vision-lora).
    #[arg(long)]
    pub train_vision_encoder: bool,

    /// Use LoRA on the vision tower (needs --train-vision-encoder).
    #[arg(long, requires = "train_vision_encoder")]
    pub use_vision_lora: bool,

    /// Whether the projector trains.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub train_vision_projector: bool,

    /// Stop after this many optimizer steps.
    #[arg(long, value_name = "N", conflicts_with = "epochs")]
    pub max_steps: Option<u64>,

    /// Number of passes over the data.
    #[arg(long, value_name = "N")]
    pub epochs: Option<f64>,

    /// Write a checkpoint every N steps.
    #[arg(long, value_name = "N")]
    pub save_steps: Option<u64>,

    /// Seed for shuffling, dropout and initialisation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Continue from the last checkpoint in --output-dir.
    #[arg(long)]
    pub resume: bool,

    /// A TOML file with any of these options (flags given here override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Device to train on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
}
