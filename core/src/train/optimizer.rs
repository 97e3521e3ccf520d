//! AdamW (burn's, which follows `torch.optim.AdamW`) applied per parameter group: one group per
//! (part, decays) pair, so each part has its own learning rate and norms, biases and other 1-D
//! parameters get no weight decay, as HF's Trainer arranges it. Clipping is by the global norm
//! over all gradients (`clip_grad_norm_`), not burn's per-tensor clipping.

use crate::error::{Error, Result};
use crate::strategy::Part;
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerConfig {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Clip gradients to this global L2 norm (`None` or 0 = no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimizerConfig {
    /// HF `TrainingArguments` defaults, with lmms-finetune's learning rate.
    fn default() -> Self {
        OptimizerConfig {
            learning_rate: 2e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: Some(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamGroup {
    pub part: Part,
    pub decay: bool,
}

impl ParamGroup {
    fn file_stem(&self) -> String {
        let part = match self.part {
            Part::VisionTower => "vision_tower",
            Part::Projector => "projector",
            Part::Llm => "llm",
        };
        let decay = if self.decay { "decay" } else { "no_decay" };
        format!("optimizer-{part}-{decay}")
    }
}

/// Measures the global gradient norm (`scale: None`), or moves gradients into their groups
/// multiplied by `scale`.
struct Splitter<'a> {
    groups: &'a HashMap<ParamId, ParamGroup>,
    grads: &'a mut GradientsParams,
    out: BTreeMap<ParamGroup, GradientsParams>,
    scale: Option<f64>,
    sum_sq: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Splitter<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(group) = self.groups.get(&param.id) else {
            return;
        };
        match self.scale {
            None => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    let sq: f32 = g.square().sum().into_scalar().elem();
                    self.sum_sq += sq as f64;
                }
            }
            Some(s) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    let g = if s == 1.0 { g } else { g * s };
                    self.out.entry(*group).or_default().register(param.id, g);
                }
            }
        }
    }
}

pub struct GroupedAdamW<B: AutodiffBackend, M: AutodiffModule<B>> {
    config: OptimizerConfig,
    groups: HashMap<ParamId, ParamGroup>,
    optims: BTreeMap<ParamGroup, OptimizerAdaptor<AdamW, M, B>>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupedAdamW<B, M> {
    pub fn new(config: OptimizerConfig, groups: HashMap<ParamId, ParamGroup>) -> Self {
        let mut optims = BTreeMap::new();
        for g in groups.values() {
            optims.entry(*g).or_insert_with(|| {
                AdamWConfig::new()
                    .with_beta_1(config.adam_beta1 as f32)
                    .with_beta_2(config.adam_beta2 as f32)
                    .with_epsilon(config.adam_epsilon as f32)
                    .with_weight_decay(if g.decay {
                        config.weight_decay as f32
                    } else {
                        0.0
                    })
                    .init::<B, M>()
            });
        }
        GroupedAdamW {
            config,
            groups,
            optims,
        }
    }

    /// Writes every group's AdamW state into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        for (group, optim) in &self.optims {
            let path = dir.join(group.file_stem());
            recorder
                .record(optim.to_record(), path.clone())
                .map_err(|e| Error::config(&path, format!("cannot write optimizer state: {e}")))?;
        }
        Ok(())
    }

    /// Reads the state [`GroupedAdamW::save`] wrote.
    pub fn load(mut self, dir: &Path, device: &B::Device) -> Result<Self> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let mut loaded = BTreeMap::new();
        for (group, optim) in std::mem::take(&mut self.optims) {
            let path = dir.join(group.file_stem());
            let record = recorder
                .load(path.clone(), device)
                .map_err(|e| Error::config(&path, format!("cannot read optimizer state: {e}")))?;
            loaded.insert(group, optim.load_record(record));
        }
        self.optims = loaded;
        Ok(self)
    }

    pub fn groups(&self) -> &HashMap<ParamId, ParamGroup> {
        &self.groups
    }

    /// One update. `lr(part)` is the learning rate of a part at this step. Returns the module
    /// and the global gradient norm before clipping.
    pub fn step(
        &mut self,
        module: M,
        mut grads: GradientsParams,
        lr: impl Fn(Part) -> f64,
    ) -> (M, f64) {
        let mut pass = Splitter {
            groups: &self.groups,
            grads: &mut grads,
            out: BTreeMap::new(),
            scale: None,
            sum_sq: 0.0,
        };
        module.visit(&mut pass);
        let norm = pass.sum_sq.sqrt();
        let coef = match self.config.max_grad_norm.filter(|m| *m > 0.0) {
            Some(max) => (max / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        pass.scale = Some(coef);
        module.visit(&mut pass);
        let split = pass.out;
        let mut module = module;
        for (group, g) in split {
            let optim = self
                .optims
                .get_mut(&group)
                .expect("every group has an optimizer");
            module = optim.step(lr(group.part), module, g);
        }
        (module, norm)
    }
}
