//! How a family's model code plugs into the generic machinery (parity, training, evaluation):
//! a family implements [`FamilyModel`] with its own typed inputs and burn module; the blanket
//! [`DynFamily`] impl turns that into an object-safe handle, monomorphised per backend, that a
//! [`FamilyDescriptor`](crate::FamilyDescriptor) carries in its `runtime` field.

use crate::backend::DeviceSpec;
use crate::collator::{CollateOptions, Collator};
use crate::error::{Error, Result};
use crate::generate::Generator;
use crate::llm::KvCache;
use crate::llm::loss::IGNORE_INDEX;
use crate::loader::{DType, LoadOptions, ModelLoader};
use crate::model_dir::ModelDir;
use crate::nn::plan::{AdapterWeights, LoraRegistry, PartPlan};
use crate::strategy::Part;
use crate::tensor_file::{AnyTensor, HostTensor, TensorFile};
use crate::train::run::{TrainObserver, TrainReport, TrainRequest};
use crate::weights::{KeyRules, ParamInfo, WeightStore};
use burn::module::{AutodiffModule, Module, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use std::collections::HashMap;
use std::path::Path;

/// The loading plan of every part, and where LoRA layers register themselves.
pub struct Plans<'a> {
    pub vision_tower: PartPlan<'a>,
    pub projector: PartPlan<'a>,
    pub llm: PartPlan<'a>,
    /// A PEFT adapter whose saved modules replace base weights.
    pub adapter: Option<&'a AdapterWeights>,
}

impl<'a> Plans<'a> {
    /// The same plan for every part: a PEFT adapter's `target_modules` decide where LoRA goes.
    pub fn uniform(plan: PartPlan<'a>, adapter: Option<&'a AdapterWeights>) -> Self {
        Plans {
            vision_tower: plan,
            projector: plan,
            llm: plan,
            adapter,
        }
    }

    pub fn part(&self, part: Part) -> &PartPlan<'a> {
        match part {
            Part::VisionTower => &self.vision_tower,
            Part::Projector => &self.projector,
            Part::Llm => &self.llm,
        }
    }
}

/// The token-level tensors every batch has (row-major host data).
#[derive(Debug, Clone)]
pub struct Tokens {
    pub input_ids: HostTensor<i64>,
    /// 1 = real token, 0 = padding.
    pub attention_mask: Option<HostTensor<i64>>,
    /// -100 = not trained.
    pub labels: Option<HostTensor<i64>>,
}

impl Tokens {
    /// Reads `input_ids`, `attention_mask` and `labels` from a fixture's `inputs.safetensors`.
    pub fn from_file(file: &TensorFile) -> Result<Self> {
        let input_ids = file.i64("input_ids")?;
        let opt = |name: &str| -> Result<Option<HostTensor<i64>>> {
            if file.contains(name) {
                let t = file.i64(name)?;
                if t.shape != input_ids.shape {
                    return Err(Error::tensor(
                        file.path(),
                        name,
                        format!(
                            "has shape {:?} but input_ids has {:?}",
                            t.shape, input_ids.shape
                        ),
                    ));
                }
                Ok(Some(t))
            } else {
                Ok(None)
            }
        };
        Ok(Tokens {
            attention_mask: opt("attention_mask")?,
            labels: opt("labels")?,
            input_ids,
        })
    }

    pub fn batch(&self) -> usize {
        self.input_ids.shape[0]
    }

    pub fn seq(&self) -> usize {
        self.input_ids.shape[1]
    }

    /// `input_ids` on `device`, `[B, T]`.
    pub fn ids<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, burn::tensor::Int> {
        Tensor::from_data(
            burn::tensor::TensorData::new(self.input_ids.data.clone(), [self.batch(), self.seq()]),
            device,
        )
    }

    /// Positions 0..T-1 on every row: what HF uses when no `position_ids` are given.
    pub fn default_positions(&self) -> Vec<i64> {
        let t = self.seq() as i64;
        (0..self.batch()).flat_map(|_| 0..t).collect()
    }

    /// Rows of (ids, labels) right-padded to the longest: `pad_id`, attention mask 0, labels
    /// -100 past each row's end.
    pub fn right_padded(rows: &[(&[i64], &[i64])], pad_id: i64) -> Tokens {
        let len = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let n = rows.len() * len;
        let (mut input_ids, mut attention_mask, mut labels) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (ids, l) in rows {
            let pad = len - ids.len();
            input_ids.extend_from_slice(ids);
            input_ids.extend(std::iter::repeat_n(pad_id, pad));
            attention_mask.extend(std::iter::repeat_n(1, ids.len()));
            attention_mask.extend(std::iter::repeat_n(0, pad));
            labels.extend_from_slice(l);
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
        }
        let tensor = |data| HostTensor {
            shape: vec![rows.len(), len],
            data,
        };
        Tokens {
            input_ids: tensor(input_ids),
            attention_mask: Some(tensor(attention_mask)),
            labels: Some(tensor(labels)),
        }
    }

