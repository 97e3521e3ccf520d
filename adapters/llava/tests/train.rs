//! The training engine on a tiny LLaVA (the committed HF fixture): LoRA and full fine-tuning
//! reduce the loss on a batch, and parts that do not train stay bitwise unchanged.

use lmms_core::backend::CpuTrain;
use lmms_core::burn::module::{Module, ModuleVisitor, Param, ParamId};
use lmms_core::burn::tensor::Tensor;
use lmms_core::loader::DType;
use lmms_core::model_dir::ModelDir;
use lmms_core::nn::plan::{LoraRegistry, PartPlan};
use lmms_core::runtime::{FamilyModel, Plans, build_model};
use lmms_core::strategy::{LoraConfig, PartStrategy, StrategySpec};
use lmms_core::tensor_file::TensorFile;
use lmms_core::train::trainer::param_groups;
use lmms_core::train::{OptimizerConfig, Schedule, ScheduleKind, Trainer};
use lmms_llava::LlavaFamily;
use std::collections::HashMap;
use std::path::Path;

type B = CpuTrain;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/llava-1.5"
    ))
}

/// Every parameter's values, by id.
struct Snapshot(HashMap<ParamId, Vec<f32>>);

impl ModuleVisitor<B> for Snapshot {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0
            .insert(p.id, p.val().into_data().to_vec::<f32>().unwrap());
    }
}

fn snapshot<M: Module<B>>(m: &M) -> HashMap<ParamId, Vec<f32>> {
    let mut s = Snapshot(HashMap::new());
    m.visit(&mut s);
    s.0
}

type Values = HashMap<ParamId, Vec<f32>>;

/// Losses per step, parameters before and after, and base parameter names.
type Run = (Vec<f64>, Values, Values, HashMap<ParamId, String>);

fn run(strategy: StrategySpec, lr: f64, steps: u64) -> Run {
    let family = LlavaFamily;
    let dir = ModelDir::open(fixture()).unwrap();
    let registry = LoraRegistry::default();
    let plans = Plans {
        vision_tower: PartPlan::from_strategy(&strategy.vision_tower, &registry),
        projector: PartPlan::from_strategy(&strategy.projector, &registry),
        llm: PartPlan::from_strategy(&strategy.llm, &registry),
    };
    let device = Default::default();
    let (model, info) = build_model::<B, _>(&family, &dir, DType::F32, &plans, &device).unwrap();
    let before = snapshot(&model);
    let groups = param_groups(&family, &model, &info, &registry.entries()).unwrap();
    let inputs = family
        .read_inputs(&TensorFile::open(fixture().join("inputs.safetensors")).unwrap())
        .unwrap();
    let optimizer = OptimizerConfig {
        learning_rate: lr,
        ..Default::default()
    };
    let schedule = Schedule {
        kind: ScheduleKind::Constant,
        warmup_steps: 0,
        total_steps: steps,
    };
    let mut trainer = Trainer::new(
        &family, model, groups, &strategy, optimizer, schedule, 2, device,
    );
    let mut losses = Vec::new();
    while trainer.steps() < steps {
        if let Some(s) = trainer.micro_step(&inputs).unwrap() {
            assert!(s.grad_norm.is_finite() && s.tokens > 0);
            losses.push(s.loss);
        }
    }
    let after = snapshot(trainer.model());
    (losses, before, after, info.param_names)
}

#[test]
fn lora_training_reduces_loss_and_keeps_frozen_parts_bitwise() {
    let strategy = StrategySpec {
        llm: PartStrategy::Lora(LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let (losses, before, after, names) = run(strategy, 5e-3, 12);
    assert!(losses.last().unwrap() < &(losses[0] * 0.7), "{losses:?}");
    let mut frozen = 0;
    for (id, name) in &names {
        if name.starts_with("vision_tower.") || name.starts_with("language_model.") {
            assert_eq!(before[id], after[id], "{name} changed");
            frozen += 1;
        } else {
            assert_ne!(before[id], after[id], "{name} (projector) did not train");
        }
    }
    assert!(frozen > 20);
}

#[test]
fn full_training_reduces_loss() {
    let strategy = StrategySpec {
        llm: PartStrategy::Full,
        ..Default::default()
    };
    let (losses, before, after, names) = run(strategy, 1e-3, 6);
    assert!(losses.last().unwrap() < &(losses[0] * 0.8), "{losses:?}");
    let q = names
        .iter()
        .find(|(_, n)| {
            n.ends_with("layers.0.self_attn.q_proj.weight") && n.starts_with("language_model")
        })
        .unwrap()
        .0;
    assert_ne!(before[q], after[q]);
    let v = names
        .iter()
        .find(|(_, n)| n.starts_with("vision_tower."))
        .unwrap()
        .0;
    assert_eq!(before[v], after[v]);
}
