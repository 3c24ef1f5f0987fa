//! Mapping of `crate::Error` onto Python exceptions, and `detach`, the one
//! helper through which long work leaves the GIL (polars' `enter_polars`).
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

pyo3::create_exception!(_loglm, LoglmError, pyo3::exceptions::PyException,
    "Base class of every error raised by loglm.");
pyo3::create_exception!(_loglm, ModelLoadError, LoglmError,
    "A model file is missing pieces, truncated or corrupt.");
pyo3::create_exception!(_loglm, UnsupportedModelError, ModelLoadError,
    "The model is well formed but uses an architecture or tensor type loglm cannot run.");
pyo3::create_exception!(_loglm, TokenizerError, LoglmError,
    "The tokenizer or chat template is missing or unusable.");
pyo3::create_exception!(_loglm, ContextLengthError, LoglmError,
    "A prompt (plus max_new_tokens) does not fit the model's context window.");
pyo3::create_exception!(_loglm, DeviceError, LoglmError,
    "The requested device is not available in this build or on this machine.");
pyo3::create_exception!(_loglm, InternalError, LoglmError,
    "A bug in loglm (including a caught Rust panic); please report it.");

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LoglmError", py.get_type::<LoglmError>())?;
    m.add("ModelLoadError", py.get_type::<ModelLoadError>())?;
    m.add("UnsupportedModelError", py.get_type::<UnsupportedModelError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("ContextLengthError", py.get_type::<ContextLengthError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}

pub(crate) fn to_py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::NotFound(_) => PyFileNotFoundError::new_err(msg),
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::ModelFormat(_) => ModelLoadError::new_err(msg),
        Error::Unsupported(_) => UnsupportedModelError::new_err(msg),
        Error::Tokenizer(_) => TokenizerError::new_err(msg),
        Error::ContextLength { .. } => ContextLengthError::new_err(msg),
        Error::Device(_) => DeviceError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
        Error::Json(_) => PyValueError::new_err(msg),
        Error::Candle(_) => LoglmError::new_err(msg),
        Error::Internal(_) => InternalError::new_err(msg),
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        to_py_err(e)
    }
}

/// Run `f` without the GIL, turning a Rust panic into `loglm.InternalError`
/// and a `crate::Error` into its Python exception. Inputs must already be
/// owned Rust data (copy them out of Python objects first).
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> crate::Result<T> + Send,
{
    let out = py.allow_threads(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(r) => r.map_err(to_py_err),
        Err(payload) => Err(InternalError::new_err(format!(
            "Rust panic inside loglm (this is a bug, please report it): {}",
            panic_message(&payload)
        ))),
    }
}

pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
