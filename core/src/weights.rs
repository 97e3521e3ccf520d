//! Strict weight loading from a model directory's safetensors files (single or sharded), in the
//! style of candle's `VarBuilder`: modules pull their tensors by path (`vars.pp("layers").pp(0)`),
//! every tensor's shape is checked against what the config implies, and [`WeightStore::finish`]
//! refuses tensors that no module used. Checkpoints name the same tensor differently (the hub
//! layout `language_model.model.layers.N...` vs transformers 5's `model.language_model.layers.N...`):
//! a family gives [`KeyRules`] that map file names onto the one layout its modules use.

use crate::error::{Error, Result};
use crate::loader::DType;
use crate::model_dir::WeightFiles;
use crate::tensor_file::{HostTensor, TensorFile};
use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a family maps the names found in weight files onto the names its modules ask for.
#[derive(Debug, Clone, Default)]
pub struct KeyRules {
    /// Prefix rewrites `(from, to)`, tried in order; the first that matches applies.
    pub renames: Vec<(String, String)>,
    /// Tensors in files that are not weights (cached buffers such as `rotary_emb.inv_freq`):
    /// dropped when the name ends with one of these.
    pub ignore_suffixes: Vec<String>,
    /// When not empty, only names ending with one of these are kept.
    pub keep_suffixes: Vec<String>,
}

impl KeyRules {
    pub fn rename(mut self, from: &str, to: &str) -> Self {
        self.renames.push((from.to_string(), to.to_string()));
        self
    }

    pub fn ignore_suffix(mut self, suffix: &str) -> Self {
        self.ignore_suffixes.push(suffix.to_string());
        self
    }

    pub fn keep_suffix(mut self, suffix: &str) -> Self {
        self.keep_suffixes.push(suffix.to_string());
        self
    }

    fn skips(&self, name: &str) -> bool {
        self.ignore_suffixes
            .iter()
            .any(|s| name.ends_with(s.as_str()))
            || (!self.keep_suffixes.is_empty()
                && !self
                    .keep_suffixes
                    .iter()
                    .any(|s| name.ends_with(s.as_str())))
    }

    fn canonical(&self, name: &str) -> String {
        for (from, to) in &self.renames {
            if let Some(rest) = name.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        name.to_string()
    }
}

struct Entry {
    file: usize,
    /// The name in the file, kept so exports can write the checkpoint's own layout back.
    original: String,
    /// The name to read in `file` (differs from `original` for a tensor an adapter replaced).
    key: String,
}

/// All tensors of a set of safetensors files, under canonical names.
pub struct WeightStore {
    files: Vec<TensorFile>,
    entries: BTreeMap<String, Entry>,
    used: Mutex<BTreeSet<String>>,
    /// Every parameter built from this store.
    params: Mutex<HashMap<ParamId, ParamInfo>>,
    dtype: DType,
    /// No files: every tensor asked for is made up (`lmms bench`, see [`crate::bench::random`]).
    random: Option<crate::bench::random::RandomWeights>,
}

/// Where a parameter came from: its canonical name, its name and shape in the checkpoint file,
/// and whether it was transposed at load (linear weights, which we hold `[in, out]`, and patch
/// convolutions, also reshaped); [`ParamInfo::to_checkpoint`] undoes that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    pub name: String,
    pub original: String,
    pub shape: Vec<usize>,
    pub transposed: bool,
}

impl ParamInfo {
    /// A parameter's values `param` (row-major) in the file's layout.
    pub fn to_checkpoint(&self, param: HostTensor<f32>) -> HostTensor<f32> {
        if !self.transposed {
            return HostTensor {
                shape: self.shape.clone(),
                data: param.data,
            };
        }
        let (rows, cols) = (param.shape[0], param.shape[1]);
        let mut data = vec![0f32; param.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = param.data[r * cols + c];
            }
        }
        HostTensor {
            shape: self.shape.clone(),
            data,
        }
    }
}

/// A parameter id derived from a name (64-bit FNV-1a), stable across runs.
pub fn param_id(name: &str) -> ParamId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ParamId::from(h)
}

impl WeightStore {
    pub fn open(weights: &WeightFiles, rules: &KeyRules, dtype: DType) -> Result<Self> {
        let paths: Vec<PathBuf> = weights.files().iter().map(|p| p.to_path_buf()).collect();
        Self::from_paths(&paths, rules, dtype)
    }

