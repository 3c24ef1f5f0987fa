//! Python bindings of `crate::metrics` (issue 3). Inputs arrive as Python lists
//! (the `loglm.metrics` facade converts numpy arrays and pandas Series); strings
//! are copied out, checked (None / NaN / non-UTF-8 -> `loglm.InvalidInputError`) and the work
//! runs without the GIL through `crate::py::detach`.
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyString};

use crate::metrics;
use crate::py::detach;
use crate::py::errors::{raise, ErrClass};

/// `loglm.InvalidInputError` (a `ValueError`).
fn invalid(msg: impl Into<String>) -> PyErr {
    raise(ErrClass::InvalidInputError, msg.into())
}

/// `loglm.InvalidTypeError` (a `TypeError` and an `InvalidInputError`).
fn wrong_type(msg: impl Into<String>) -> PyErr {
    raise(ErrClass::InvalidTypeError, msg.into())
}

/// Copy a Python iterable of strings into Rust, with clear errors per element.
pub(crate) fn extract_strings(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(wrong_type(format!(
            "{name} must be a sequence of strings, not a single string"
        )));
    }
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, item) in obj.try_iter()?.enumerate() {
        out.push(extract_one(&item?, name, None, i)?);
    }
    Ok(out)
}

/// One string element, with a clear error naming `name[stream][i]`.
fn extract_one(item: &Bound<'_, PyAny>, name: &str, stream: Option<usize>, i: usize) -> PyResult<String> {
    let at = match stream {
        Some(k) => format!("{name}[{k}][{i}]"),
        None => format!("{name}[{i}]"),
    };
    if let Ok(s) = item.downcast::<PyString>() {
        return s.to_cow().map(|c| c.into_owned()).map_err(|_| {
            invalid(format!("{at} is not valid UTF-8 (it contains an unpaired surrogate)"))
        });
    }
    if item.is_none() {
        return Err(invalid(format!("{at} is None; every element must be a string")));
    }
    if let Ok(b) = item.downcast::<PyBytes>() {
        return std::str::from_utf8(b.as_bytes())
            .map(str::to_owned)
            .map_err(|e| invalid(format!("{at} is bytes that are not valid UTF-8: {e}")));
    }
    if let Ok(f) = item.downcast::<PyFloat>() {
        if f.value().is_nan() {
            return Err(invalid(format!(
                "{at} is NaN (a missing value); every element must be a string"
            )));
        }
    }
    Err(wrong_type(format!("{at} must be a string, got {}", item.get_type().name()?)))
}

fn scores_dict<'py>(py: Python<'py>, items: &[(&str, f64)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(*k, *v)?;
    }
    Ok(d)
}

#[pyfunction]
#[pyo3(signature = (logs, true_templates, pred_templates, normalize_whitespace=false))]
fn _parsing_scores<'py>(
    py: Python<'py>,
    logs: &Bound<'py, PyAny>,
    true_templates: &Bound<'py, PyAny>,
    pred_templates: &Bound<'py, PyAny>,
    normalize_whitespace: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let logs = extract_strings(logs, "logs")?;
    let t = extract_strings(true_templates, "true_templates")?;
    let p = extract_strings(pred_templates, "pred_templates")?;
    let s = detach(py, || metrics::parsing_scores(&logs, &t, &p, normalize_whitespace))?;
    scores_dict(
        py,
        &[
            ("RI", s.ri),
            ("ARI", s.ari),
            ("GA", s.ga),
            ("FGA", s.fga),
            ("PA", s.pa),
            ("PTA", s.pta),
            ("RTA", s.rta),
            ("FTA", s.fta),
            ("var_P", s.var_p),
            ("var_R", s.var_r),
            ("var_F1", s.var_f1),
        ],
    )
}

#[pyfunction]
fn _parsing_counts(
    py: Python<'_>,
    logs: &Bound<'_, PyAny>,
    true_templates: &Bound<'_, PyAny>,
    pred_templates: &Bound<'_, PyAny>,
    normalize_whitespace: bool,
) -> PyResult<(u64, u64, u64, usize, usize)> {
    let logs = extract_strings(logs, "logs")?;
    let t = extract_strings(true_templates, "true_templates")?;
    let p = extract_strings(pred_templates, "pred_templates")?;
    let s = detach(py, || metrics::parsing_scores(&logs, &t, &p, normalize_whitespace))?;
    Ok((s.var_tp, s.var_fp, s.var_fn, s.n_true_groups, s.n_pred_groups))
}

