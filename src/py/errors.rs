//! Mapping of `crate::Error` onto loglm's Python exceptions (defined in
//! `loglm/errors.py`, so that they can also derive from `ValueError` /
//! `FileNotFoundError`), and `detach`, the one helper through which long work
//! leaves the GIL (polars' `enter_polars`).
//!
//! The classes are named by [`ErrClass`], not by strings: a misspelt class is a
//! compile error. They are looked up once, when `_loglm` is imported
//! ([`check_classes`]), and the import fails if `loglm.errors` lacks one or
//! one is not a `LoglmError`. Messages are `Display` texts only, never a
//! `Debug` rendering or a backtrace (whatever `RUST_BACKTRACE` says).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

use crate::error::Error;

/// The exception classes of `loglm.errors` the Rust core raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrClass {
    LoglmError,
    InvalidInputError,
    InvalidTypeError,
    ContextLengthError,
    ModelNotFoundError,
    ModelLoadError,
    UnsupportedModelError,
    AdapterError,
    AdapterNotFoundError,
    TokenizerError,
    DeviceError,
    NumericalError,
    InternalError,
}

impl ErrClass {
    pub(crate) const ALL: [ErrClass; 13] = [
        ErrClass::LoglmError,
        ErrClass::InvalidInputError,
        ErrClass::InvalidTypeError,
        ErrClass::ContextLengthError,
        ErrClass::ModelNotFoundError,
        ErrClass::ModelLoadError,
        ErrClass::UnsupportedModelError,
        ErrClass::AdapterError,
        ErrClass::AdapterNotFoundError,
        ErrClass::TokenizerError,
        ErrClass::DeviceError,
        ErrClass::NumericalError,
        ErrClass::InternalError,
    ];

    /// The class name in `loglm.errors`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrClass::LoglmError => "LoglmError",
            ErrClass::InvalidInputError => "InvalidInputError",
            ErrClass::InvalidTypeError => "InvalidTypeError",
            ErrClass::ContextLengthError => "ContextLengthError",
            ErrClass::ModelNotFoundError => "ModelNotFoundError",
            ErrClass::ModelLoadError => "ModelLoadError",
            ErrClass::UnsupportedModelError => "UnsupportedModelError",
            ErrClass::AdapterError => "AdapterError",
            ErrClass::AdapterNotFoundError => "AdapterNotFoundError",
            ErrClass::TokenizerError => "TokenizerError",
            ErrClass::DeviceError => "DeviceError",
            ErrClass::NumericalError => "NumericalError",
            ErrClass::InternalError => "InternalError",
        }
    }

    /// The class named `name` (for callers that still pass names).
    pub(crate) fn from_name(name: &str) -> Option<ErrClass> {
        ErrClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The classes, in [`ErrClass::ALL`] order, looked up once.
static CLASSES: GILOnceCell<Vec<Py<PyType>>> = GILOnceCell::new();

fn load_classes(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let module = py.import("loglm.errors")?;
    let base = module.getattr("LoglmError")?.downcast_into::<PyType>().map_err(PyErr::from)?;
    ErrClass::ALL
        .iter()
        .map(|c| {
            let cls = module
                .getattr(c.name())
                .map_err(|_| PyRuntimeError::new_err(format!("loglm.errors lacks the exception class {}", c.name())))?
                .downcast_into::<PyType>()
                .map_err(|_| PyRuntimeError::new_err(format!("loglm.errors.{} is not a class", c.name())))?;
            if !cls.is_subclass(&base)? {
                return Err(PyRuntimeError::new_err(format!("loglm.errors.{} is not a LoglmError", c.name())));
            }
            Ok(cls.unbind())
        })
        .collect()
}

/// Look every class up (called when `_loglm` is imported): a missing or
/// misnamed class fails the import instead of turning into `RuntimeError` later.
pub(crate) fn check_classes(py: Python<'_>) -> PyResult<()> {
    CLASSES.get_or_try_init(py, || load_classes(py)).map(|_| ())
}

/// An instance of `loglm.errors.<class>` carrying `msg`.
pub(crate) fn raise(class: ErrClass, msg: String) -> PyErr {
    Python::with_gil(|py| match CLASSES.get_or_try_init(py, || load_classes(py)) {
        Ok(classes) => {
            let i = ErrClass::ALL.iter().position(|&c| c == class).unwrap_or(0);
            PyErr::from_type(classes[i].bind(py).clone(), msg)
        }
        Err(e) => PyRuntimeError::new_err(format!("{msg} (and loglm.errors is unusable: {e})")),
    })
}

/// Build an instance of `loglm.errors.<class_name>` carrying `msg`. Prefer
/// [`raise`]; an unknown name gives `InternalError` naming it.
pub(crate) fn loglm_err(class_name: &str, msg: String) -> PyErr {
    match ErrClass::from_name(class_name) {
        Some(c) => raise(c, msg),
        None => raise(ErrClass::InternalError, format!("{msg} (unknown loglm error class {class_name:?})")),
    }
}

pub(crate) fn to_py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    let class = match e {
        Error::NotFound(_) => ErrClass::ModelNotFoundError,
        Error::Io { .. } => return PyOSError::new_err(msg),
        Error::InvalidArgument(_) | Error::Json(_) => ErrClass::InvalidInputError,
        Error::ModelFormat(_) => ErrClass::ModelLoadError,
        Error::Unsupported(_) => ErrClass::UnsupportedModelError,
        Error::Adapter(_) => ErrClass::AdapterError,
        Error::AdapterNotFound(_) => ErrClass::AdapterNotFoundError,
        Error::Tokenizer(_) => ErrClass::TokenizerError,
        Error::ContextLength { .. } => ErrClass::ContextLengthError,
        Error::Device(_) => ErrClass::DeviceError,
        Error::NonFinite(_) => ErrClass::NumericalError,
        Error::Interrupted => return PyKeyboardInterrupt::new_err(msg),
        Error::Candle(_) => ErrClass::LoglmError,
        Error::Internal(_) => ErrClass::InternalError,
    };
    raise(class, strip_backtrace(&msg))
}