    /// `input_ids`, `attention_mask` and `labels` under HF's forward-argument names (the fixture
    /// format), the start of every family's `inputs_to_tensors`.
    pub fn to_tensors(&self) -> Vec<(String, AnyTensor)> {
        let mut out = vec![(
            "input_ids".to_string(),
            AnyTensor::I64(self.input_ids.clone()),
        )];
        for (name, v) in [
            ("attention_mask", &self.attention_mask),
            ("labels", &self.labels),
        ] {
            if let Some(v) = v {
                out.push((name.to_string(), AnyTensor::I64(v.clone())));
            }
        }
        out
    }

    /// Appends `id` to every row (a real token, not trained).
    pub fn push(&mut self, id: i64) {
        let (b, t) = (self.batch(), self.seq());
        let grow = |h: &mut HostTensor<i64>, v: i64| {
            let mut data = Vec::with_capacity(b * (t + 1));
            for r in 0..b {
                data.extend_from_slice(&h.data[r * t..(r + 1) * t]);
                data.push(v);
            }
            h.data = data;
            h.shape[1] = t + 1;
        };
        grow(&mut self.input_ids, id);
        if let Some(m) = &mut self.attention_mask {
            grow(m, 1);
        }
        if let Some(l) = &mut self.labels {
            grow(l, IGNORE_INDEX);
        }
    }
}

/// A family's model code.
pub trait FamilyModel: Send + Sync + std::fmt::Debug + 'static {
    /// Host-side inputs of one batch (token ids plus the family's vision tensors).
    type Inputs: Send;
    /// Turns dataset samples into [`Self::Inputs`].
    type Collator: Collator<Batch = Self::Inputs>;
    type Model<B: Backend>: Module<B>;

    /// Maps checkpoint names of every layout the family meets onto the one its modules use.
    fn key_rules(&self) -> KeyRules;

    /// Builds the model from `store` (already opened with [`Self::key_rules`]).
    fn build<B: Backend>(
        &self,
        dir: &ModelDir,
        store: &WeightStore,
        plans: &Plans<'_>,
        device: &B::Device,
    ) -> Result<Self::Model<B>>;

    /// The part a parameter or LoRA layer belongs to, from its checkpoint name.
    fn part_of(&self, name: &str) -> Part;

    /// The module name transformers gives a canonical name at run time, which PEFT adapters
    /// use (e.g. LLaVA's `language_model.model.layers.0` is `model.language_model.layers.0`).
    fn runtime_name(&self, canonical: &str) -> String {
        canonical.to_string()
    }

    /// Canonical prefixes of the whole modules that make up a part, for PEFT's
    /// `modules_to_save` when the part trains fully next to LoRA.
    fn part_modules(&self, part: Part) -> &'static [&'static str] {
        let _ = part;
        &[]
    }

    /// The collator for the model in `dir` (its tokenizer, chat template, image processor).
    fn collator(&self, dir: &ModelDir, options: &CollateOptions) -> Result<Self::Collator>;

    /// A batch under HF's forward-argument names (the fixture format; `lmms data inspect`).
    fn inputs_to_tensors(&self, inputs: &Self::Inputs) -> Vec<(String, AnyTensor)>;

    /// Reads a batch stored under HF's forward-argument names (the fixture format).
    fn read_inputs(&self, file: &TensorFile) -> Result<Self::Inputs>;

    fn tokens<'a>(&self, inputs: &'a Self::Inputs) -> &'a Tokens;

    /// The token tensors, to append generated tokens to (`None`: the family cannot generate
    /// yet, e.g. its inputs depend on the sequence length beyond the token ids).
    fn tokens_mut<'a>(&self, inputs: &'a mut Self::Inputs) -> Option<&'a mut Tokens> {
        let _ = inputs;
        None
    }

    /// Logits `[B, T, V]`.
    fn forward<B: Backend>(
        &self,
        model: &Self::Model<B>,
        inputs: &Self::Inputs,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>>;

    /// Runs a prompt (media included) into a new KV cache: the last position's logits `[B, V]`
    /// and the cache that [`Self::decode`] continues. `None` (the default): the family decodes
    /// without a cache, rerunning the whole sequence each step through [`Self::tokens_mut`].
    #[allow(clippy::type_complexity)]
    fn prefill<B: Backend>(
        &self,
        model: &Self::Model<B>,
        inputs: &Self::Inputs,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, 2>, KvCache<B>)>> {
        let _ = (model, inputs, device);
        Ok(None)
    }

    /// Runs one new token per row (`ids`) after what `cache` holds: its logits `[B, V]`.
    fn decode<B: Backend>(
        &self,
        model: &Self::Model<B>,
        ids: &[i64],
        cache: &mut KvCache<B>,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let _ = (model, ids, cache, device);
        Err(Error::Unsupported(
            "this family has no KV-cache decoding".into(),
        ))
    }
}