/// Per-token variable mask of `log` under `template` (LogLM's definition).
#[pyfunction]
fn _variable_mask(log: &str, template: &str) -> Vec<bool> {
    let re = metrics::parsing::template_regex(template);
    metrics::parsing::variable_mask(log, template, re.as_ref())
}

#[pyfunction]
fn _rand_scores(py: Python<'_>, labels_true: &Bound<'_, PyAny>, labels_pred: &Bound<'_, PyAny>) -> PyResult<(f64, f64)> {
    let t = extract_strings(labels_true, "labels_true")?;
    let p = extract_strings(labels_pred, "labels_pred")?;
    detach(py, || Ok((metrics::rand_index(&t, &p)?, metrics::adjusted_rand_index(&t, &p)?)))
}

#[pyfunction]
fn _rand_scores_int(
    py: Python<'_>,
    labels_true: PyReadonlyArray1<'_, i64>,
    labels_pred: PyReadonlyArray1<'_, i64>,
) -> PyResult<(f64, f64)> {
    let t = labels_true.as_array().to_vec();
    let p = labels_pred.as_array().to_vec();
    detach(py, || metrics::parsing::rand_index_ids(&t, &p))
}

fn binary_dict<'py>(py: Python<'py>, s: &metrics::BinaryScores) -> PyResult<Bound<'py, PyDict>> {
    let d = scores_dict(
        py,
        &[("precision", s.precision), ("recall", s.recall), ("f1", s.f1), ("accuracy", s.accuracy)],
    )?;
    d.set_item("tp", s.tp)?;
    d.set_item("fp", s.fp)?;
    d.set_item("fn", s.fn_)?;
    d.set_item("tn", s.tn)?;
    Ok(d)
}

#[pyfunction]
fn _binary_scores<'py>(
    py: Python<'py>,
    y_true: PyReadonlyArray1<'py, bool>,
    y_pred: PyReadonlyArray1<'py, bool>,
) -> PyResult<Bound<'py, PyDict>> {
    let t = y_true.as_array().to_vec();
    let p = y_pred.as_array().to_vec();
    let s = detach(py, || metrics::binary_scores(&t, &p))?;
    binary_dict(py, &s)
}

#[pyfunction]
fn _session_scores<'py>(
    py: Python<'py>,
    session_ids: PyReadonlyArray1<'py, i64>,
    y_true: PyReadonlyArray1<'py, bool>,
    y_pred: PyReadonlyArray1<'py, bool>,
) -> PyResult<Bound<'py, PyDict>> {
    let ids = session_ids.as_array().to_vec();
    let t = y_true.as_array().to_vec();
    let p = y_pred.as_array().to_vec();
    if ids.len() != t.len() {
        return Err(invalid(format!(
            "session_scores: length mismatch: {} session ids but {} labels",
            ids.len(),
            t.len()
        )));
    }
    let s = detach(py, || metrics::session_scores(&ids, &t, &p))?;
    binary_dict(py, &s)
}

#[pyfunction]
fn _session_labels<'py>(
    py: Python<'py>,
    session_ids: PyReadonlyArray1<'py, i64>,
    labels: PyReadonlyArray1<'py, bool>,
) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<bool>>)> {
    let ids = session_ids.as_array().to_vec();
    let l = labels.as_array().to_vec();
    let (a, b) = detach(py, || metrics::session_labels(&ids, &l))?;
    Ok((PyArray1::from_vec(py, a), PyArray1::from_vec(py, b)))
}

/// Reference streams: a list of lists; `None` marks an absent reference.
fn extract_streams(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    for (k, stream) in obj.try_iter()?.enumerate() {
        let stream = stream?;
        let mut v = Vec::new();
        for (i, item) in stream.try_iter()?.enumerate() {
            let item = item?;
            if item.is_none() {
                v.push(None);
            } else {
                v.push(Some(extract_one(&item, name, Some(k), i)?));
            }
        }
        out.push(v);
    }
    Ok(out)
}

