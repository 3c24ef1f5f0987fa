//! loglm core: tokenization, KV-cached generation, batched metrics and the
//! template tree for instruction-based log analysis (LogLM, Liu et al.).
//!
//! Everything here is plain Rust and is tested with `cargo test`; the Python
//! bindings live in `py/` alone and are compiled only with the `python` feature
//! (maturin turns it on).
pub mod collab;
pub mod embed;
pub mod engine;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod model;
pub mod parse;
pub mod tokenizer;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
