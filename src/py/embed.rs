//! Python bindings of `crate::embed`: the BERT sentence encoder. Texts are
//! copied out of Python, encoded without the GIL, returned as a float32
//! numpy array of shape (n, dim).
use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::embed::SentenceEncoder;
use crate::py::detach;

use super::metrics::extract_strings;

#[pyclass(module = "loglm._loglm", name = "SentenceEncoder", frozen)]
pub struct PySentenceEncoder {
    inner: Arc<SentenceEncoder>,
}

#[pymethods]
impl PySentenceEncoder {
    /// Load a BERT sentence-transformers folder (config.json, model.safetensors, tokenizer.json).
    #[staticmethod]
    #[pyo3(signature = (path, max_length=None))]
    fn load(py: Python<'_>, path: PathBuf, max_length: Option<usize>) -> PyResult<Self> {
        let enc = detach(py, move || SentenceEncoder::load(&path, max_length))?;
        Ok(Self { inner: Arc::new(enc) })
    }

    /// Unit-norm vectors of `texts`, float32 array (len(texts), dim).
    #[pyo3(signature = (texts, batch_size=32))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let texts = extract_strings(texts, "texts")?;
        let n = texts.len();
        let inner = self.inner.clone();
        let v = detach(py, move || inner.encode(&texts, batch_size))?;
        PyArray1::from_vec(py, v).reshape([n, self.inner.dim()])
    }

    /// Token ids one text is encoded to (after truncation).
    fn token_ids(&self, text: &str) -> PyResult<Vec<u32>> {
        Ok(self.inner.token_ids(text)?)
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn max_length(&self) -> usize {
        self.inner.max_length()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// Number of distinct texts whose vectors are cached.
    fn cache_size(&self) -> usize {
        self.inner.cache_len()
    }

    fn clear_cache(&self) {
        self.inner.clear_cache()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySentenceEncoder>()?;
    Ok(())
}