type BleuOut<'py> = (f64, Vec<f64>, Vec<f64>, Vec<f64>, f64, u64, u64, String, String, Option<Bound<'py, PyArray1<f64>>>);

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn _bleu<'py>(
    py: Python<'py>,
    hypotheses: &Bound<'py, PyAny>,
    references: &Bound<'py, PyAny>,
    tokenize: &str,
    lowercase: bool,
    smooth_method: &str,
    smooth_value: Option<f64>,
    max_ngram_order: usize,
    corpus_effective_order: bool,
    sentence_effective_order: bool,
    sentences: bool,
) -> PyResult<BleuOut<'py>> {
    use metrics::bleu;
    let hyps = extract_strings(hypotheses, "hypotheses")?;
    let refs = extract_streams(references, "references")?;
    let cfg = bleu::BleuConfig {
        tokenizer: bleu::BleuTokenizer::parse(tokenize)?,
        lowercase,
        smooth: bleu::Smooth::parse(smooth_method)?,
        smooth_value,
        max_ngram_order,
    };
    let (corpus, nrefs, sent) = detach(py, || {
        let (stats, nrefs) = bleu::corpus_stats(&hyps, &refs, &cfg)?;
        let c = bleu::corpus_score(&stats, &cfg, corpus_effective_order);
        let s = if sentences { Some(bleu::sentence_scores(&stats, &cfg, sentence_effective_order)) } else { None };
        Ok((c, nrefs, s))
    })?;
    let sig = bleu::signature(&cfg, nrefs, corpus_effective_order);
    let ssig = bleu::signature(&cfg, nrefs, sentence_effective_order);
    Ok((
        corpus.score,
        corpus.counts,
        corpus.totals,
        corpus.precisions,
        corpus.bp,
        corpus.sys_len,
        corpus.ref_len,
        sig,
        ssig,
        sent.map(|v| PyArray1::from_vec(py, v)),
    ))
}

#[pyfunction]
fn _rouge<'py>(
    py: Python<'py>,
    hypotheses: &Bound<'py, PyAny>,
    references: &Bound<'py, PyAny>,
    types: Vec<String>,
    use_stemmer: bool,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    use metrics::rouge;
    let hyps = extract_strings(hypotheses, "hypotheses")?;
    let refs = extract_streams(references, "references")?;
    let tys = types.iter().map(|t| rouge::RougeType::parse(t)).collect::<crate::Result<Vec<_>>>()?;
    let flat = detach(py, || {
        let r = rouge::rouge_batch(&hyps, &refs, &tys, use_stemmer)?;
        let mut flat = Vec::with_capacity(r.len() * tys.len() * 3);
        for row in r {
            for p in row {
                flat.extend([p.precision, p.recall, p.fmeasure]);
            }
        }
        Ok(flat)
    })?;
    Ok(PyArray1::from_vec(py, flat))
}

#[pyfunction]
fn _porter_stem(words: Vec<String>) -> Vec<String> {
    words.iter().map(|w| metrics::porter::stem(w)).collect()
}

#[pyfunction]
fn _rouge_tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    metrics::rouge::tokenize(text, use_stemmer)
}

#[pyfunction]
fn _bleu_tokenize(text: &str, tokenize: &str, lowercase: bool) -> PyResult<Vec<String>> {
    let t = metrics::bleu::BleuTokenizer::parse(tokenize)?;
    Ok(metrics::bleu::preprocess(text, t, lowercase))
}

/// LLaMA-Factory SFT evaluation scores: (n, 4) flat array of
/// [bleu-4, rouge-1, rouge-2, rouge-l], x100 and rounded to 4 decimals.
#[pyfunction]
fn _llamafactory<'py>(
    py: Python<'py>,
    hypotheses: &Bound<'py, PyAny>,
    references: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let hyps = extract_strings(hypotheses, "hypotheses")?;
    let refs = extract_strings(references, "references")?;
    let rows = detach(py, || metrics::llamafactory::llamafactory_scores(&hyps, &refs))?;
    Ok(PyArray1::from_vec(py, rows.into_iter().flatten().collect()))
}

#[pyfunction]
fn _jieba_cut(text: &str) -> Vec<String> {
    metrics::llamafactory::jieba_cut(text).into_iter().map(str::to_owned).collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_llamafactory, m)?)?;
    m.add_function(wrap_pyfunction!(_jieba_cut, m)?)?;
    m.add_function(wrap_pyfunction!(_bleu, m)?)?;
    m.add_function(wrap_pyfunction!(_rouge, m)?)?;
    m.add_function(wrap_pyfunction!(_porter_stem, m)?)?;
    m.add_function(wrap_pyfunction!(_rouge_tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(_bleu_tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(_parsing_scores, m)?)?;
    m.add_function(wrap_pyfunction!(_parsing_counts, m)?)?;
    m.add_function(wrap_pyfunction!(_variable_mask, m)?)?;
    m.add_function(wrap_pyfunction!(_rand_scores, m)?)?;
    m.add_function(wrap_pyfunction!(_rand_scores_int, m)?)?;
    m.add_function(wrap_pyfunction!(_binary_scores, m)?)?;
    m.add_function(wrap_pyfunction!(_session_scores, m)?)?;
    m.add_function(wrap_pyfunction!(_session_labels, m)?)?;
    Ok(())
}
