//! Python bindings of `crate::parse`: the `TemplateTree` core class behind
//! `loglm.TemplateMiner` (python/loglm/parsing.py) and a few helper functions.
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::parse::batch::{read_lines, LogFormat};
use crate::parse::miner::Accept;
use crate::parse::{content_id, masking, matching, Parser, ParserConfig};
use crate::py::detach;
use crate::py::errors::{raise, ErrClass};

/// `loglm.InvalidInputError` (a `ValueError`).
fn invalid(msg: impl Into<String>) -> PyErr {
    raise(ErrClass::InvalidInputError, msg.into())
}

/// `IndexError`, the sequence protocol's error for an index past the end.
fn index_err(msg: String) -> PyErr {
    pyo3::exceptions::PyIndexError::new_err(msg)
}

fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> crate::Result<T> + Send) -> crate::Result<T> {
    match threads {
        None | Some(0) => f(),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| crate::Error::Internal(format!("thread pool: {e}")))?;
            pool.install(f)
        }
    }
}

/// Drain template tree with masking and an LLM template cache (core of `loglm.TemplateMiner`).
/// Cluster *indices* are 0-based (cluster_id = index + 1).
#[pyclass(module = "loglm._loglm")]
pub struct TemplateTree {
    inner: Parser,
}

#[pymethods]
impl TemplateTree {
    #[new]
    #[pyo3(signature = (sim_th=0.4, depth=4, max_children=100, param_str="<*>".to_string(),
                        parametrize_numeric_tokens=true, extra_delimiters=Vec::new(), masking=true, max_clusters=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        sim_th: f64,
        depth: usize,
        max_children: usize,
        param_str: String,
        parametrize_numeric_tokens: bool,
        extra_delimiters: Vec<String>,
        masking: bool,
        max_clusters: Option<usize>,
    ) -> PyResult<Self> {
        let cfg = ParserConfig { sim_th, depth, max_children, param_str, parametrize_numeric_tokens, extra_delimiters, masking, max_clusters };
        Ok(TemplateTree { inner: Parser::new(cfg)? })
    }

    /// Add one line: (index, change_type).
    fn add(&mut self, line: &str) -> (usize, &'static str) {
        let (i, c) = self.inner.add(line);
        (i, c.as_str())
    }

    /// Add many lines in parallel (deterministic; same as adding one by one). Returns the
    /// cluster index of each line as a uint32 array.
    #[pyo3(signature = (lines, threads=None))]
    fn add_batch<'py>(&mut self, py: Python<'py>, lines: Vec<String>, threads: Option<usize>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let inner = &mut self.inner;
        let out = detach(py, || with_threads(threads, || Ok(inner.add_batch(&lines))))?;
        Ok(out.into_pyarray(py))
    }

    /// Cache hits for many lines: index per line, -1 for a miss. Hits are counted.
    #[pyo3(signature = (lines, threads=None))]
    fn hit_batch<'py>(&mut self, py: Python<'py>, lines: Vec<String>, threads: Option<usize>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        use rayon::prelude::*;
        let inner = &mut self.inner;
        let out = detach(py, || {
            let found: Vec<Option<usize>> = with_threads(threads, || Ok(lines.par_iter().map(|l| inner.lookup(l)).collect()))?;
            // hits only add to sizes of locked clusters, so applying them afterwards is exact
            let mut out = Vec::with_capacity(lines.len());
            for (l, f) in lines.iter().zip(found) {
                match f {
                    Some(i) => {
                        inner.hit(l);
                        out.push(i as i64)
                    }
                    None => out.push(-1),
                }
            }
            Ok(out)
        })?;
        Ok(out.into_pyarray(py))
    }

    /// Index of a cached (LLM-verified) template matching the line, or None.
    fn lookup(&self, line: &str) -> Option<usize> {
        self.inner.lookup(line)
    }

    /// Verify a model template for a line: ("created" | "joined" | "rejected", index or -1).
    fn accept(&mut self, line: &str, template: &str) -> (&'static str, i64) {
        accept_tuple(self.inner.accept(line, template))
    }

    /// Register a labelled (line, template) example as a trusted cached template:
    /// ("created" | "joined" | "rejected", index or -1); no line is counted.
    fn seed(&mut self, line: &str, template: &str) -> (&'static str, i64) {
        accept_tuple(self.inner.seed(line, template))
    }

    /// Per cluster (by index): whether its template came from a labelled example.
    fn labelled(&self) -> Vec<bool> {
        self.inner.tree.clusters.iter().map(|c| c.labelled).collect()
    }

    /// Tree template for a line (never joins an LLM-locked cluster): (index, change_type).
    fn fallback(&mut self, line: &str) -> (usize, &'static str) {
        let (i, c) = self.inner.fallback(line);
        (i, c.as_str())
    }

    /// Group lines by the cluster a fresh tree with the same settings puts them in.
    fn group_keys<'py>(&self, py: Python<'py>, lines: Vec<String>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let cfg = self.inner.cfg().clone();
        let out = detach(py, || {
            let mut scratch = Parser::new(cfg)?;
            Ok(scratch.add_batch(&lines))
        })?;
        Ok(out.into_pyarray(py))
    }

    /// Up to k (example line, template) pairs of similar cached templates.
    fn similar_examples(&self, line: &str, k: usize) -> Vec<(String, String)> {
        self.inner.similar_examples(line, k)
    }

    /// drain3 `match`: index of the cluster matching perfectly, or None.
    #[pyo3(signature = (line, full_search_strategy="never"))]
    fn match_line(&self, line: &str, full_search_strategy: &str) -> PyResult<Option<usize>> {
        if !matches!(full_search_strategy, "never" | "fallback" | "always") {
            return Err(invalid(format!(
                "full_search_strategy must be 'never', 'fallback' or 'always', got {full_search_strategy:?}"
            )));
        }
        if let Some(i) = self.inner.lookup(line) {
            return Ok(Some(i));
        }
        let toks = self.inner.tree.tokenize(line);
        Ok(self.inner.tree.match_tokens(&toks, full_search_strategy).filter(|&i| {
            let c = &self.inner.tree.clusters[i];
            c.llm_template.as_ref().map_or(true, |t| matching::template_matches(t, line, &c_param(&self.inner), true))
        }))
    }

    /// Number of clusters.
    fn __len__(&self) -> usize {
        self.inner.tree.clusters.len()
    }

    /// (cluster_id, template, template_id, size, locked, template tokens) of cluster `index`.
    fn cluster(&self, index: usize) -> PyResult<(u64, String, String, u64, bool, Vec<String>)> {
        let c = self.inner.tree.clusters.get(index).ok_or_else(|| {
            index_err(format!("no cluster with index {index}"))
        })?;
        let t = c.template();
        let toks: Vec<String> = if c.llm_template.is_some() { t.split(' ').map(str::to_string).collect() } else { c.tokens.clone() };
        Ok((c.cluster_id, t.clone(), content_id(&t), c.size, c.llm_template.is_some(), toks))
    }

    /// Current template of every cluster (by index).
    fn templates(&self) -> Vec<String> {
        self.inner.tree.clusters.iter().map(|c| c.template()).collect()
    }

    /// Parameters of each line under the final template of its cluster.
    #[pyo3(signature = (lines, clusters, threads=None))]
    fn parameters_batch(&self, py: Python<'_>, lines: Vec<String>, clusters: PyReadonlyArray1<u32>, threads: Option<usize>) -> PyResult<Vec<Vec<String>>> {
        let cl = clusters.as_slice()?.to_vec();
        if cl.len() != lines.len() {
            return Err(invalid("lines and clusters differ in length"));
        }
        let n = self.inner.tree.clusters.len() as u32;
        if cl.iter().any(|&c| c >= n) {
            return Err(invalid("cluster index out of range"));
        }
        let inner = &self.inner;
        detach(py, || with_threads(threads, || Ok(inner.parameters_batch(&lines, &cl))))
    }

    /// Masked tokens of a line, as the tree sees it.
    fn tokens(&self, line: &str) -> Vec<String> {
        self.inner.tree.tokenize(line).into_iter().map(|c| c.into_owned()).collect()
    }

    /// JSON state (schema "loglm.template_miner", version 1).
    fn to_json(&self) -> PyResult<String> {
        Ok(self.inner.to_json()?)
    }

    /// Load a tree from JSON written by `to_json`.
    #[staticmethod]
    fn from_json(s: &str) -> PyResult<Self> {
        Ok(TemplateTree { inner: Parser::from_json(s)? })
    }

    /// Merge another tree in; returns for each of its clusters the index here.
    fn merge(&mut self, other: PyRef<'_, TemplateTree>) -> PyResult<Vec<usize>> {
        Ok(self.inner.merge(&other.inner)?)
    }

    /// Indices of the clusters not evicted by the `max_clusters` LRU bound, in id order.
    fn live_clusters(&self) -> Vec<usize> {
        let t = &self.inner.tree;
        (0..t.clusters.len()).filter(|&i| !t.clusters[i].evicted).collect()
    }

    /// Copy of this tree.
    fn copy(&self) -> Self {
        TemplateTree { inner: self.inner.clone() }
    }

    /// Counters as a dict.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner.counters;
        let d = PyDict::new(py);
        d.set_item("lines", c.lines)?;
        d.set_item("cache_hits", c.cache_hits)?;
        d.set_item("llm_accepted", c.llm_accepted)?;
        d.set_item("llm_rejected", c.llm_rejected)?;
        d.set_item("over_merge_repairs", c.over_merge_repairs)?;
        d.set_item("under_merge_repairs", c.under_merge_repairs)?;
        d.set_item("non_utf8_lines", c.non_utf8_lines)?;
        Ok(d)
    }

    /// Count lines that were decoded lossily.
    fn add_non_utf8(&mut self, n: u64) {
        self.inner.counters.non_utf8_lines += n;
    }

    /// Settings as a dict.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.cfg();
        let d = PyDict::new(py);
        d.set_item("sim_th", c.sim_th)?;
        d.set_item("depth", c.depth)?;
        d.set_item("max_children", c.max_children)?;
        d.set_item("param_str", &c.param_str)?;
        d.set_item("parametrize_numeric_tokens", c.parametrize_numeric_tokens)?;
        d.set_item("extra_delimiters", c.extra_delimiters.clone())?;
        d.set_item("masking", c.masking)?;
        d.set_item("max_clusters", c.max_clusters)?;
        Ok(d)
    }
}

