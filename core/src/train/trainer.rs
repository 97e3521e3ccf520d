//! [`Trainer`]: forward, loss, backward, gradient accumulation and the grouped AdamW step for
//! any family's model.

use crate::error::{Error, Result};
use crate::llm::loss::causal_lm_loss;
use crate::nn::plan::LoraEntry;
use crate::nn::recompute::Recompute;
use crate::runtime::{FamilyModel, ModelInfo};
use crate::strategy::{Part, TrainStrategy};
use crate::train::optimizer::{GroupedAdamW, OptimizerConfig, ParamGroup};
use crate::train::schedule::Schedule;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use std::collections::HashMap;

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// 1-based index of the optimizer step.
    pub step: u64,
    /// Mean loss over the micro-batches of the step.
    pub loss: f64,
    /// Trained (label) tokens in the step.
    pub tokens: usize,
    /// Base learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Every parameter that trains, with its rank.
struct Trainable(Vec<(ParamId, usize)>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            self.0.push((param.id, D));
        }
    }
}

/// Parameter groups: part from the checkpoint name, no weight decay for 1-D parameters (norms,
/// biases, separators).
pub fn param_groups<B: AutodiffBackend, F: FamilyModel>(
    family: &F,
    model: &F::Model<B>,
    info: &ModelInfo,
    lora: &[LoraEntry],
) -> Result<HashMap<ParamId, ParamGroup>>
where
    F::Model<B>: AutodiffModule<B>,
{
    let mut names: HashMap<ParamId, String> = info
        .params
        .iter()
        .map(|(id, p)| (*id, p.name.clone()))
        .collect();
    for e in lora {
        names.insert(e.lora_a, e.path.clone());
        names.insert(e.lora_b, e.path.clone());
    }
    let mut trainable = Trainable(Vec::new());
    model.visit(&mut trainable);
    let mut groups = HashMap::new();
    for (id, rank) in trainable.0 {
        let name = names.get(&id).ok_or_else(|| {
            Error::Unsupported(format!(
                "a trainable parameter ({id}) has no checkpoint name"
            ))
        })?;
        groups.insert(
            id,
            ParamGroup {
                part: family.part_of(name),
                decay: rank >= 2,
            },
        );
    }
    if groups.is_empty() {
        return Err(Error::Strategy(
            "no parameter trains with this strategy".into(),
        ));
    }
    Ok(groups)
}

pub struct Trainer<'a, B: AutodiffBackend, F: FamilyModel>
where
    F::Model<B>: AutodiffModule<B>,
{
    family: &'a F,
    model: Option<F::Model<B>>,
    optim: GroupedAdamW<B, F::Model<B>>,
    accum: GradientsAccumulator<F::Model<B>>,
    strategy: &'a dyn TrainStrategy,
    base_lr: f64,
    schedule: Schedule,
    grad_accum: usize,
    device: B::Device,
    step: u64,
    micro: usize,
    loss_sum: f64,
    tokens: usize,
    /// Layer-level activation checkpointing ([`crate::nn::recompute`]).
    checkpointing: bool,
}

