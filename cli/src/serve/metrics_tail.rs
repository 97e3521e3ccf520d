//! Follows a run's `metrics.jsonl` while `lmms train` appends to it: reads what was added
//! since the last look, complete lines only. The trainer replaces the file when it starts (a
//! fresh file, or the lines kept up to a resumed checkpoint), so a file that is still the one
//! from before the run began is ignored, and a replaced file is read again from the start.

use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// One line of `metrics.jsonl` (train or eval).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub step: u64,
    pub split: String,
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
}

impl Metric {
    pub fn parse(line: &str) -> Option<Metric> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Metric {
            step: v["step"].as_u64()?,
            split: v["split"].as_str().unwrap_or("train").to_string(),
            // NaN/inf losses are written as null by serde_json.
            loss: v["loss"].as_f64().unwrap_or(f64::NAN),
            lr: v["lr"].as_f64(),
            grad_norm: v["grad_norm"].as_f64(),
            epoch: v["epoch"].as_f64(),
            tokens_per_second: v["tokens_per_second"].as_f64(),
        })
    }
}

/// What a look at the file found.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    /// The file was replaced: forget what was read before.
    pub reset: bool,
    pub metrics: Vec<Metric>,
}

pub struct MetricsTail {
    path: PathBuf,
    /// Identity of the file present before the run started (not this run's).
    stale: Option<(u64, u64)>,
    current: Option<(u64, u64)>,
    offset: u64,
    partial: Vec<u8>,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

impl MetricsTail {
    /// Call before the run starts, so an older file is known as such.
    pub fn new(path: PathBuf) -> Self {
        let stale = std::fs::metadata(&path).ok().map(|m| identity(&m));
        MetricsTail {
            path,
            stale,
            current: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    pub fn poll(&mut self) -> Update {
        let mut update = Update::default();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return update;
        };
        let Ok(meta) = file.metadata() else {
            return update;
        };
        let id = identity(&meta);
        if Some(id) == self.stale {
            return update;
        }
        // The run's own file has appeared: from now on a replacement is the run's too, even
        // if it reuses the old file's inode number.
        self.stale = None;
        if self.current != Some(id) || meta.len() < self.offset {
            update.reset = self.current.is_some();
            self.current = Some(id);
            self.offset = 0;
            self.partial.clear();
        }
        if meta.len() == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return update;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return update;
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return update,
        };
        let lines: Vec<u8> = self.partial.drain(..complete).collect();
        update.metrics = String::from_utf8_lossy(&lines)
            .lines()
            .filter_map(Metric::parse)
            .collect();
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_complete_lines_and_follows_a_replaced_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"step\":9,\"split\":\"train\",\"loss\":9.0}\n").unwrap();
        let mut tail = MetricsTail::new(path.clone());
        // The old run's file is not this run's.
        assert_eq!(tail.poll(), Update::default());
        // The trainer replaces it (write to a temp file, rename).
        let tmp = d.path().join("tmp");
        std::fs::write(&tmp, "").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(
            f,
            "{{\"step\":1,\"split\":\"train\",\"loss\":2.5,\"lr\":0.1}}\n{{\"step\":2,"
        )
        .unwrap();
        let u = tail.poll();
        assert!(!u.reset);
        assert_eq!(u.metrics.len(), 1);
        assert_eq!((u.metrics[0].step, u.metrics[0].lr), (1, Some(0.1)));
        writeln!(f, "\"split\":\"train\",\"loss\":2.0}}").unwrap();
        writeln!(f, "{{\"step\":2,\"split\":\"eval\",\"loss\":2.2}}").unwrap();
        let u = tail.poll();
        assert_eq!(u.metrics.len(), 2);
        assert_eq!(u.metrics[1].split, "eval");
        assert_eq!(tail.poll(), Update::default());
        // A resumed run rewrites the file: read again from the start.
        let tmp = d.path().join("tmp2");
        std::fs::write(&tmp, "{\"step\":1,\"split\":\"train\",\"loss\":2.5}\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let u = tail.poll();
        assert!(u.reset);
        assert_eq!(u.metrics.len(), 1);
    }
}
