//! `lmms train`: resolves the model and the training strategy, then runs the family's trainer.

use crate::args::TrainArgs;
use lmms_core::Registry;
use lmms_core::model_dir::resolve_model;
use lmms_core::strategy::{
    LoraConfig, PartStrategy, QloraConfig, StrategySpec, TargetModules, TrainStrategy,
};
use std::process::ExitCode;

pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::linked()?;
    if !args.device.is_compiled_in() {
        anyhow::bail!(
            "--device {} needs a build with CUDA: cargo build --release --features cuda",
            args.device
        );
    }
    let resolved = resolve_model(&registry, &args.model, args.model_path.as_deref())?;
    let strategy = strategy_from_args(args);
    strategy.validate()?;
    if !args.data.is_file() {
        anyhow::bail!("--data {}: no such file", args.data.display());
    }
    anyhow::bail!(
        "family `{}` is registered as implemented but this build has no trainer for it",
        resolved.family.descriptor.id
    )
}

/// lmms-finetune's switches mapped onto per-part strategies.
fn strategy_from_args(args: &TrainArgs) -> StrategySpec {
    let lora = LoraConfig {
        r: args.lora_rank,
        alpha: args.lora_alpha,
        dropout: args.lora_dropout,
        target_modules: TargetModules::AllLinear,
        use_rslora: false,
    };
    let llm = if args.q_lora {
        PartStrategy::Qlora(QloraConfig {
            lora: lora.clone(),
            ..Default::default()
        })
    } else if args.use_lora {
        PartStrategy::Lora(lora.clone())
    } else {
        PartStrategy::Full
    };
    let vision_tower = match (args.train_vision_encoder, args.use_vision_lora) {
        (false, _) => PartStrategy::Frozen,
        (true, false) => PartStrategy::Full,
        (true, true) => PartStrategy::Lora(lora),
    };
    let projector = if args.train_vision_projector {
        PartStrategy::Full
    } else {
        PartStrategy::Frozen
    };
    StrategySpec {
        vision_tower,
        projector,
        llm,
        ..Default::default()
    }
}