fn c_param(p: &Parser) -> String {
    p.cfg().param_str.clone()
}

/// Parameters of `line` under `template` (whitespace-insensitive), None on mismatch.
#[pyfunction]
#[pyo3(signature = (template, line, param_str="<*>", allow_empty=false))]
fn template_parameters(template: &str, line: &str, param_str: &str, allow_empty: bool) -> Option<Vec<String>> {
    matching::extract_parameters(template, line, param_str, allow_empty)
}

/// Whether `template` (with `<*>` wildcards) matches `line`.
#[pyfunction]
#[pyo3(signature = (template, line, param_str="<*>", allow_empty=true))]
fn template_matches(template: &str, line: &str, param_str: &str, allow_empty: bool) -> bool {
    matching::template_matches(template, line, param_str, allow_empty)
}

/// Content-derived template id ("E" + 8 hex digits).
#[pyfunction]
fn template_id(template: &str) -> String {
    content_id(template)
}

/// `line` with its variables masked (`crate::parse::masking::mask_line`): the one masker,
/// behind `loglm.collab.mask_line`. A non-`str` raises `loglm.InvalidTypeError`.
#[pyfunction]
#[pyo3(signature = (line, param_str="<*>"))]
fn mask_line(line: &Bound<'_, PyAny>, param_str: &str) -> PyResult<String> {
    let Ok(s) = line.downcast::<PyString>() else {
        return Err(raise(ErrClass::InvalidTypeError, format!("line must be a str, not {}", line.get_type().name()?)));
    };
    Ok(masking::mask_line(&s.to_string_lossy(), param_str))
}

