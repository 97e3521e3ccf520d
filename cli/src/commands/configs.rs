//! `lmms configs list` / `lmms configs copy NAME DIR`: ready-made `lmms train --config` files
//! per implemented model and strategy, as XTuner's `list-cfg` / `copy-cfg` offer. They are
//! made from the registry, so every implemented model id has them and none goes stale.

use crate::args::ConfigsCommand;
use anyhow::bail;
use lmms_core::{Modality, Registry, StrategyKind};
use std::process::ExitCode;

/// A training recipe: name suffix, what it does, the strategy keys and the learning rate.
struct Recipe {
    suffix: &'static str,
    about: &'static str,
    /// What it is for a text-only model (no projector), `None` when it needs a vision part.
    text_about: Option<&'static str>,
    needs: &'static [StrategyKind],
    keys: &'static str,
    learning_rate: &'static str,
}

const RECIPES: &[Recipe] = &[
    Recipe {
        suffix: "lora",
        about: "LoRA on the LLM, projector trained, vision tower frozen",
        text_about: Some("LoRA on the LLM"),
        needs: &[StrategyKind::Lora],
        keys: "use_lora = true\nlora_rank = 8\nlora_alpha = 8\nlora_dropout = 0.05\ntrain_vision_projector = true\n",
        learning_rate: "2e-4",
    },
    Recipe {
        suffix: "lora_vision-lora",
        about: "LoRA on the LLM and on the vision tower, projector trained",
        text_about: None,
        needs: &[StrategyKind::Lora, StrategyKind::VisionLora],
        keys: "use_lora = true\nlora_rank = 8\nlora_alpha = 8\nlora_dropout = 0.05\ntrain_vision_encoder = true\nuse_vision_lora = true\ntrain_vision_projector = true\n",
        learning_rate: "2e-4",
    },
    Recipe {
        suffix: "qlora",
        about: "QLoRA: LLM frozen in 4 bits with LoRA on top, projector trained",
        text_about: Some("QLoRA: LLM frozen in 4 bits with LoRA on top"),
        needs: &[StrategyKind::Qlora],
        keys: "q_lora = true\nlora_rank = 8\nlora_alpha = 8\nlora_dropout = 0.05\ntrain_vision_projector = true\n",
        learning_rate: "2e-4",
    },
    Recipe {
        suffix: "full",
        about: "full fine-tuning of the LLM and projector, vision tower frozen",
        text_about: Some("full fine-tuning of the LLM"),
        needs: &[StrategyKind::Full],
        keys: "use_lora = false\ntrain_vision_projector = true\n",
        learning_rate: "2e-5",
    },
];

struct Entry {
    name: String,
    about: &'static str,
    text: String,
}

fn entries() -> anyhow::Result<Vec<Entry>> {
    let registry = Registry::linked()?;
    let mut out = Vec::new();
    for m in registry.models() {
        let d = m.family.descriptor;
        if !d.status.is_implemented() {
            continue;
        }
        let text_only = d.modalities.iter().all(|m| *m == Modality::TextOnly);
        for r in RECIPES
            .iter()
            .filter(|r| r.needs.iter().all(|k| d.strategies.contains(k)))
        {
            let (about, keys) = if text_only {
                let Some(about) = r.text_about else { continue };
                (about, r.keys.replace("train_vision_projector = true\n", ""))
            } else {
                (r.about, r.keys.to_string())
            };
            let name = format!("{}_{}", m.model.id, r.suffix);
            let text = format!(
                "# {name}: {about}.\n# Model {id} ({hf}); `lmms train --config {name}.toml`, flags override.\n\
                 model = \"{id}\"\n# model_path = \"/path/to/{id}\"  # else the Hugging Face cache is searched\n\
                 data = \"train.json\"\n# image_folder = \"images\"\n# eval_data = \"eval.json\"\n\
                 output_dir = \"output/{name}\"\n{keys}\n[training]\nlearning_rate = {lr}\n\
                 num_train_epochs = 1.0\nper_device_train_batch_size = 1\ngradient_accumulation_steps = 8\n\
                 lr_scheduler_type = \"cosine\"\nwarmup_ratio = 0.03\nweight_decay = 0.0\nmax_grad_norm = 1.0\n\
                 logging_steps = 1\nsave_steps = 500\nsave_total_limit = 2\nseed = 42\n",
                id = m.model.id,
                hf = m.model.hf_path,
                lr = r.learning_rate,
            );
            out.push(Entry { name, about, text });
        }
    }
    Ok(out)
}

pub fn run(command: &ConfigsCommand) -> anyhow::Result<ExitCode> {
    let all = entries()?;
    match command {
        ConfigsCommand::List => {
            let width = all.iter().map(|e| e.name.len()).max().unwrap_or(0);
            for e in &all {
                println!("{:width$}  {}", e.name, e.about);
            }
        }
        ConfigsCommand::Copy { name, dir } => {
            let name = name.trim_end_matches(".toml");
            let Some(e) = all.iter().find(|e| e.name == name) else {
                bail!("no config `{name}`; `lmms configs list` shows them");
            };
            std::fs::create_dir_all(dir)?;
            let path = dir.join(format!("{name}.toml"));
            if path.exists() {
                bail!("{} already exists (nothing is overwritten)", path.display());
            }
            lmms_core::fs::write_atomic(&path, e.text.as_bytes())?;
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
