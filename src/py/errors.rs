//! Mapping of `crate::Error` onto loglm's Python exceptions (defined in
//! `loglm/errors.py`, so that they can also derive from `ValueError` /
//! `FileNotFoundError`), and `detach`, the one helper through which long work
//! leaves the GIL (polars' `enter_polars`).
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

use crate::error::Error;

static ERRORS: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

/// Build an instance of `loglm.errors.<class_name>` carrying `msg`.
pub(crate) fn loglm_err(class_name: &str, msg: String) -> PyErr {
    Python::with_gil(|py| {
        let module = ERRORS.get_or_try_init(py, || py.import("loglm.errors").map(|m| m.unbind()));
        let cls = module.and_then(|m| m.bind(py).getattr(class_name));
        match cls.and_then(|c| c.downcast_into::<PyType>().map_err(PyErr::from)) {
            Ok(cls) => PyErr::from_type(cls, msg),
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

pub(crate) fn to_py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    let class = match e {
        Error::NotFound(_) => "ModelNotFoundError",
        Error::Io { .. } => return PyOSError::new_err(msg),
        Error::InvalidArgument(_) | Error::Json(_) => "InvalidInputError",
        Error::ModelFormat(_) => "ModelLoadError",
        Error::Unsupported(_) => "UnsupportedModelError",
        Error::Adapter(_) => "AdapterError",
        Error::AdapterNotFound(_) => "AdapterNotFoundError",
        Error::Tokenizer(_) => "TokenizerError",
        Error::ContextLength { .. } => "ContextLengthError",
        Error::Device(_) => "DeviceError",
        Error::Interrupted => return PyKeyboardInterrupt::new_err(msg),
        Error::Candle(_) => "LoglmError",
        Error::Internal(_) => "InternalError",
    };
    loglm_err(class, msg)
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
        Err(payload) => Err(panic_err(&payload)),
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

pub(crate) fn panic_err(payload: &Box<dyn std::any::Any + Send>) -> PyErr {
    panic_msg_err(&panic_message(payload))
}

/// The `InternalError` for a caught panic with message `msg`.
pub(crate) fn panic_msg_err(msg: &str) -> PyErr {
    loglm_err("InternalError", format!("Rust panic inside loglm (this is a bug, please report it): {msg}"))
}
