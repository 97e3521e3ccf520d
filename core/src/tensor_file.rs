//! Reading one safetensors file by memory map, with dtype conversion to the host types the
//! rest of `lmms` uses (f32 for floats, i64 for integers). Used for model weights, PEFT adapters
//! and the parity fixtures' `inputs` / `expected` files.

use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct TensorFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
    /// Only tensors whose names start with this are seen, under the rest of their name.
    prefix: String,
}

/// A tensor copied to the host as f32 or i64, with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl TensorFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the file is opened read-only; like every safetensors reader we assume nobody
        // truncates it while we read.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (header_len, meta) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::config(&path, format!("not a valid safetensors file: {e}")))?;
        Ok(TensorFile {
            path,
            mmap,
            header_len,
            meta,
            prefix: String::new(),
        })
    }

    /// The tensors named `<prefix><name>` only, as `<name>` (a fixture's `generate.safetensors`
    /// holds a prompt's model inputs as `prompt_<name>`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .meta
            .tensors()
            .into_keys()
            .filter_map(|n| n.strip_prefix(&self.prefix).map(str::to_string))
            .collect();
        names.sort();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.meta.info(&format!("{}{name}", self.prefix)).is_some()
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.info(name)?.shape.clone())
    }

    fn info(&self, name: &str) -> Result<&safetensors::tensor::TensorInfo> {
        let full = format!("{}{name}", self.prefix);
        self.meta
            .info(&full)
            .ok_or_else(|| Error::tensor(&self.path, full, "not in this file"))
    }

    fn bytes(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let info = self.info(name)?;
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        Ok((info.dtype, info.shape.clone(), &self.mmap[start..end]))
    }

    /// The tensor as f32 (from f32, bf16, f16 or f64).
    pub fn f32(&self, name: &str) -> Result<HostTensor<f32>> {
        let (dtype, shape, bytes) = self.bytes(name)?;
        let data = match dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(Error::tensor(
                    &self.path,
                    name,
                    format!("dtype {other:?} is not a float type"),
                ));
            }
        };
        Ok(HostTensor { shape, data })
    }

    /// The tensor as i64 (from any integer or bool dtype).
    pub fn i64(&self, name: &str) -> Result<HostTensor<i64>> {
        let (dtype, shape, bytes) = self.bytes(name)?;
        let data = match dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
            Dtype::U8 | Dtype::BOOL => bytes.iter().map(|&b| b as i64).collect(),
            Dtype::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
            other => {
                return Err(Error::tensor(
                    &self.path,
                    name,
                    format!("dtype {other:?} is not an integer type"),
                ));
            }
        };
        Ok(HostTensor { shape, data })
    }
}

/// A host tensor of either element type, for files that mix ids and pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyTensor {
    F32(HostTensor<f32>),
    I64(HostTensor<i64>),
}

/// Writes f32 and i64 tensors to a safetensors file atomically.
pub fn write_any(path: &Path, tensors: &[(String, AnyTensor)]) -> Result<()> {
    let raw = tensors
        .iter()
        .map(|(name, t)| match t {
            AnyTensor::F32(t) => (
                name,
                Dtype::F32,
                &t.shape,
                le_bytes(&t.data, |v| v.to_le_bytes()),
            ),
            AnyTensor::I64(t) => (
                name,
                Dtype::I64,
                &t.shape,
                le_bytes(&t.data, |v| v.to_le_bytes()),
            ),
        })
        .collect();
    write_raw(path, raw)
}

/// Writes f32 tensors to a safetensors file atomically (temp file in the same folder, then
/// rename), so an interrupted write never leaves a half-written file behind.
pub fn write_f32(path: &Path, tensors: &[(String, HostTensor<f32>)]) -> Result<()> {
    let raw = tensors
        .iter()
        .map(|(name, t)| {
            (
                name,
                Dtype::F32,
                &t.shape,
                le_bytes(&t.data, |v| v.to_le_bytes()),
            )
        })
        .collect();
    write_raw(path, raw)
}

fn le_bytes<T: Copy, const N: usize>(data: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    data.iter().flat_map(|v| f(*v)).collect()
}

fn write_raw(path: &Path, tensors: Vec<(&String, Dtype, &Vec<usize>, Vec<u8>)>) -> Result<()> {
    use safetensors::tensor::TensorView;
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, (*shape).clone(), bytes)
                .map(|v| ((*name).clone(), v))
                .map_err(|e| Error::tensor(path, name.as_str(), e.to_string()))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, None)
        .map_err(|e| Error::config(path, format!("cannot serialize: {e}")))?;
    crate::fs::write_atomic(path, &data)
}
