//! The workspace fence: every path the page sends (model, data, image folder, output dir,
//! adapter, chat images) is resolved against `--workspace` and must stay inside it. Paths are
//! canonicalized, so neither `..` nor a symlink can lead out; `..` is refused outright, and a
//! path that does not exist yet (an output dir) is checked through its deepest existing
//! ancestor.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A path the page sent that may not be used; the message says why (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PathError {}

/// The directory the server may read and write, canonical.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

/// What a checked path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

impl Workspace {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let root = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("--workspace {}: {e}", dir.display()))?;
        if !root.is_dir() {
            anyhow::bail!("--workspace {}: not a directory", dir.display());
        }
        Ok(Workspace { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An existing file or directory inside the workspace. `what` names the field in messages.
    pub fn existing(&self, what: &str, raw: &str, kind: Kind) -> Result<PathBuf, PathError> {
        let joined = self.join(what, raw)?;
        let real = joined.canonicalize().map_err(|_| {
            PathError(format!(
                "{what} `{raw}` does not exist in the workspace ({})",
                self.root.display()
            ))
        })?;
        self.inside(what, raw, &real)?;
        let ok = match kind {
            Kind::File => real.is_file(),
            Kind::Dir => real.is_dir(),
        };
        if !ok {
            let want = if kind == Kind::File {
                "a file"
            } else {
                "a directory"
            };
            return Err(PathError(format!("{what} `{raw}` is not {want}")));
        }
        Ok(real)
    }

    /// A path to be written (it may not exist yet), inside the workspace and not the
    /// workspace itself. Its deepest existing ancestor is canonicalized and checked, so a
    /// symlinked parent cannot lead out.
    pub fn writable(&self, what: &str, raw: &str) -> Result<PathBuf, PathError> {
        let joined = self.join(what, raw)?;
        let mut base = joined.as_path();
        let mut rest = Vec::new();
        let real_base = loop {
            if let Ok(real) = base.canonicalize() {
                break real;
            }
            match (base.parent(), base.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    base = parent;
                }
                _ => {
                    return Err(PathError(format!("{what} `{raw}`: no existing parent")));
                }
            }
        };
        self.inside(what, raw, &real_base)?;
        let mut real = real_base;
        for name in rest.iter().rev() {
            real.push(name);
        }
        if real == self.root {
            return Err(PathError(format!(
                "{what} `{raw}` is the workspace itself; name a directory inside it"
            )));
        }
        Ok(real)
    }

    /// `path` relative to the workspace, for the page (the path itself when outside).
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    fn join(&self, what: &str, raw: &str) -> Result<PathBuf, PathError> {
        let raw_trim = raw.trim();
        if raw_trim.is_empty() {
            return Err(PathError(format!("{what} is empty")));
        }
        if raw_trim.contains('\0') {
            return Err(PathError(format!("{what} contains a NUL byte")));
        }
        let path = Path::new(raw_trim);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(PathError(format!(
                "{what} `{raw}`: `..` is not allowed; paths stay inside the workspace"
            )));
        }
        Ok(self.root.join(path))
    }

    fn inside(&self, what: &str, raw: &str, real: &Path) -> Result<(), PathError> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(PathError(format!(
                "{what} `{raw}` is outside the workspace ({}); the server only reads and \
                 writes there",
                self.root.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn setup() -> (tempfile::TempDir, Workspace, tempfile::TempDir) {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(ws.path().join("models/tiny")).unwrap();
        fs::write(ws.path().join("data.json"), "[]").unwrap();
        fs::write(outside.path().join("secret.json"), "[]").unwrap();
        let w = Workspace::new(ws.path()).unwrap();
        (ws, w, outside)
    }

    #[test]
    fn relative_and_absolute_paths_inside_are_accepted() {
        let (ws, w, _o) = setup();
        let real = ws.path().canonicalize().unwrap();
        assert_eq!(
            w.existing("data", "data.json", Kind::File).unwrap(),
            real.join("data.json")
        );
        let abs = real.join("models/tiny");
        assert_eq!(
            w.existing("model", abs.to_str().unwrap(), Kind::Dir)
                .unwrap(),
            abs
        );
        assert_eq!(
            w.existing("model", "./models/tiny/", Kind::Dir).unwrap(),
            abs
        );
        assert_eq!(w.relative(&abs), "models/tiny");
    }

    #[test]
    fn parent_components_and_outside_paths_are_refused() {
        let (_ws, w, outside) = setup();
        let e = w.existing("data", "../x.json", Kind::File).unwrap_err();
        assert!(e.0.contains("`..` is not allowed"), "{e}");
        let e = w
            .existing("data", "models/../data.json", Kind::File)
            .unwrap_err();
        assert!(e.0.contains("`..`"), "{e}");
        let secret = outside.path().join("secret.json");
        let e = w
            .existing("data", secret.to_str().unwrap(), Kind::File)
            .unwrap_err();
        assert!(e.0.contains("outside the workspace"), "{e}");
        let e = w.writable("output dir", "/tmp/elsewhere/run").unwrap_err();
        assert!(e.0.contains("outside the workspace"), "{e}");
        let e = w.writable("output dir", "a/../../b").unwrap_err();
        assert!(e.0.contains("`..`"), "{e}");
    }

    #[test]
    fn missing_wrong_kind_and_empty_paths_are_named() {
        let (_ws, w, _o) = setup();
        let e = w.existing("data", "nope.json", Kind::File).unwrap_err();
        assert!(e.0.contains("does not exist"), "{e}");
        let e = w.existing("data", "models", Kind::File).unwrap_err();
        assert!(e.0.contains("not a file"), "{e}");
        let e = w.existing("model", "data.json", Kind::Dir).unwrap_err();
        assert!(e.0.contains("not a directory"), "{e}");
        assert!(w.existing("model", "  ", Kind::Dir).is_err());
        assert!(w.writable("output dir", "").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_cannot_lead_out() {
        let (ws, w, outside) = setup();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.json"), ws.path().join("s.json"))
            .unwrap();
        let e = w
            .existing("data", "link/secret.json", Kind::File)
            .unwrap_err();
        assert!(e.0.contains("outside the workspace"), "{e}");
        let e = w.existing("data", "s.json", Kind::File).unwrap_err();
        assert!(e.0.contains("outside the workspace"), "{e}");
        // A new directory under a symlinked parent is outside too.
        let e = w.writable("output dir", "link/new/run").unwrap_err();
        assert!(e.0.contains("outside the workspace"), "{e}");
        // A symlink that stays inside is fine.
        std::os::unix::fs::symlink(ws.path().join("models"), ws.path().join("m")).unwrap();
        assert!(w.existing("model", "m/tiny", Kind::Dir).is_ok());
    }

    #[test]
    fn new_output_dirs_resolve_inside_but_not_to_the_root() {
        let (ws, w, _o) = setup();
        let real = ws.path().canonicalize().unwrap();
        assert_eq!(
            w.writable("output dir", "output/run-1").unwrap(),
            real.join("output/run-1")
        );
        assert_eq!(
            w.writable("output dir", "models/tiny").unwrap(),
            real.join("models/tiny")
        );
        let e = w.writable("output dir", ".").unwrap_err();
        assert!(e.0.contains("workspace itself"), "{e}");
    }
}