/// What loading learned about a model's parameters: where every base parameter came from, by
/// id (LoRA layers are in the plans' [`LoraRegistry`]).
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub params: HashMap<ParamId, ParamInfo>,
}

/// Opens the weights of `dir` and builds `F`'s model with the given plans, strictly.
pub fn build_model<B: Backend, F: FamilyModel>(
    family: &F,
    dir: &ModelDir,
    dtype: DType,
    plans: &Plans<'_>,
    device: &B::Device,
) -> Result<(F::Model<B>, ModelInfo)> {
    let mut store = WeightStore::open(&dir.weights()?, &family.key_rules(), dtype)?;
    if let Some(adapter) = plans.adapter {
        for (path, rules) in &adapter.overrides {
            store.add_overrides(path, rules)?;
        }
    }
    let model = family.build(dir, &store, plans, device)?;
    store.finish()?;
    for plan in [&plans.vision_tower, &plans.projector, &plans.llm] {
        if let Some(adapter) = plan.adapter {
            adapter.finish()?;
        }
    }
    Ok((
        model,
        ModelInfo {
            params: store.param_infos(),
        },
    ))
}

/// The issue-2 [`ModelLoader`] contract, for every family: strategy per part, optional adapter.
impl<F: FamilyModel> ModelLoader for F {
    type Model<B: Backend> = F::Model<B>;

    fn load<B: Backend>(
        &self,
        dir: &ModelDir,
        device: &B::Device,
        options: &LoadOptions<'_>,
    ) -> Result<Self::Model<B>> {
        options.strategy.validate()?;
        let registry = LoraRegistry::default();
        let adapter = match options.adapter {
            Some(path) => Some(AdapterWeights::open(path, &self.key_rules())?),
            None => None,
        };
        let names = |n: &str| self.runtime_name(n);
        let plan = |part: Part| {
            match &adapter {
                Some(a) => PartPlan::from_adapter(a, &registry),
                None => PartPlan::from_strategy(options.strategy.part(part), &registry),
            }
            .with_runtime_names(&names)
        };
        let plans = Plans {
            vision_tower: plan(Part::VisionTower),
            projector: plan(Part::Projector),
            llm: plan(Part::Llm),
            adapter: adapter.as_ref(),
        };
        Ok(build_model(self, dir, options.dtype, &plans, device)?.0)
    }
}

/// What `lmms parity` measured on one fixture directory.
#[derive(Debug, Clone)]
pub struct ParityReport {
    pub checks: Vec<ParityCheck>,
    pub forward_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct ParityCheck {
    /// `logits`, `loss`, `lora.logits`, `lora.loss`, `lora.grad.<peft name>`, `generate`
    /// (greedy ids with the KV cache), `generate.no_cache`.
    pub name: String,
    pub max_abs_err: f64,
    /// `max |a - b| / max |b|` over the compared elements.
    pub max_rel_err: f64,
    pub tolerance: f64,
    /// What to show instead of the errors (token-id checks: how many ids match).
    pub note: Option<String>,
}

impl ParityCheck {
    pub fn passed(&self) -> bool {
        self.max_rel_err <= self.tolerance
    }
}

/// A collated batch under HF's tensor names, and the samples the collator left out.
pub type Inspected = (Vec<(String, AnyTensor)>, Vec<crate::collator::Skipped>);

/// One sample's evaluation.
#[derive(Debug, Clone)]
pub struct SampleEval {
    pub origin: crate::data::SampleOrigin,
    /// Sequence length (media tokens included).
    pub tokens: usize,
    /// Tokens the loss counts (labels not -100, shifted).
    pub trained_tokens: usize,
    pub loss: f64,
}

#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    /// Token-weighted mean loss.
    pub loss: f64,
    pub trained_tokens: usize,
    pub samples: Vec<SampleEval>,
    pub skipped: Vec<crate::collator::Skipped>,
}

