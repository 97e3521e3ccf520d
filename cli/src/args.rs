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

    /// Load a dynamic plugin (a shared library built with `lmms_core::declare_plugin!`);
    /// repeatable. Plugins are also loaded from LMMS_PLUGIN_PATH (colon-separated files or
    /// directories) and the plugins directory ($LMMS_HOME/plugins, else
    /// ~/.local/share/lmms/plugins).
    #[arg(long = "plugin", global = true, value_name = "PATH")]
    pub plugins: Vec<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every model id lmms knows, with its Hugging Face path, family, inputs and status.
    SupportedModels(SupportedModelsArgs),

    /// Fine-tune a model on a dataset.
    Train(Box<crate::train_args::TrainArgs>),

    /// Check a model family against Hugging Face transformers on fixture directories.
    Parity(ParityArgs),

    /// Time the training step of a model's config (random weights) on a synthetic batch:
    /// step time, tokens/s, peak memory, MFU on CUDA.
    Bench(Box<crate::commands::bench::BenchArgs>),

    /// Fold a PEFT LoRA adapter into its base model and write a standalone model.
    Merge(MergeArgs),

    /// Loss of a model (optionally with an adapter) on a dataset, per sample and overall.
    Eval(EvalArgs),

    /// Chat with a model (optionally with an adapter): one-shot with --message, else
    /// interactive.
    Chat(ChatArgs),

    /// A web UI on this machine: start and follow training runs, chat with models and runs.
    Serve(ServeArgs),

    /// Ready-made training configs per model and strategy (`list`, `copy NAME DIR`).
    #[command(subcommand)]
    Configs(ConfigsCommand),

    /// Work with datasets (`lmms data check`).
    #[command(subcommand)]
    Data(DataCommand),

    /// Model-family plugins (`lmms plugins list`).
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every registered family and where it came from: built-in, a static plugin linked into
    /// this build, or a dynamic plugin (its library).
    List(PluginsListArgs),
}

#[derive(Debug, Args)]
pub struct PluginsListArgs {
    /// Print JSON (one array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a dataset without training: every problem (file, sample, reason) and statistics.
    Check(DataCheckArgs),
    /// Collate one sample as training would: tensor shapes, the text with the trained spans
    /// marked (--decode), and optionally the tensors as safetensors (--out).
    Inspect(DataInspectArgs),
    /// Write a self-cognition dataset (questions about the assistant's identity, answers naming
    /// the new name and author), as in XTuner's personal-assistant tutorial.
    MakeIdentity(MakeIdentityArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
    lmms data make-identity --name Lumi --author \"the lmms team\" -n 500 --out identity.json")]
pub struct MakeIdentityArgs {
    /// The assistant's new name.
    #[arg(long)]
    pub name: String,

    /// Who made it (named in every answer).
    #[arg(long)]
    pub author: String,

    /// How many conversations to write.
    #[arg(
        short = 'n',
        long = "num-samples",
        default_value_t = 500,
        value_name = "N"
    )]
    pub num_samples: usize,

    /// The question language.
    #[arg(long, value_enum, default_value_t = IdentityLang::Both)]
    pub language: IdentityLang,

    /// Seed of the question order and answer choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// The JSON file to write (LLaVA-style `conversations`, no images).
    #[arg(
        long,
        short = 'o',
        default_value = "identity.json",
        value_name = "FILE"
    )]
    pub out: PathBuf,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdentityLang {
    En,
    Zh,
    Both,
}

#[derive(Debug, Args)]
pub struct DataInspectArgs {
    #[command(flatten)]
    pub common: ModelAndData,

    /// The sample's 0-based position in the dataset.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub index: usize,

    /// Write the collated tensors (input_ids, labels, attention_mask, pixel tensors) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Print the text, with trained spans between « and » and media tokens collapsed.
    #[arg(long)]
    pub decode: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Formats: LLaVA / lmms-finetune JSON list or JSONL (`image`, `video`, \
    `system_prompt`, `conversations` with `<image>`/`<video>`), InternLM-XComposer2 JSON \
    (`<ImageHere>`), and XComposer2 `data.txt` mixtures (`<json path> <samples in thousands>`).\n\
    Exits with status 1 when any sample is broken.\n\n\
    Examples:\n  \
    lmms data check --data train.json --image-folder images/\n  \
    lmms data check --data data.txt --tokenizer ./my-model --max-length 2048"
)]
pub struct DataCheckArgs {
    /// The dataset: a JSON list, JSONL, or a data.txt mixture.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,

    /// Folder that relative image paths are resolved against (default: the data file's folder).
    #[arg(long, value_name = "DIR")]
    pub image_folder: Option<PathBuf>,

    /// Folder that relative video paths are resolved against (default: the data file's folder).
    #[arg(long, value_name = "DIR")]
    pub video_folder: Option<PathBuf>,

