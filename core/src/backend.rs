//! The burn backends `lmms` runs on, and `--device` parsing. CPU needs nothing installed and is
//! the default; CUDA is compiled in with the `cuda` cargo feature.

use std::fmt;
use std::str::FromStr;

/// The CPU backend (burn-flex: SIMD, multi-threaded GEMM, fused attention), chosen by
/// measurement (docs/BENCHMARKS.md). The `cpu-ndarray` / `cpu-ndarray-openblas` cargo features
/// swap in burn's ndarray backend for that comparison only.
#[cfg(not(feature = "cpu-ndarray"))]
pub type Cpu = burn::backend::Flex;
/// The CPU backend: burn's ndarray (the `cpu-ndarray` feature, for backend comparisons).
#[cfg(feature = "cpu-ndarray")]
pub type Cpu = burn::backend::NdArray;

/// What [`Cpu`] is, for reports.
pub const CPU_BACKEND: &str = if cfg!(feature = "cpu-ndarray-openblas") {
    "burn-ndarray + OpenBLAS"
} else if cfg!(feature = "cpu-ndarray") {
    "burn-ndarray (matrixmultiply)"
} else {
    "burn-flex"
};
/// The CPU backend with autodiff, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaTrain = burn::backend::Autodiff<Cuda>;
/// [`CudaTrain`] where the `cuda` feature is on, else [`CpuTrain`]: lets a where clause (e.g.
/// `F::Model<CudaTrainOrCpu>: AutodiffModule<CudaTrainOrCpu>`) name the CUDA bound without cfg.
#[cfg(feature = "cuda")]
pub type CudaTrainOrCpu = CudaTrain;
/// [`CudaTrain`] where the `cuda` feature is on, else [`CpuTrain`].
#[cfg(not(feature = "cuda"))]
pub type CudaTrainOrCpu = CpuTrain;
/// A device as given to `--device`: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Whether this binary can run on the device.
    pub fn is_compiled_in(self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| format!("bad CUDA device index in `{s}`")),
                None => Err(format!("unknown device `{s}`: use cpu, cuda or cuda:N")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!(
            "tpu"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("cpu, cuda or cuda:N")
        );
    }
}