    pub fn from_paths(paths: &[PathBuf], rules: &KeyRules, dtype: DType) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = TensorFile::open(path)?;
            for name in file.names() {
                if rules.skips(&name) {
                    continue;
                }
                let canonical = rules.canonical(&name);
                if let Some(prev) = entries.get(&canonical) {
                    return Err(Error::tensor(
                        path,
                        &name,
                        format!(
                            "is the same weight as `{}` in {} (two layouts mixed in one checkpoint?)",
                            prev.original,
                            paths[prev.file].display()
                        ),
                    ));
                }
                entries.insert(
                    canonical,
                    Entry {
                        file: i,
                        key: name.clone(),
                        original: name,
                    },
                );
            }
            files.push(file);
        }
        Ok(WeightStore {
            files,
            entries,
            used: Mutex::new(BTreeSet::new()),
            params: Mutex::new(HashMap::new()),
            dtype,
            random: None,
        })
    }

    /// A store without files that makes up every tensor a module asks for (random weights of
    /// the asked shape; optional tensors are absent): for benchmarks of a config's shapes.
    pub fn random(init: crate::bench::random::RandomWeights, dtype: DType) -> Self {
        WeightStore {
            files: Vec::new(),
            entries: BTreeMap::new(),
            used: Mutex::new(BTreeSet::new()),
            params: Mutex::new(HashMap::new()),
            dtype,
            random: Some(init),
        }
    }

    /// Replaces base tensors with those of `path` (a PEFT adapter's `modules_to_save` weights):
    /// each must name a tensor the base has.
    pub fn add_overrides(&mut self, path: &Path, rules: &KeyRules) -> Result<()> {
        let file = TensorFile::open(path)?;
        let index = self.files.len();
        let mut any = false;
        for name in file.names() {
            if rules.skips(&name) {
                continue;
            }
            let canonical = rules.canonical(&name);
            if !self.entries.contains_key(&canonical) {
                return Err(Error::tensor(
                    path,
                    &name,
                    "replaces a weight the base model does not have",
                ));
            }
            let entry = self.entries.get_mut(&canonical).expect("checked above");
            entry.file = index;
            entry.key = name;
            any = true;
        }
        if any {
            self.files.push(file);
        }
        Ok(())
    }

    pub fn root(&self) -> Vars<'_> {
        Vars {
            store: self,
            prefix: String::new(),
        }
    }

    /// Every parameter built from this store, by id.
    pub fn param_infos(&self) -> HashMap<ParamId, ParamInfo> {
        self.params.lock().expect("weight store lock").clone()
    }

    /// The name a canonical tensor has in its file.
    pub fn original_name(&self, canonical: &str) -> Option<&str> {
        self.entries.get(canonical).map(|e| e.original.as_str())
    }

    /// Whether any tensor name starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.entries
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    fn where_is(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path().to_path_buf(),
            _ => self
                .files
                .first()
                .and_then(|f| f.path().parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// Fails if the files hold tensors no module asked for: a checkpoint of another variant, or
    /// a config that does not match its weights.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.lock().expect("weight store lock");
        let unused: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|(k, _)| !used.contains(*k))
            .map(|(_, e)| e)
            .collect();
        if let Some(first) = unused.first() {
            let more = if unused.len() > 1 {
                format!(" (and {} more unexpected tensors)", unused.len() - 1)
            } else {
                String::new()
            };
            return Err(Error::tensor(
                self.files[first.file].path(),
                &first.original,
                format!("is not used by the model built from config.json{more}"),
            ));
        }
        Ok(())
    }

    fn host(&self, name: &str, expected: &[usize]) -> Result<HostTensor<f32>> {
        let entry = self.entries.get(name).ok_or_else(|| {
            Error::tensor(
                self.where_is(),
                name,
                "is missing (config.json implies it; is this the right checkpoint?)",
            )
        })?;
        let file = &self.files[entry.file];
        let t = file.f32(&entry.key)?;
        if t.shape != expected {
            return Err(Error::tensor(
                file.path(),
                &entry.key,
                format!(
                    "has shape {:?} but config.json implies {:?}",
                    t.shape, expected
                ),
            ));
        }
        self.used
            .lock()
            .expect("weight store lock")
            .insert(name.to_string());
        Ok(t)
    }
}