/// The message without a backtrace: candle errors carry one (captured when
/// `RUST_BACKTRACE` is set) in their `Display`; it belongs in no exception.
pub(crate) fn strip_backtrace(msg: &str) -> String {
    let mut cut = msg.len();
    for marker in ["\nstack backtrace:", "\n   0: ", "\nBacktrace"] {
        if let Some(p) = msg.find(marker) {
            cut = cut.min(p);
        }
    }
    msg[..cut].trim_end().to_string()
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        to_py_err(e)
    }
}

/// Set by an `atexit` hook: the interpreter is shutting down.
static EXITING: AtomicBool = AtomicBool::new(false);

#[pyfunction]
fn _at_exit() {
    EXITING.store(true, Ordering::SeqCst);
}

/// Register the `atexit` hook that lets [`without_gil`] know the interpreter
/// is going away (called when `_loglm` is imported).
pub(crate) fn install_exit_hook(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(_at_exit, m)?;
    m.add_function(hook.clone())?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// `py.allow_threads(f)`, except that a thread finishing `f` after the
/// interpreter began to exit never takes the GIL back: it parks until the
/// process ends. Taking it back then makes CPython end the (daemon) thread
/// with `pthread_exit`, whose forced unwind through Rust frames aborts the
/// process (SIGABRT, nothing on stderr). Long waits and work leave the GIL
/// through this function (the polling loops of `py/engine.rs` should too).
pub(crate) fn without_gil<T, F>(py: Python<'_>, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    py.allow_threads(|| {
        let out = f();
        while EXITING.load(Ordering::SeqCst) {
            std::thread::park();
        }
        out
    })
}

/// Run `f` without the GIL, turning a Rust panic into `loglm.InternalError`
/// and a `crate::Error` into its Python exception. Inputs must already be
/// owned Rust data (copy them out of Python objects first).
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> crate::Result<T> + Send,
{
    let out = without_gil(py, || catch_unwind(AssertUnwindSafe(f)));
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
    raise(
        ErrClass::InternalError,
        format!("Rust panic inside loglm (this is a bug, please report it): {}", strip_backtrace(msg)),
    )
}
