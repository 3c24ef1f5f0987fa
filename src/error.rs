//! The crate's single error type. Every fallible function in the core returns
//! [`Result`]; `py/errors.rs` maps each variant onto the Python exception
//! hierarchy rooted at `loglm.LoglmError` (the polars `exceptions.rs` pattern).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the caller named does not exist (-> `FileNotFoundError`).
    #[error("file not found: {}", .0.display())]
    NotFound(PathBuf),
    /// Other I/O failures (-> `OSError`).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A bad argument from the caller (-> `ValueError`).
    #[error("{0}")]
    InvalidArgument(String),
    /// A model file that is truncated, corrupt or not what it claims to be
    /// (-> `loglm.ModelLoadError`).
    #[error("{0}")]
    ModelFormat(String),
    /// A well-formed model we cannot run: architecture, tensor type, ...
    /// (-> `loglm.UnsupportedModelError`).
    #[error("{0}")]
    Unsupported(String),
    /// A LoRA adapter that is malformed, does not fit the model or uses an
    /// option we cannot merge (-> `loglm.AdapterError`).
    #[error("{0}")]
    Adapter(String),
    /// A LoRA adapter folder or one of its files is missing
    /// (-> `loglm.AdapterNotFoundError`, also a `FileNotFoundError`).
    #[error("{0}")]
    AdapterNotFound(String),
    /// Tokenizer missing or unusable, chat template broken (-> `loglm.TokenizerError`).
    #[error("{0}")]
    Tokenizer(String),
    /// Prompt does not fit in the context window (-> `loglm.ContextLengthError`).
    #[error("prompt of {prompt_tokens} tokens does not fit the context of {context_length} tokens \
             (with max_new_tokens={max_new_tokens}); shorten the input, lower max_new_tokens or \
             load the model with a larger context_length")]
    ContextLength {
        prompt_tokens: usize,
        max_new_tokens: usize,
        context_length: usize,
    },
    /// The device asked for is not available in this build (-> `loglm.DeviceError`).
    #[error("{0}")]
    Device(String),
    /// The model produced NaN or infinite values (broken weights or
    /// configuration) (-> `loglm.NumericalError`).
    #[error("{0}")]
    NonFinite(String),
    /// Ctrl-C or another signal arrived during long work (-> `KeyboardInterrupt`).
    #[error("interrupted")]
    Interrupted,
    /// Anything raised by candle while running a model (-> `loglm.LoglmError`).
    #[error("tensor backend error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A bug: an invariant of ours did not hold (-> `loglm.LoglmError`).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
    /// Open-a-file helper: `NotFound` for a missing path, `Io` otherwise.
    pub fn from_open(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path.to_path_buf())
        } else {
            Error::io(format!("cannot read {}", path.display()), source)
        }
    }
}

/// `bail!(Variant, "fmt", args)` returns early with that variant.
#[macro_export]
macro_rules! bail {
    ($variant:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::$variant(format!($($arg)*)))
    };
}