/// A position in the weight tree (`language_model.model.layers.3`).
#[derive(Clone)]
pub struct Vars<'s> {
    store: &'s WeightStore,
    prefix: String,
}

impl<'s> Vars<'s> {
    /// The child `name`.
    pub fn pp(&self, name: impl Display) -> Vars<'s> {
        Vars {
            store: self.store,
            prefix: self.name(name),
        }
    }

    /// The full name of the leaf `name` under this position.
    pub fn name(&self, leaf: impl Display) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn contains(&self, leaf: &str) -> bool {
        self.store.entries.contains_key(&self.name(leaf))
    }

    /// Whether anything lives under this position.
    pub fn exists(&self) -> bool {
        self.store.has_prefix(&format!("{}.", self.prefix))
    }

    /// Accepts every tensor under this position without loading it: for checkpoint parts the
    /// model deliberately does not use (e.g. SigLIP's pooling head inside a VLM).
    pub fn mark_unused_ok(&self) {
        let prefix = format!("{}.", self.prefix);
        let mut used = self.store.used.lock().expect("weight store lock");
        for k in self.store.entries.keys().filter(|k| k.starts_with(&prefix)) {
            used.insert(k.clone());
        }
    }

    pub fn store(&self) -> &'s WeightStore {
        self.store
    }

    /// The tensor `leaf`, checked to have `shape`, on `device` in the store's dtype.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        leaf: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        if let Some(random) = &self.store.random {
            return Ok(self.cast(random.tensor(&self.name(leaf), shape, device)));
        }
        let t = self.store.host(&self.name(leaf), &shape)?;
        Ok(self.to_device(TensorData::new(t.data, shape), device))
    }

    /// A PyTorch `nn.Linear` weight (`[out, in]` in the file), returned as `[in, out]` so that
    /// the forward is a plain `x.matmul(w)`.
    pub fn linear_weight<B: Backend>(
        &self,
        leaf: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        if let Some(random) = &self.store.random {
            return Ok(self.cast(random.tensor(&self.name(leaf), [d_in, d_out], device)));
        }
        let t = self.store.host(&self.name(leaf), &[d_out, d_in])?;
        let mut data = vec![0f32; t.data.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                data[i * d_out + o] = t.data[o * d_in + i];
            }
        }
        Ok(self.to_device(TensorData::new(data, [d_in, d_out]), device))
    }

    /// [`Vars::tensor`] wrapped as a parameter that trains or not.
    pub fn param<B: Backend, const D: usize>(
        &self,
        leaf: &str,
        shape: [usize; D],
        device: &B::Device,
        trainable: bool,
    ) -> Result<Param<Tensor<B, D>>> {
        let t = self.tensor(leaf, shape, device)?;
        Ok(self.wrap(leaf, t, trainable))
    }

    /// Wraps a tensor loaded from `leaf` (possibly reshaped) as a parameter whose id is derived
    /// from its checkpoint name, so the same weight has the same id in every run: optimizer
    /// state and checkpoints stay valid across a resume.
    pub fn wrap<B: Backend, const D: usize>(
        &self,
        leaf: &str,
        tensor: Tensor<B, D>,
        trainable: bool,
    ) -> Param<Tensor<B, D>> {
        self.register(leaf, tensor, trainable, false)
    }

    /// [`Vars::wrap`] for a weight held transposed (`[in, out]`, from a file's `[out, ...in]`).
    pub fn wrap_transposed<B: Backend>(
        &self,
        leaf: &str,
        tensor: Tensor<B, 2>,
        trainable: bool,
    ) -> Param<Tensor<B, 2>> {
        self.register(leaf, tensor, trainable, true)
    }

    fn register<B: Backend, const D: usize>(
        &self,
        leaf: &str,
        tensor: Tensor<B, D>,
        trainable: bool,
        transposed: bool,
    ) -> Param<Tensor<B, D>> {
        let name = self.name(leaf);
        let id = param_id(&name);
        let entry = self.store.entries.get(&name);
        let info = ParamInfo {
            original: entry.map_or_else(|| name.clone(), |e| e.original.clone()),
            shape: entry
                .and_then(|e| self.store.files[e.file].shape(&e.key).ok())
                .unwrap_or_else(|| tensor.dims().to_vec()),
            name,
            transposed,
        };
        self.store
            .params
            .lock()
            .expect("weight store lock")
            .insert(id, info);
        // Mixed precision: what trains keeps f32 master weights; frozen weights stay bf16.
        let tensor = if trainable {
            tensor.cast(burn::tensor::DType::F32)
        } else {
            tensor
        };
        Param::initialized(id, tensor).set_require_grad(trainable)
    }

    fn to_device<B: Backend, const D: usize>(
        &self,
        data: TensorData,
        device: &B::Device,
    ) -> Tensor<B, D> {
        self.cast(Tensor::<B, D>::from_data(data, device))
    }

    /// A tensor in the store's dtype.
    fn cast<B: Backend, const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        match self.store.dtype {
            DType::F32 => t,
            DType::Bf16 => t.cast(burn::tensor::DType::BF16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::tensor_file::write_f32;

    fn store(rules: &KeyRules) -> (tempfile::TempDir, WeightStore) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model.safetensors");
        write_f32(
            &p,
            &[
                (
                    "model.language_model.layers.0.w".into(),
                    HostTensor {
                        shape: vec![2, 3],
                        data: vec![1., 2., 3., 4., 5., 6.],
                    },
                ),
                (
                    "model.rotary_emb.inv_freq".into(),
                    HostTensor {
                        shape: vec![1],
                        data: vec![0.],
                    },
                ),
                (
                    "lm_head.weight".into(),
                    HostTensor {
                        shape: vec![1],
                        data: vec![7.],
                    },
                ),
            ],
        )
        .unwrap();
        let s = WeightStore::from_paths(&[p], rules, DType::F32).unwrap();
        (d, s)
    }

    #[test]
    fn renames_transpose_and_strictness() {
        let rules = KeyRules::default()
            .rename("model.language_model.", "language_model.model.")
            .rename("lm_head.", "language_model.lm_head.")
            .ignore_suffix("rotary_emb.inv_freq");
        let (_d, s) = store(&rules);
        let dev = Default::default();
        let v = s.root().pp("language_model");
        let w = v
            .pp("model.layers")
            .pp(0)
            .linear_weight::<Cpu>("w", 3, 2, &dev)
            .unwrap();
        assert_eq!(
            w.into_data().to_vec::<f32>().unwrap(),
            vec![1., 4., 2., 5., 3., 6.]
        );
        assert_eq!(
            s.original_name("language_model.model.layers.0.w"),
            Some("model.language_model.layers.0.w")
        );
        let err = s.finish().unwrap_err().to_string();
        assert!(
            err.contains("`lm_head.weight`") && err.contains("not used"),
            "{err}"
        );
        v.tensor::<Cpu, 1>("lm_head.weight", [1], &dev).unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn missing_and_misshapen_tensors_are_named() {
        let (_d, s) = store(&KeyRules::default());
        let dev = Default::default();
        let err = s
            .root()
            .tensor::<Cpu, 1>("nope", [1], &dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`") && err.contains("missing"), "{err}");
        let err = s
            .root()
            .tensor::<Cpu, 2>("model.language_model.layers.0.w", [3, 2], &dev)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("[2, 3]") && err.contains("[3, 2]"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod bf16_tests {
    use super::*;
    use crate::backend::Cpu;
    use safetensors::tensor::{Dtype, TensorView};

    /// A bf16 checkpoint (how most hub weights ship) loads as its exact values, in f32 or kept
    /// in bf16.
    #[test]
    fn bf16_weights_load_exactly() {
        let values = [1.0f32, -0.5, 3.140625, 1e-3];
        let bits: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::BF16, vec![2, 2], &bits).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model.safetensors");
        std::fs::write(&p, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
        let expect: Vec<f32> = values
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect();
        for dtype in [DType::F32, DType::Bf16] {
            let s = WeightStore::from_paths(std::slice::from_ref(&p), &KeyRules::default(), dtype)
                .unwrap();
            let t = s
                .root()
                .tensor::<Cpu, 2>("w", [2, 2], &Default::default())
                .unwrap();
            let want = if dtype == DType::Bf16 {
                burn::tensor::DType::BF16
            } else {
                burn::tensor::DType::F32
            };
            assert_eq!(t.dtype(), want);
            let got = t
                .cast(burn::tensor::DType::F32)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(got, expect);
        }
    }
}
