//! Training checkpoints: `checkpoint-<step>/` with the trainable parameters
//! (`trainable.safetensors`, our layout, by canonical name), the AdamW state of every parameter
//! group (burn records), and `trainer_state.json` (step, epoch, position, seed). Parameter ids are
//! derived from names, so a freshly built model and optimizer take the state back exactly.
//! Directories are written to a temporary sibling and renamed, and only the last `keep` are kept.

use crate::error::{Error, Result};
use crate::export::collect_values;
use crate::tensor_file::{HostTensor, TensorFile, write_f32};
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where the run stands; enough to continue exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch the next batch comes from.
    pub epoch: u64,
    /// Batches of that epoch already consumed.
    pub batch_in_epoch: u64,
    pub seed: u64,
}

pub const STATE_FILE: &str = "trainer_state.json";
pub const PARAMS_FILE: &str = "trainable.safetensors";

pub fn checkpoint_dir(output: &Path, step: u64) -> PathBuf {
    output.join(format!("checkpoint-{step}"))
}

/// Checkpoints in `output`, oldest first.
pub fn list_checkpoints(output: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(output)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            let path = e.path();
            path.join(STATE_FILE).is_file().then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// Writes the trainable parameters `names` (id -> name) of `model` and `state` with
/// `extra(tmp_dir)` adding the optimizer state, then drops checkpoints beyond the last `keep`.
pub fn save<B: Backend, M: Module<B>>(
    output: &Path,
    model: &M,
    names: &HashMap<ParamId, String>,
    state: &TrainerState,
    keep: Option<usize>,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(output, state.step);
    let ids: HashSet<ParamId> = names.keys().copied().collect();
    let values = collect_values(model, &ids);
    let mut tensors: Vec<(String, HostTensor<f32>)> = values
        .into_iter()
        .map(|(id, v)| (names[&id].clone(), v))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    crate::fs::write_dir_atomic(&dir, |tmp| {
        write_f32(&tmp.join(PARAMS_FILE), &tensors)?;
        extra(tmp)?;
        let json = serde_json::to_string_pretty(state).expect("state json");
        crate::fs::write_atomic(&tmp.join(STATE_FILE), json.as_bytes())
    })?;
    if let Some(keep) = keep.filter(|k| *k > 0) {
        let all = list_checkpoints(output);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
    }
    Ok(dir)
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path, source })
}

/// Replaces the values of the parameters named in the checkpoint; every trainable parameter
/// must be there, with its shape.
pub fn load_params<B: Backend, M: Module<B>>(
    dir: &Path,
    model: M,
    names: &HashMap<ParamId, String>,
) -> Result<M> {
    let file = TensorFile::open(dir.join(PARAMS_FILE))?;
    let mut values = HashMap::new();
    for (id, name) in names {
        if !file.contains(name) {
            return Err(Error::tensor(
                file.path(),
                name,
                "is missing: the checkpoint was written with another training strategy",
            ));
        }
        values.insert(*id, file.f32(name)?);
    }
    let mut mapper = Replace::<B> {
        values,
        error: None,
        _b: std::marker::PhantomData,
    };
    let model = model.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(Error::tensor(
            file.path(),
            e,
            "has a different shape than the model's parameter",
        )),
        None => Ok(model),
    }
}

struct Replace<B> {
    values: HashMap<ParamId, HostTensor<f32>>,
    error: Option<String>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleMapper<B> for Replace<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(v) = self.values.remove(&param.id) else {
            return param;
        };
        let require_grad = param.is_require_grad();
        let (id, old, mapper) = param.consume();
        if old.dims().to_vec() != v.shape {
            self.error = Some(format!("{id}"));
            return Param::from_mapped_value(id, old, mapper);
        }
        let shape: [usize; D] = v.shape.clone().try_into().expect("rank checked");
        let t = Tensor::<B, D>::from_data(TensorData::new(v.data, shape), &old.device())
            .cast(old.dtype());
        let t = if require_grad { t.require_grad() } else { t };
        Param::from_mapped_value(id, t, mapper)
    }
}
