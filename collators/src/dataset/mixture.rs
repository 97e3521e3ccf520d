//! InternLM-XComposer2's `data.txt`: one line per data file, `<json path> <samples in thousands>`
//! (`data/a.json 0.02` = 20 samples per epoch). Blank lines and `#` comments are skipped.

use lmms_core::{Error, Result};
use std::path::{Path, PathBuf};

/// One line of a mixture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixtureEntry {
    /// The data file: relative paths are resolved against the mixture file's folder first,
    /// then the working directory.
    pub path: PathBuf,
    /// Samples per epoch (`None` for a plain data file: all of them, once).
    pub per_epoch: Option<usize>,
    /// 1-based line in the mixture file (0 for a plain data file).
    pub line: usize,
}

/// Parses a `data.txt` mixture file.
pub fn parse_mixture(path: &Path) -> Result<Vec<MixtureEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut entries = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let bad = |reason: String| Error::config(path, format!("line {line}: {reason}"));
        let Some((file, amount)) = content.rsplit_once(char::is_whitespace) else {
            return Err(bad(format!(
                "expected `<json path> <samples in thousands>`, found `{content}`"
            )));
        };
        let file = file.trim();
        let thousands: f64 = amount.parse().map_err(|_| {
            bad(format!(
                "`{amount}` is not a number (samples per epoch, in thousands: 0.02 = 20)"
            ))
        })?;
        if !thousands.is_finite() || thousands < 0.0 {
            return Err(bad(format!(
                "`{amount}`: the sample count must be a non-negative number"
            )));
        }
        let exact = thousands * 1000.0;
        let count = exact.round();
        if (exact - count).abs() > 1e-6 * exact.max(1.0) {
            return Err(bad(format!(
                "`{amount}` thousand is {exact} samples: not a whole number"
            )));
        }
        let rel = Path::new(file);
        let resolved = if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            let beside = base.join(rel);
            if beside.exists() || !rel.exists() {
                beside
            } else {
                rel.to_path_buf()
            }
        };
        entries.push(MixtureEntry {
            path: resolved,
            per_epoch: Some(count as usize),
            line,
        });
    }
    if entries.is_empty() {
        return Err(Error::config(path, "no data files listed"));
    }
    Ok(entries)
}
