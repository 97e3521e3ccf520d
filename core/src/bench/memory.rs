//! Peak memory of a benchmark run.
//!
//! - CPU: the process's peak resident set (`VmHWM` in `/proc/self/status`), reset after the
//!   model is built by writing `5` to `/proc/self/clear_refs` (Linux 4.0+), so it covers the
//!   training steps (model weights included, since they stay resident). Where the reset is
//!   refused the figure is the whole process's peak, and [`MemoryProbe::kind`] says so.
//! - CUDA: cubecl's memory pools (`ComputeClient::memory_usage`): the largest `bytes_reserved`
//!   seen after any step. Pools keep what they reserved, so this is the high-water mark of the
//!   pools, an upper bound of the tensors' own peak (`bytes_in_use`), and what the card had to
//!   hold for the run; the CUDA context itself (~0.5 GiB) is not in it.

use std::cell::Cell;

/// Reads a backend's memory figure around the timed steps.
pub trait MemoryProbe {
    /// Called once the model is built, before the first step.
    fn reset(&self) {}
    /// Called after every step.
    fn sample(&self) {}
    /// The peak in bytes, if known.
    fn peak(&self) -> Option<u64>;
    /// What the figure is.
    fn kind(&self) -> String;
}

/// `VmHWM` of this process, bytes.
pub fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// `VmRSS` of this process, bytes.
pub fn current_rss() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident memory on the CPU backend.
#[derive(Debug, Default)]
pub struct CpuMemory {
    reset_ok: Cell<bool>,
}

impl MemoryProbe for CpuMemory {
    fn reset(&self) {
        self.reset_ok
            .set(std::fs::write("/proc/self/clear_refs", "5").is_ok());
    }

    fn peak(&self) -> Option<u64> {
        peak_rss()
    }

    fn kind(&self) -> String {
        if self.reset_ok.get() {
            "peak RSS during the steps (VmHWM, reset after the build)".into()
        } else {
            "peak RSS of the process (VmHWM)".into()
        }
    }
}

/// Peak of cubecl's memory pools on a CUDA device.
#[cfg(feature = "cuda")]
pub struct CudaMemory {
    pub device: burn::backend::cuda::CudaDevice,
    peak: Cell<u64>,
}

#[cfg(feature = "cuda")]
impl CudaMemory {
    pub fn new(device: burn::backend::cuda::CudaDevice) -> Self {
        CudaMemory {
            device,
            peak: Cell::new(0),
        }
    }

    fn reserved(&self) -> Option<u64> {
        use cubecl::Runtime;
        let client = cubecl::cuda::CudaRuntime::client(&self.device);
        client.memory_usage().ok().map(|u| u.bytes_reserved)
    }
}

#[cfg(feature = "cuda")]
impl MemoryProbe for CudaMemory {
    fn reset(&self) {
        self.sample();
    }

    fn sample(&self) {
        if let Some(r) = self.reserved() {
            self.peak.set(self.peak.get().max(r));
        }
    }

    fn peak(&self) -> Option<u64> {
        Some(self.peak.get()).filter(|p| *p > 0)
    }

    fn kind(&self) -> String {
        "peak bytes reserved by cubecl's memory pools (sampled after each step)".into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss() {
        // The current size first: other test threads may grow the process in between.
        let now = super::current_rss().unwrap();
        let peak = super::peak_rss().unwrap();
        assert!(peak >= now && now > 0, "{peak} {now}");
    }
}