impl<'a, B: AutodiffBackend, F: FamilyModel> Trainer<'a, B, F>
where
    F::Model<B>: AutodiffModule<B>,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        family: &'a F,
        model: F::Model<B>,
        groups: HashMap<ParamId, ParamGroup>,
        strategy: &'a dyn TrainStrategy,
        optimizer: OptimizerConfig,
        schedule: Schedule,
        grad_accum: usize,
        device: B::Device,
    ) -> Self {
        Trainer {
            family,
            model: Some(model),
            base_lr: optimizer.learning_rate,
            optim: GroupedAdamW::new(optimizer, groups),
            accum: GradientsAccumulator::new(),
            strategy,
            schedule,
            grad_accum: grad_accum.max(1),
            device,
            step: 0,
            micro: 0,
            loss_sum: 0.0,
            tokens: 0,
            checkpointing: false,
        }
    }

    /// Keeps only each decoder layer's input in the forward and reruns the layers in the
    /// backward (HF's `gradient_checkpointing`): less activation memory for about one more
    /// forward of the layers.
    pub fn with_gradient_checkpointing(mut self, on: bool) -> Self {
        self.checkpointing = on;
        self
    }

    pub fn model(&self) -> &F::Model<B> {
        self.model.as_ref().expect("model present between steps")
    }

    pub fn into_model(mut self) -> F::Model<B> {
        self.model.take().expect("model present between steps")
    }

    /// Continues the step count of a resumed run (the schedule position follows it).
    pub fn set_steps(&mut self, steps: u64) {
        self.step = steps;
    }

    pub fn save_optimizer(&self, dir: &std::path::Path) -> Result<()> {
        self.optim.save(dir)
    }

    /// Takes back the optimizer state of a checkpoint.
    pub fn load_optimizer(&mut self, dir: &std::path::Path) -> Result<()> {
        let optim = std::mem::replace(
            &mut self.optim,
            GroupedAdamW::new(OptimizerConfig::default(), HashMap::new()),
        );
        self.optim = optim.load(dir, &self.device)?;
        Ok(())
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Mean loss of `inputs` under `model` and the number of tokens it averages over.
    fn loss(&self, model: &F::Model<B>, inputs: &F::Inputs) -> Result<(Tensor<B, 1>, usize)> {
        let labels = self
            .family
            .tokens(inputs)
            .labels
            .as_ref()
            .ok_or_else(|| Error::Batch("no labels".into()))?;
        let logits = self.family.forward(model, inputs, &self.device)?;
        Ok(causal_lm_loss(logits, &labels.data))
    }

    /// Loss of `inputs` without training (evaluation).
    pub fn eval_loss(&self, inputs: &F::Inputs) -> Result<(f64, usize)> {
        let (loss, n) = self.loss(self.model(), inputs)?;
        Ok((loss.into_scalar().elem::<f64>(), n))
    }

    /// Forward and backward of one micro-batch; every `grad_accum` micro-batches, an optimizer
    /// step, whose statistics are returned.
    pub fn micro_step(&mut self, inputs: &F::Inputs) -> Result<Option<StepStats>> {
        let model = self.model.take().expect("model present between steps");
        let result = self.accumulate(&model, inputs);
        self.model = Some(model);
        result?;
        self.micro += 1;
        if self.micro < self.grad_accum {
            return Ok(None);
        }
        let grads = self.accum.grads();
        let lr_factor = self.schedule.factor(self.step);
        let base = self.base_lr * lr_factor;
        let strategy = self.strategy;
        let model = self.model.take().expect("model present between steps");
        let (model, grad_norm) = self.optim.step(model, grads, |part: Part| {
            strategy.learning_rate(part, self.base_lr) * lr_factor
        });
        self.model = Some(model);
        self.step += 1;
        let stats = StepStats {
            step: self.step,
            loss: self.loss_sum / self.micro as f64,
            tokens: self.tokens,
            lr: base,
            grad_norm,
        };
        self.micro = 0;
        self.loss_sum = 0.0;
        self.tokens = 0;
        Ok(Some(stats))
    }

    fn accumulate(&mut self, model: &F::Model<B>, inputs: &F::Inputs) -> Result<()> {
        let recording = self.checkpointing.then(Recompute::<B>::begin);
        let (loss, n) = self.loss(model, inputs)?;
        if let Some(r) = &recording
            && self.step == 0
            && self.micro == 0
        {
            if r.is_empty() {
                tracing::warn!(
                    "gradient checkpointing: this family's layers do not run through \
                     nn::recompute::Stack, so nothing is checkpointed"
                );
            } else {
                tracing::info!(
                    "gradient checkpointing: {} layers keep only their inputs and rerun in the \
                     backward pass",
                    r.len()
                );
            }
        }
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(Error::Unsupported(format!(
                "the loss is {value} at step {}: training stopped",
                self.step + 1
            )));
        }
        // HF scales the loss of each micro-batch by 1 / gradient_accumulation_steps.
        let grads = (loss / self.grad_accum as f64).backward();
        let accum = &mut self.accum;
        let mut sink = |grads| accum.accumulate(model, GradientsParams::from_grads(grads, model));
        match recording {
            Some(recording) => recording.backward(grads, sink)?,
            None => sink(grads),
        }
        self.loss_sum += value;
        self.tokens += n;
        Ok(())
    }
}
