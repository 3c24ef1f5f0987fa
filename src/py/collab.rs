//! Python bindings of `crate::collab`: the autoencoder coordinator and the
//! KNN vote / similarity router. Arrays are float32 numpy arrays; the
//! `loglm.collab` facade converts and validates shapes first.
use std::path::PathBuf;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::collab::{knn_vote as core_knn_vote, max_similarity as core_max_sim, Coordinator, TrainConfig};
use crate::error::Error;
use crate::py::detach;

fn rows(x: &PyReadonlyArray2<'_, f32>) -> (Vec<f32>, usize, usize) {
    let a = x.as_array();
    let (n, d) = a.dim();
    (a.iter().copied().collect(), n, d)
}

#[pyclass(module = "loglm._loglm", name = "Coordinator")]
pub struct PyCoordinator {
    inner: Coordinator,
}

#[pymethods]
impl PyCoordinator {
    #[new]
    #[pyo3(signature = (input_dim, hidden=vec![64, 16], percentile=95.0, seed=0))]
    fn new(input_dim: usize, hidden: Vec<usize>, percentile: f64, seed: u64) -> PyResult<Self> {
        Ok(Self { inner: Coordinator::new(input_dim, &hidden, percentile, seed)? })
    }

    /// Train (or keep training) the autoencoder; resets tau. Returns per-epoch mean losses.
    #[pyo3(signature = (x, epochs=30, batch_size=64, lr=1e-3))]
    fn fit(&mut self, py: Python<'_>, x: PyReadonlyArray2<'_, f32>, epochs: usize, batch_size: usize, lr: f64) -> PyResult<Vec<f32>> {
        let (v, n, d) = rows(&x);
        if d != self.inner.ae.input_dim() {
            return Err(Error::InvalidArgument(format!("x has {d} columns, the coordinator expects {}", self.inner.ae.input_dim())).into());
        }
        let inner = &mut self.inner;
        let cfg = TrainConfig { epochs, batch_size, lr };
        detach(py, move || inner.fit(&v, n, &cfg, &mut |_, _| {}))
    }

    /// Reconstruction error of each row.
    fn errors<'py>(&self, py: Python<'py>, x: PyReadonlyArray2<'py, f32>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (v, n, d) = rows(&x);
        if d != self.inner.ae.input_dim() {
            return Err(Error::InvalidArgument(format!("x has {d} columns, the coordinator expects {}", self.inner.ae.input_dim())).into());
        }
        let inner = &self.inner;
        let e = detach(py, move || inner.ae.errors(&v, n))?;
        Ok(PyArray1::from_vec(py, e))
    }

    #[getter]
    fn get_tau(&self) -> f32 {
        self.inner.tau
    }

    #[setter]
    fn set_tau(&mut self, tau: f32) {
        self.inner.tau = tau;
    }

    #[getter]
    fn percentile(&self) -> f64 {
        self.inner.percentile
    }

    #[getter]
    fn dims(&self) -> Vec<usize> {
        self.inner.ae.dims().to_vec()
    }

    /// Write weights, tau and percentile to one safetensors file.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = &self.inner;
        detach(py, move || inner.save(&path))
    }

    #[staticmethod]
    #[pyo3(signature = (path, seed=0))]
    fn load(py: Python<'_>, path: PathBuf, seed: u64) -> PyResult<Self> {
        Ok(Self { inner: detach(py, move || Coordinator::load(&path, seed))? })
    }
}

type VoteArrays<'py> = (
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<f32>>,
);

/// KNN vote: (score, uncertainty, max_sim, neighbours (q, k), sims (q, k)).
#[pyfunction]
#[pyo3(signature = (memory, labels, queries, k=10, temperature=0.1))]
fn knn_vote<'py>(
    py: Python<'py>,
    memory: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
    k: usize,
    temperature: f32,
) -> PyResult<VoteArrays<'py>> {
    let (m, n, d) = rows(&memory);
    let (q, nq, dq) = rows(&queries);
    if d != dq {
        return Err(Error::InvalidArgument(format!("memory has {d} columns, queries {dq}")).into());
    }
    let _ = n;
    let l: Vec<f32> = labels.as_array().iter().copied().collect();
    let votes = detach(py, move || core_knn_vote(&m, &l, &q, d, k, temperature))?;
    let kk = votes.first().map(|v| v.neighbours.len()).unwrap_or(0);
    let mut nb = Vec::with_capacity(nq * kk);
    let mut sims = Vec::with_capacity(nq * kk);
    for v in &votes {
        nb.extend(v.neighbours.iter().map(|&j| j as i64));
        sims.extend_from_slice(&v.sims);
    }
    Ok((
        PyArray1::from_iter(py, votes.iter().map(|v| v.score)),
        PyArray1::from_iter(py, votes.iter().map(|v| v.uncertainty)),
        PyArray1::from_iter(py, votes.iter().map(|v| v.max_sim)),
        PyArray1::from_vec(py, nb).reshape([nq, kk])?,
        PyArray1::from_vec(py, sims).reshape([nq, kk])?,
    ))
}

/// Cosine similarity of each query row to its nearest memory row.
#[pyfunction]
fn max_similarity<'py>(
    py: Python<'py>,
    memory: PyReadonlyArray2<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (m, _, d) = rows(&memory);
    let (q, _, dq) = rows(&queries);
    if d != dq {
        return Err(Error::InvalidArgument(format!("memory has {d} columns, queries {dq}")).into());
    }
    let s = detach(py, move || core_max_sim(&m, &q, d))?;
    Ok(PyArray1::from_vec(py, s))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCoordinator>()?;
    m.add_function(wrap_pyfunction!(knn_vote, m)?)?;
    m.add_function(wrap_pyfunction!(max_similarity, m)?)?;
    Ok(())
}