/// Read a log file into lines (LF/CRLF); invalid UTF-8 decoded lossily.
/// Returns (lines, non_utf8 flags as a bool array).
#[pyfunction]
fn read_log_lines<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<(Vec<String>, Bound<'py, PyArray1<bool>>)> {
    let (lines, bad) = detach(py, || read_lines(&path))?;
    Ok((lines, bad.into_pyarray(py)))
}

/// Split lines by a loghub log format: (header names, columns, fitted flags).
#[pyfunction]
fn split_log_format<'py>(py: Python<'py>, lines: Vec<String>, log_format: &str) -> PyResult<(Vec<String>, Vec<Vec<String>>, Bound<'py, PyArray1<bool>>)> {
    let f = LogFormat::new(log_format)?;
    let (rows, ok) = detach(py, || Ok(f.split_many(&lines)))?;
    let mut cols: Vec<Vec<String>> = vec![Vec::with_capacity(rows.len()); f.headers.len()];
    for r in rows {
        for (c, v) in cols.iter_mut().zip(r) {
            c.push(v);
        }
    }
    Ok((f.headers.clone(), cols, ok.into_pyarray(py)))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TemplateTree>()?;
    m.add_function(wrap_pyfunction!(template_parameters, m)?)?;
    m.add_function(wrap_pyfunction!(template_matches, m)?)?;
    m.add_function(wrap_pyfunction!(template_id, m)?)?;
    m.add_function(wrap_pyfunction!(mask_line, m)?)?;
    m.add_function(wrap_pyfunction!(read_log_lines, m)?)?;
    m.add_function(wrap_pyfunction!(split_log_format, m)?)?;
    Ok(())
}

/// An [`Accept`] as Python sees it: ("created" | "joined" | "rejected", index or -1).
fn accept_tuple(a: Accept) -> (&'static str, i64) {
    match a {
        Accept::Created(i) => ("created", i as i64),
        Accept::Joined(i) => ("joined", i as i64),
        Accept::Rejected => ("rejected", -1),
    }
}
