//! Reading a JSON list or JSON Lines file into raw values, keeping each sample's position so that a
//! syntax error names the sample it is in.

use lmms_core::{Error, Result};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::RefCell;
use std::fmt;
use std::path::Path;

/// The values of a data file with their 0-based sample positions (for JSON Lines, the line's
/// position), and the syntax errors met (a JSON list stops at its first one).
pub(super) struct Raw {
    pub values: Vec<(usize, Value)>,
    pub errors: Vec<(usize, Error)>,
}

pub(super) fn read_samples(path: &Path, stop_at_first: bool) -> Result<Raw> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::config(path, format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let raw = match text.trim_start().chars().next() {
        Some('[') => read_list(path, text),
        Some('{') => read_lines(path, text, stop_at_first),
        Some(_) => {
            return Err(Error::config(
                path,
                "expected a JSON list of samples (`[{...}, ...]`) or JSON Lines (one object per \
                 line)",
            ));
        }
        None => return Err(Error::config(path, "empty file: no samples")),
    };
    if raw.values.is_empty() && raw.errors.is_empty() {
        return Err(Error::config(path, "no samples"));
    }
    Ok(raw)
}

/// serde_json's message without its " at line L column C" suffix.
fn message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    s.strip_suffix(&suffix).unwrap_or(&s).to_string()
}

fn read_list(path: &Path, text: &str) -> Raw {
    let values = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_str(text);
    let result = (&mut de)
        .deserialize_seq(ListVisitor { values: &values })
        .and_then(|()| de.end());
    let values: Vec<Value> = values.into_inner();
    let n = values.len();
    let mut raw = Raw {
        values: values.into_iter().enumerate().collect(),
        errors: vec![],
    };
    if let Err(e) = result {
        raw.errors.push((
            n,
            Error::sample(
                path,
                n,
                format!(
                    "invalid JSON at line {}, column {}: {} (samples after this one were not read)",
                    e.line(),
                    e.column(),
                    message(&e)
                ),
            ),
        ));
    }
    raw
}

struct ListVisitor<'a> {
    values: &'a RefCell<Vec<Value>>,
}

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of samples")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            self.values.borrow_mut().push(v);
        }
        Ok(())
    }
}

fn read_lines(path: &Path, text: &str, stop_at_first: bool) -> Raw {
    let mut raw = Raw {
        values: vec![],
        errors: vec![],
    };
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => raw.values.push((index, v)),
            Err(e) => {
                raw.errors.push((
                    index,
                    Error::sample(
                        path,
                        index,
                        format!(
                            "invalid JSON on line {}, column {}: {}",
                            index + 1,
                            e.column(),
                            message(&e)
                        ),
                    ),
                ));
                if stop_at_first {
                    break;
                }
            }
        }
    }
    raw
}