/// The object-safe face of a family's runtime, stored in its descriptor.
pub trait DynFamily: Send + Sync + std::fmt::Debug {
    /// Runs the fixture in `dir` (see the fixture contract) and compares with its expectations.
    fn parity(&self, dir: &Path, device: DeviceSpec) -> Result<ParityReport>;

    /// Folds the PEFT adapter in `adapter` into the base model in `base` and writes a
    /// standalone model to `out` in the base's layout.
    fn merge(&self, base: &ModelDir, adapter: &Path, out: &Path) -> Result<()>;

    /// Loss of a model (optionally with a PEFT adapter) on `samples`, per sample and overall.
    fn eval(
        &self,
        model: &ModelDir,
        adapter: Option<&Path>,
        samples: &[&crate::data::Sample],
        options: &CollateOptions,
        device: DeviceSpec,
    ) -> Result<EvalReport>;

    /// Collates `samples` as training would and returns the batch under HF's names, with the
    /// samples the options left out.
    fn inspect(
        &self,
        model: &ModelDir,
        samples: &[&crate::data::Sample],
        options: &CollateOptions,
    ) -> Result<Inspected>;

    /// Each sample's sequence length as the family's collator builds it (media included).
    fn num_tokens(
        &self,
        model: &ModelDir,
        samples: &[&crate::data::Sample],
        options: &CollateOptions,
    ) -> Result<Vec<Result<usize>>>;

    /// Loads the model (optionally with a PEFT adapter) for generation on `device`.
    fn generator<'a>(
        &'a self,
        model: &ModelDir,
        adapter: Option<&Path>,
        options: &CollateOptions,
        device: DeviceSpec,
    ) -> Result<Box<dyn Generator + 'a>>;

    /// Trains (see [`crate::train::run`]).
    fn train(
        &self,
        request: &TrainRequest<'_>,
        device: DeviceSpec,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainReport>;
}

/// Runs `$body` with `B` the backend `--device` picks (`$cpu` on the CPU, `$cuda` on a CUDA
/// device, which needs the `cuda` feature) and `$dev` that device.
macro_rules! on_device {
    ($device:expr, $cpu:ty, $cuda:ty, |$dev:ident| $body:expr) => {
        match $device {
            DeviceSpec::Cpu => {
                type B = $cpu;
                let $dev = burn::tensor::Device::<B>::default();
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => {
                type B = $cuda;
                let $dev = burn::backend::cuda::CudaDevice::new(n);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(no_cuda()),
        }
    };
}

impl<F: FamilyModel> DynFamily for F
where
    F::Model<crate::backend::CpuTrain>: AutodiffModule<crate::backend::CpuTrain>,
    F::Model<crate::backend::CudaTrainOrCpu>: AutodiffModule<crate::backend::CudaTrainOrCpu>,
{
    fn merge(&self, base: &ModelDir, adapter: &Path, out: &Path) -> Result<()> {
        type B = crate::backend::Cpu;
        let device = Default::default();
        let registry = LoraRegistry::default();
        let weights = AdapterWeights::open(adapter, &self.key_rules())?;
        let names = |n: &str| self.runtime_name(n);
        let plan = PartPlan::from_adapter(&weights, &registry).with_runtime_names(&names);
        let plans = Plans::uniform(plan, Some(&weights));
        let (model, info) = build_model::<B, F>(self, base, DType::F32, &plans, &device)?;
        let merged = crate::export::merged_lora_weights(
            &model,
            &registry.entries(),
            weights.config.scaling(),
        )?;
        crate::export::save_full_model_with(out, &model, &info, &base.root, 5 << 30, merged)
    }

    fn num_tokens(
        &self,
        model: &ModelDir,
        samples: &[&crate::data::Sample],
        options: &CollateOptions,
    ) -> Result<Vec<Result<usize>>> {
        let collator = self.collator(model, options)?;
        Ok(samples.iter().map(|s| collator.num_tokens(s)).collect())
    }

    fn inspect(
        &self,
        model: &ModelDir,
        samples: &[&crate::data::Sample],
        options: &CollateOptions,
    ) -> Result<Inspected> {
        let (inputs, skipped) = self.collator(model, options)?.collate(samples)?;
        Ok((
            inputs
                .map(|i| self.inputs_to_tensors(&i))
                .unwrap_or_default(),
            skipped,
        ))
    }

    fn eval(
        &self,
        model_dir: &ModelDir,
        adapter: Option<&Path>,
        samples: &[&crate::data::Sample],
        options: &CollateOptions,
        device: DeviceSpec,
    ) -> Result<EvalReport> {
        on_device!(device, crate::backend::Cpu, crate::backend::Cuda, |dev| {
            eval_on::<B, F>(self, model_dir, adapter, samples, options, &dev)
        })
    }

    fn generator<'a>(
        &'a self,
        model_dir: &ModelDir,
        adapter: Option<&Path>,
        options: &CollateOptions,
        device: DeviceSpec,
    ) -> Result<Box<dyn Generator + 'a>> {
        on_device!(device, crate::backend::Cpu, crate::backend::Cuda, |dev| {
            generator_on::<B, F>(self, model_dir, adapter, options, dev)
        })
    }

    fn train(
        &self,
        request: &TrainRequest<'_>,
        device: DeviceSpec,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainReport> {
        on_device!(
            device,
            crate::backend::CpuTrain,
            crate::backend::CudaTrainOrCpu,
            |dev| crate::train::run::run::<B, F>(self, request, &dev, observer)
        )
    }

    fn parity(&self, dir: &Path, device: DeviceSpec) -> Result<ParityReport> {
        on_device!(
            device,
            crate::backend::CpuTrain,
            crate::backend::CudaTrainOrCpu,
            |dev| crate::parity::run::<B, F>(self, dir, &dev)
        )
    }
}

/// The model of `dir` (with a PEFT adapter when given) ready for generation on `device`.
fn generator_on<'a, B: Backend, F: FamilyModel>(
    family: &'a F,
    model_dir: &ModelDir,
    adapter: Option<&Path>,
    options: &CollateOptions,
    device: B::Device,
) -> Result<Box<dyn Generator + 'a>> {
    let model = inference_model::<B, F>(family, model_dir, adapter, &device)?;
    Ok(Box::new(crate::decode::FamilyGenerator {
        family,
        model,
        collator: family.collator(model_dir, options)?,
        device,
    }))
}

