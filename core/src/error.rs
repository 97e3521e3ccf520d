//! The crate-wide error type. Every variant names what it is about (a file, a tensor, a sample)
//! so that a user can find and fix the input without reading a backtrace.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A model directory or configuration file is unusable.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    /// A tensor in a weight file is missing, unexpected, or of the wrong shape or dtype.
    #[error("{}: tensor `{tensor}`: {reason}", file.display())]
    Tensor {
        file: PathBuf,
        tensor: String,
        reason: String,
    },

    /// A dataset sample is broken; `index` is its 0-based position in the file.
    #[error("{}: sample {index}: {reason}", file.display())]
    Sample {
        file: PathBuf,
        index: usize,
        reason: String,
    },

    #[error("unknown model `{query}`{hint}")]
    UnknownModel { query: String, hint: String },

    /// The model resolves to a family whose implementation has not landed.
    #[error(
        "model `{model}` belongs to family `{family}`, which is not implemented yet ({note}); \
         `lmms supported-models` lists what works today"
    )]
    NotImplemented {
        model: String,
        family: String,
        note: String,
    },

    /// Two registered families claim the same model id.
    #[error("model id `{id}` is registered twice: by family `{first}` and by family `{second}`")]
    DuplicateModelId {
        id: String,
        first: String,
        second: String,
    },

    /// Two crates register a family under the same id.
    #[error("family id `{id}` is registered twice: by crate `{first}` and by crate `{second}`")]
    DuplicateFamilyId {
        id: String,
        first: String,
        second: String,
    },

    /// Tensors of a batch that do not fit together.
    #[error("invalid batch: {0}")]
    Batch(String),

    /// Something this build or this family cannot do.
    #[error("{0}")]
    Unsupported(String),

    /// A training strategy that cannot work (e.g. QLoRA on a vision tower).
    #[error("invalid training strategy: {0}")]
    Strategy(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn sample(file: impl Into<PathBuf>, index: usize, reason: impl Into<String>) -> Self {
        Error::Sample {
            file: file.into(),
            index,
            reason: reason.into(),
        }
    }

    pub fn tensor(
        file: impl Into<PathBuf>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            file: file.into(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    /// The message with its causes on one line (an I/O error's reason, not only "cannot read
    /// X").
    pub fn with_causes(&self) -> String {
        let mut s = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            s.push_str(": ");
            s.push_str(&cause.to_string());
            source = cause.source();
        }
        s
    }
}
