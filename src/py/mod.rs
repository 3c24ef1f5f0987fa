//! The only part of the crate that knows about Python: thin wrappers over the
//! core, error mapping, and the helper that releases the GIL for long work.
use pyo3::prelude::*;

mod collab;
mod embed;
mod engine;
pub(crate) mod errors;
mod metrics;
mod parse;

pub(crate) use errors::detach;

#[pymodule]
fn _loglm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::check_classes(m.py())?;
    errors::install_exit_hook(m)?;
    collab::register(m)?;
    embed::register(m)?;
    engine::register(m)?;
    metrics::register(m)?;
    parse::register(m)?;
    Ok(())
}