#[cfg(not(feature = "cuda"))]
fn no_cuda() -> Error {
    Error::Unsupported(
        "this lmms was built without CUDA: cargo build --release --features cuda".into(),
    )
}

/// Each sample's loss alone and their token-weighted mean, on backend `B`.
fn eval_on<B: Backend, F: FamilyModel>(
    family: &F,
    model_dir: &ModelDir,
    adapter: Option<&Path>,
    samples: &[&crate::data::Sample],
    options: &CollateOptions,
    dev: &B::Device,
) -> Result<EvalReport> {
    let model = inference_model::<B, F>(family, model_dir, adapter, dev)?;
    let collator = family.collator(model_dir, options)?;
    let mut report = EvalReport::default();
    let (mut sum, mut count) = (0.0, 0usize);
    for sample in samples {
        let (inputs, skipped) = collator.collate(&[*sample])?;
        let Some(inputs) = inputs else {
            report.skipped.extend(skipped);
            continue;
        };
        let labels = family
            .tokens(&inputs)
            .labels
            .as_ref()
            .ok_or_else(|| Error::Batch("no labels".into()))?;
        let logits = family.forward(&model, &inputs, dev)?;
        let (loss, n) = crate::llm::loss::causal_lm_loss(logits, &labels.data);
        let loss: f64 = burn::tensor::ElementConversion::elem(loss.into_scalar());
        sum += loss * n as f64;
        count += n;
        report.samples.push(SampleEval {
            origin: sample.origin.clone(),
            tokens: family.tokens(&inputs).seq(),
            trained_tokens: n,
            loss,
        });
    }
    report.loss = if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    };
    report.trained_tokens = count;
    Ok(report)
}

/// The frozen model of `dir`, with a PEFT adapter's LoRA layers and saved modules when given.
fn inference_model<B: Backend, F: FamilyModel>(
    family: &F,
    dir: &ModelDir,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<F::Model<B>> {
    let registry = LoraRegistry::default();
    let weights = adapter
        .map(|a| AdapterWeights::open(a, &family.key_rules()))
        .transpose()?;
    let names = |n: &str| family.runtime_name(n);
    let plan = match &weights {
        Some(w) => PartPlan::from_adapter(w, &registry).with_runtime_names(&names),
        None => PartPlan::FROZEN,
    };
    let plans = Plans::uniform(plan, weights.as_ref());
    Ok(build_model::<B, F>(family, dir, DType::F32, &plans, device)?.0)
}
