//! What can go wrong loading or running a model.

use std::path::PathBuf;

/// A model failure.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model needs is in none of the places looked at.
    #[error(
        "model `{model}`: `{file}` not found (looked in {looked}); run scripts/fetch-models.sh"
    )]
    NotFound {
        /// Model id.
        model: String,
        /// File name.
        file: String,
        /// Where we looked.
        looked: String,
    },
    /// A file does not match the manifest's checksum.
    #[error("model file `{}` has sha256 {actual}, the manifest expects {expected}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Manifest value.
        expected: String,
        /// Computed value.
        actual: String,
    },
    /// The manifest does not know this model.
    #[error("unknown local model `{0}`")]
    UnknownModel(String),
    /// Reading a file failed.
    #[error("reading `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The weights or config did not load.
    #[error("loading model: {0}")]
    Load(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A forward pass failed.
    #[error("inference: {0}")]
    Inference(String),
    /// The input cannot be processed (empty, too long, ...).
    #[error("{0}")]
    Input(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Inference(e.to_string())
    }
}