    /// A model (registered id, hub path in the local cache, or directory) whose tokenizer and
    /// chat template give token statistics.
    #[arg(long, value_name = "ID|DIR")]
    pub model: Option<String>,

    /// The local directory holding the weights of a registered model id.
    #[arg(long, value_name = "DIR", requires = "model")]
    pub model_path: Option<PathBuf>,

    /// A directory with tokenizer.json (and tokenizer_config.json, a chat template) for token
    /// statistics, for models whose family is not implemented yet.
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub tokenizer: Option<PathBuf>,

    /// A built-in chat template (llava-1.5, vicuna, chatml, qwen2, qwen2-vl, internlm2, llama-3,
    /// phi-3), used when the tokenizer directory has none, or to override it.
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,

    /// Sequence limit in tokens: samples over it are listed.
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,

    /// Only check that media files exist (skip decoding the images).
    #[arg(long)]
    pub no_decode: bool,
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
#[command(
    after_help = "The output has the base checkpoint's layout and tensor names, so \
    transformers' from_pretrained loads it like the base; config.json, tokenizer and processor \
    files are copied from the base."
)]
pub struct MergeArgs {
    /// The base model directory the adapter was trained on.
    #[arg(long, value_name = "DIR")]
    pub base: PathBuf,

    /// The adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,

    /// Where the merged model is written (must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: ModelAndData,

    /// A PEFT LoRA adapter to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Interactive mode reads one message per line; /image PATH attaches an image \
    to the next message, /reset starts a new conversation, /exit (or end of input) quits.\n\n\
    Examples:\n  \
    lmms chat --model ./merged --message \"Who are you?\"\n  \
    lmms chat --model internlm2-chat-1_8b --adapter out/adapter --temperature 0.7"
)]
pub struct ChatArgs {
    /// The model directory (or registered model id with --model-path / the HF cache).
    #[arg(long, value_name = "ID|DIR")]
    pub model: String,

    /// The local directory of a registered model id.
    #[arg(long, value_name = "DIR")]
    pub model_path: Option<PathBuf>,

    /// A PEFT LoRA adapter to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,

    /// The system prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// A user message; each one is answered in turn, in one conversation. Without any, the
    /// chat is interactive.
    #[arg(long = "message", short = 'm', value_name = "TEXT")]
    pub messages: Vec<String>,

    /// An image for the first message (repeatable); an `<image>` placeholder is put before the
    /// text unless the message places its own. Interactive: `/image PATH`.
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,

    /// Most tokens per reply [default: the model's generation_config.json, else 256].
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,

    /// Sampling temperature; 0 is greedy [default: the model's generation_config.json (with
    /// do_sample), else 0].
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,

    /// Sample among the K most likely tokens, 0: all [default: generation_config.json, else 0].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Sample from the smallest set of tokens whose probability reaches P [default:
    /// generation_config.json, else 1].
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,

    /// Penalty on tokens already in the conversation, 1: none [default:
    /// generation_config.json, else 1].
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device to run on.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The page trains (model, data, strategy, hyper-parameters; live loss \
    chart, log and ETA; stop) and chats (streamed answers, image upload) with a model or a \
    finished run. Every path it uses must be inside --workspace.\n\n\
    Examples:\n  \
    lmms serve --workspace ~/finetune\n  \
    lmms serve --host 0.0.0.0 --port 8080 --token \"$(openssl rand -hex 16)\""
)]
pub struct ServeArgs {
    /// The address to listen on. Anything but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub host: String,

    /// The port (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 7860, value_name = "N")]
    pub port: u16,

    /// The directory the page may read and write: models, data, outputs, uploads
    /// [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// A secret every API request must carry (header `Authorization: Bearer T` or `?token=T`;
    /// the printed URL has it). Also read from LMMS_SERVE_TOKEN. At least 8 characters.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigsCommand {
    /// List the ready-made configs.
    List,
    /// Write config NAME as DIR/NAME.toml, to edit and pass to `lmms train --config`.
    Copy {
        /// A name from `lmms configs list`.
        name: String,
        /// The folder to write into.
        dir: PathBuf,
    },
}

/// The model and dataset options that `eval` and `data inspect` share.
#[derive(Debug, Args)]
pub struct ModelAndData {
    /// The model directory (or registered model id with --model-path / the HF cache).
    #[arg(long, value_name = "ID|DIR")]
    pub model: String,

    /// The local directory of a registered model id.
    #[arg(long, value_name = "DIR")]
    pub model_path: Option<PathBuf>,

    /// The data: a JSON list, JSONL, or a data.txt mixture.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,

    /// Folder that relative image paths are resolved against.
    #[arg(long, value_name = "DIR")]
    pub image_folder: Option<PathBuf>,

    /// Folder that relative video paths are resolved against.
    #[arg(long, value_name = "DIR")]
    pub video_folder: Option<PathBuf>,

    /// Longest sequence in tokens, as in training; longer samples are left out and listed.
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
}
