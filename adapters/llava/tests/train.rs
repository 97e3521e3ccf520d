//! The training engine on a tiny LLaVA (the committed HF fixture): LoRA and full fine-tuning
//! reduce the loss on a batch, and parts that do not train stay bitwise unchanged.

use lmms_core::backend::CpuTrain;
use lmms_core::burn::module::{Module, ModuleVisitor, Param, ParamId};
use lmms_core::burn::tensor::Tensor;
use lmms_core::export::{PeftExport, save_peft_adapter};
use lmms_core::loader::DType;
use lmms_core::model_dir::ModelDir;
use lmms_core::nn::plan::AdapterWeights;
use lmms_core::nn::plan::{LoraRegistry, PartPlan};
use lmms_core::runtime::{FamilyModel, Plans, build_model};
use lmms_core::strategy::Part;
use lmms_core::strategy::{LoraConfig, PartStrategy, StrategySpec};
use lmms_core::tensor_file::TensorFile;
use lmms_core::train::trainer::param_groups;
use lmms_core::train::{OptimizerConfig, Schedule, ScheduleKind, Trainer};
use lmms_llava::LlavaFamily;
use std::collections::HashMap;
use std::collections::HashSet;
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
type Run = (Vec<f64>, Values, Values, Names);
type Names = HashMap<ParamId, String>;

fn run(strategy: StrategySpec, lr: f64, steps: u64) -> Run {
    let (losses, before, after, names, _) = train(strategy, lr, steps, None);
    (losses, before, after, names)
}

/// Trains, and with `save`, writes a PEFT adapter there and returns the trained model's logits.
fn train(
    strategy: StrategySpec,
    lr: f64,
    steps: u64,
    save: Option<&Path>,
) -> (Vec<f64>, Values, Values, Names, Vec<f32>) {
    let family = LlavaFamily;
    let dir = ModelDir::open(fixture()).unwrap();
    let registry = LoraRegistry::default();
    let plans = Plans {
        vision_tower: PartPlan::from_strategy(&strategy.vision_tower, &registry),
        projector: PartPlan::from_strategy(&strategy.projector, &registry),
        llm: PartPlan::from_strategy(&strategy.llm, &registry),
        adapter: None,
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
    let mut logits = Vec::new();
    if let Some(dir) = save {
        let model = trainer.model();
        logits = family
            .forward(model, &inputs, &device)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let trained: HashSet<ParamId> = info
            .params
            .iter()
            .filter(|(_, p)| family.part_of(&p.name) == Part::Projector)
            .map(|(id, _)| *id)
            .collect();
        let lora = strategy.llm.lora().unwrap().clone();
        let export = PeftExport {
            lora: &registry.entries(),
            config: &lora,
            info: &info,
            trained: &trained,
            module_prefixes: family.part_modules(Part::Projector),
            runtime_name: &|n| family.runtime_name(n),
            base_model_name_or_path: Some("tests/fixtures/llava-1.5"),
        };
        save_peft_adapter(dir, model, &export).unwrap();
    }
    let names = info
        .params
        .into_iter()
        .map(|(id, p)| (id, p.name))
        .collect();
    (losses, before, after, names, logits)
}

#[test]
fn saved_peft_adapter_reloads_to_the_same_logits() {
    let strategy = StrategySpec {
        llm: PartStrategy::Lora(LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let keep = std::env::var_os("LMMS_KEEP_ADAPTER").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| tmp.path().join("adapter"));
    let (_, _, _, _, trained_logits) = train(strategy, 5e-3, 4, Some(&dir));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["modules_to_save"],
        serde_json::json!(["multi_modal_projector"])
    );
    assert_eq!(cfg["peft_type"], "LORA");
    let names = TensorFile::open(dir.join("adapter_model.safetensors"))
        .unwrap()
        .names();
    assert!(
        names.contains(
            &"base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"
                .to_string()
        ),
        "{names:?}"
    );
    assert!(
        names.contains(&"base_model.model.model.multi_modal_projector.linear_2.weight".to_string()),
        "{names:?}"
    );

    // Base + adapter, loaded the way `lmms parity` loads PEFT adapters.
    let family = LlavaFamily;
    let base = ModelDir::open(fixture()).unwrap();
    let adapter = AdapterWeights::open(&dir, &family.key_rules()).unwrap();
    let registry = LoraRegistry::default();
    let names = |n: &str| family.runtime_name(n);
    let plan = PartPlan::from_adapter(&adapter, &registry).with_runtime_names(&names);
    let plans = Plans::uniform(plan, Some(&adapter));
    let device = Default::default();
    let (model, _) = build_model::<B, _>(&family, &base, DType::F32, &plans, &device).unwrap();
    let inputs = family
        .read_inputs(&TensorFile::open(fixture().join("inputs.safetensors")).unwrap())
        .unwrap();
    let logits = family
        .forward(&model, &inputs, &device)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    if let Some(k) = keep {
        let t = lmms_core::tensor_file::HostTensor {
            shape: vec![trained_logits.len()],
            data: trained_logits.clone(),
        };
        lmms_core::tensor_file::write_f32(
            &k.join("lmms_logits.safetensors"),
            &[("logits".into(), t)],
        )
        .unwrap();
    }
    let max = trained_logits
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "max abs logit difference {max}");
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
