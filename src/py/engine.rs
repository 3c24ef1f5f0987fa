//! Python handle of [`crate::engine::Engine`]: loading, tokenization, chat
//! rendering, and everything that runs the model, through the model's engine
//! loop ([`crate::generate::engine_loop`]): `generate`, `submit` (a [`PyStream`]
//! of text pieces and completions, the one stream type), choice scoring and
//! logits. Several threads calling one engine share its batches. Prompts and
//! results cross as plain lists / dicts; `loglm.model.LogLM` builds the typed
//! results. Every wait for the loop goes through [`recv_interruptible`]: the
//! GIL is released, Ctrl-C is checked every 50 ms and cancels the request.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::errors::{loglm_err, to_py_err};
use crate::engine::{Engine, LoadOptions};
use crate::error::{Error, Result};
use crate::generate::engine_loop::{EngineLoop, Event, Handle, Output, Work};
use crate::generate::{BatchStats, Completion, Request, SamplingParams};
use crate::tokenizer::ChatMessage;

const POLL: Duration = Duration::from_millis(50);

/// Wait for the next message on `rx` without the GIL. On Ctrl-C (checked after
/// every message and every `POLL` without one), set `cancel` and raise KeyboardInterrupt; a vanished sender is an `InternalError`. The
/// receiver travels into the GIL-free closure and back (receivers are not Sync).
fn recv_interruptible<T: Send>(py: Python<'_>, rx: &mut Option<Receiver<T>>, cancel: &AtomicBool, what: &str) -> PyResult<T> {
    let Some(mut r) = rx.take() else {
        return Err(loglm_err("InternalError", format!("{what}: already finished")));
    };
    loop {
        let (back, got) = super::errors::without_gil(py, move || {
            let got = r.recv_timeout(POLL);
            (r, got)
        });
        r = back;
        match got {
            Ok(v) => {
                *rx = Some(r);
                // Pieces can arrive faster than POLL for a whole generation: look for
                // Ctrl-C on every message too, not only when the wait times out.
                if let Err(e) = py.check_signals() {
                    cancel.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                return Ok(v);
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    cancel.store(true, Ordering::Relaxed);
                    *rx = Some(r);
                    return Err(e);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(loglm_err("InternalError", format!("{what}: the engine worker vanished")));
            }
        }
    }
}

/// Run `f` (work that is not the engine loop's, e.g. loading) on a worker
/// thread and wait for it with [`recv_interruptible`]; a panic becomes `InternalError`.
fn run_interruptible<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("loglm-worker".into())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
                Err(Error::Internal(format!(
                    "Rust panic inside loglm (this is a bug, please report it): {}",
                    super::errors::panic_message(&p)
                )))
            });
            let _ = tx.send(r);
        })
        .map_err(|e| loglm_err("InternalError", format!("cannot start a thread: {e}")))?;
    // Loading cannot stop half-way: Ctrl-C is raised at once and the worker's result dropped.
    let cancel = AtomicBool::new(false);
    recv_interruptible(py, &mut Some(rx), &cancel, "load")?.map_err(to_py_err)
}

/// Submit `work` to the loop and wait for its end without the GIL;
/// `on_finished` receives each finished generation.
fn run_on_loop(py: Python<'_>, lp: &EngineLoop, work: Work, mut on_finished: impl FnMut(usize, Completion)) -> PyResult<Output> {
    let Handle { events, cancel } = lp.submit(work).map_err(to_py_err)?;
    let mut rx = Some(events);
    // Ctrl-C, a Python exception in `on_finished`, anything: the request stops with this call.
    let _guard = CancelOnDrop(cancel.clone());
    loop {
        match recv_interruptible(py, &mut rx, &cancel, "request")? {
            Event::Piece(..) => {}
            Event::Finished(i, c) => on_finished(i, c),
            Event::Done(r) => return r.map_err(to_py_err),
        }
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn messages_from_py(messages: Vec<(String, String)>) -> Vec<ChatMessage> {
    messages.into_iter().map(|(role, content)| ChatMessage { role, content }).collect()
}

fn completion_dict<'py>(py: Python<'py>, c: &Completion) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("text", &c.text)?;
    d.set_item("token_ids", &c.tokens)?;
    d.set_item("prompt_tokens", c.prompt_tokens)?;
    d.set_item("completion_tokens", c.tokens.len())?;
    d.set_item("finish_reason", c.finish_reason.as_str())?;
    d.set_item("prefill_seconds", c.prefill_secs)?;
    d.set_item("decode_seconds", c.decode_secs)?;
    match &c.logprobs {
        Some(l) => {
            let rows: Vec<(u32, f32, Vec<(u32, f32)>)> = l.iter().map(|t| (t.id, t.logprob, t.top.clone())).collect();
            d.set_item("logprobs", rows)?
        }
        None => d.set_item("logprobs", py.None())?,
    }
    Ok(d)
}

fn stats_dict<'py>(py: Python<'py>, s: &BatchStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("prefill_tokens", s.prefill_tokens)?;
    d.set_item("prefill_seconds", s.prefill_secs)?;
    d.set_item("decode_tokens", s.decode_tokens)?;
    d.set_item("decode_seconds", s.decode_secs)?;
    d.set_item("decode_steps", s.decode_steps)?;
    Ok(d)
}

#[allow(clippy::too_many_arguments)]
fn params(
    max_new_tokens: i64,
    temperature: f32,
    top_k: i64,
    top_p: f32,
    repetition_penalty: f32,
    seed: u64,
    stop: Vec<String>,
    ignore_eos: bool,
    logprobs: Option<i64>,
    json_object: bool,
    json_schema: Option<String>,
) -> Result<SamplingParams> {
    if json_object && json_schema.is_some() {
        return Err(Error::InvalidArgument("give json_object or json_schema, not both".into()));
    }
    let json_schema = json_schema.map(|t| compile_schema(&t)).transpose()?;
    if max_new_tokens < 1 {
        return Err(Error::InvalidArgument(format!("max_new_tokens must be at least 1, got {max_new_tokens}")));
    }
    if top_k < 0 {
        return Err(Error::InvalidArgument(format!("top_k must be >= 0, got {top_k}")));
    }
    if logprobs.is_some_and(|n| !(0..=crate::generate::sampler::MAX_TOP_LOGPROBS as i64).contains(&n)) {
        return Err(Error::InvalidArgument(format!(
            "logprobs (top alternatives) must be in [0, {}]",
            crate::generate::sampler::MAX_TOP_LOGPROBS
        )));
    }
    let p = SamplingParams {
        max_new_tokens: max_new_tokens as usize,
        temperature,
        top_k: top_k as usize,
        top_p,
        repetition_penalty,
        seed,
        stop,
        ignore_eos,
        logprobs: logprobs.map(|n| n as usize),
        json_object,
        json_schema,
    };
    p.validate()?;
    Ok(p)
}

/// A JSON Schema (as JSON text) compiled for constrained decoding.
fn compile_schema(text: &str) -> Result<Arc<crate::generate::schema::Schema>> {
    crate::generate::schema::Schema::compile(text)
        .map(Arc::new)
        .map_err(|e| Error::InvalidArgument(format!("json_schema cannot be compiled: {e}")))
}

/// Check that a JSON Schema (JSON text) compiles for constrained decoding;
/// raises InvalidInputError saying why not.
#[pyfunction]
fn check_json_schema(text: &str) -> PyResult<()> {
    compile_schema(text).map(|_| ()).map_err(to_py_err)
}

const PARAM_KEYS: [&str; 11] = [
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "seed",
    "stop",
    "ignore_eos",
    "logprobs",
    "json_object",
    "json_schema",
];

/// Sampling settings of one request from a dict (missing keys take the defaults of `generate`).
fn params_from_dict(d: &Bound<'_, PyDict>) -> PyResult<SamplingParams> {
    for k in d.keys() {
        let k: String = k.extract()?;
        if !PARAM_KEYS.contains(&k.as_str()) {
            return Err(to_py_err(Error::InvalidArgument(format!(
                "unknown sampling setting {k:?}; known: {}",
                PARAM_KEYS.join(", ")
            ))));
        }
    }
    fn get<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, key: &str, default: T) -> PyResult<T> {
        match d.get_item(key)? {
            Some(v) if !v.is_none() => v.extract(),
            _ => Ok(default),
        }
    }
    params(
        get(d, "max_new_tokens", 256i64)?,
        get(d, "temperature", 0.0f32)?,
        get(d, "top_k", 0i64)?,
        get(d, "top_p", 1.0f32)?,
        get(d, "repetition_penalty", 1.0f32)?,
        get(d, "seed", 0u64)?,
        get(d, "stop", Vec::<String>::new())?,
        get(d, "ignore_eos", false)?,
        get(d, "logprobs", None::<i64>)?,
        get(d, "json_object", false)?,
        get(d, "json_schema", None::<String>)?,
    )
    .map_err(to_py_err)
}

/// A loaded model (weights + tokenizer), shared by every call and thread.
#[pyclass(module = "loglm._loglm", name = "Engine", frozen)]
pub struct PyEngine {
    inner: Arc<Engine>,
    /// The model's engine loop: all generation, scoring and logits run there.
    lp: EngineLoop,
}

#[pymethods]
impl PyEngine {
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (path, *, device="cpu".to_string(), threads=None, dtype="auto".to_string(), context_length=None, tokenizer=None, adapters=Vec::new()))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        device: String,
        threads: Option<usize>,
        dtype: String,
        context_length: Option<usize>,
        tokenizer: Option<PathBuf>,
        adapters: Vec<PathBuf>,
    ) -> PyResult<Self> {
        let opts = LoadOptions { device, threads, dtype, context_length, tokenizer, adapters };
        let engine = Arc::new(run_interruptible(py, move || Engine::load(&path, &opts))?);
        let lp = engine.start_loop().map_err(to_py_err)?;
        Ok(PyEngine { inner: engine, lp })
    }

    /// Model facts as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let e = &self.inner;
        let c = e.config();
        let d = PyDict::new(py);
        d.set_item("path", e.path.to_string_lossy().to_string())?;
        d.set_item("format", e.format)?;
        d.set_item("architecture", c.arch.name())?;
        d.set_item("n_layer", c.n_layer)?;
        d.set_item("n_embd", c.n_embd)?;
        d.set_item("n_head", c.n_head)?;
        d.set_item("n_head_kv", c.n_head_kv)?;
        d.set_item("n_ff", c.n_ff)?;
        d.set_item("vocab_size", c.vocab_size)?;
        d.set_item("context_length", e.backend.context_length())?;
        d.set_item("train_context_length", c.train_context)?;
        d.set_item("threads", e.backend.threads())?;
        d.set_item("device", &e.device)?;
        d.set_item("adapter", e.adapters.iter().map(|p| p.to_string_lossy().to_string()).collect::<Vec<_>>())?;
        d.set_item("weight_bytes", e.backend.weight_bytes())?;
        d.set_item("weight_types", e.backend.weight_types())?;
        d.set_item("kv_cache_dtype", e.backend.kv_cache_dtype())?;
        d.set_item("has_chat_template", e.tokenizer.has_chat_template())?;
        d.set_item("eos_token_ids", e.tokenizer.eos_token_ids().to_vec())?;
        d.set_item("bos_token_id", e.tokenizer.bos_token_id())?;
        d.set_item("add_bos", e.tokenizer.add_bos())?;
        Ok(d)
    }

    #[pyo3(signature = (text, *, add_bos=false, parse_special=false))]
    fn encode(&self, py: Python<'_>, text: String, add_bos: bool, parse_special: bool) -> PyResult<Vec<u32>> {
        let e = self.inner.clone();
        super::detach(py, move || e.tokenizer.encode(&text, add_bos, parse_special))
    }

    #[pyo3(signature = (texts, *, add_bos=false, parse_special=false))]
    fn encode_batch(&self, py: Python<'_>, texts: Vec<String>, add_bos: bool, parse_special: bool) -> PyResult<Vec<Vec<u32>>> {
        let e = self.inner.clone();
        super::detach(py, move || {
            texts.iter().map(|t| e.tokenizer.encode(t, add_bos, parse_special)).collect::<Result<Vec<_>>>()
        })
    }

    #[pyo3(signature = (ids, *, skip_special=true))]
    fn decode(&self, ids: Vec<u32>, skip_special: bool) -> PyResult<String> {
        self.inner.tokenizer.decode(&ids, skip_special).map_err(to_py_err)
    }

    /// Chat prompt as text, from (role, content) pairs.
    #[pyo3(signature = (messages, *, add_generation_prompt=true))]
    fn render_chat(&self, messages: Vec<(String, String)>, add_generation_prompt: bool) -> PyResult<String> {
        self.inner
            .tokenizer
            .render_chat(&messages_from_py(messages), add_generation_prompt)
            .map_err(to_py_err)
    }

    /// Chat prompt as token ids; message contents never become control tokens.
    #[pyo3(signature = (messages, *, add_generation_prompt=true))]
    fn encode_chat(&self, py: Python<'_>, messages: Vec<(String, String)>, add_generation_prompt: bool) -> PyResult<Vec<u32>> {
        let e = self.inner.clone();
        let m = messages_from_py(messages);
        super::detach(py, move || e.tokenizer.encode_chat(&m, add_generation_prompt))
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (prompts, *, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0, stop=Vec::new(), ignore_eos=false, max_batch=8, prefill_chunk=512, logprobs=None, json_object=false, json_schema=None))]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompts: Vec<Vec<u32>>,
        max_new_tokens: i64,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        repetition_penalty: f32,
        seed: u64,
        stop: Vec<String>,
        ignore_eos: bool,
        max_batch: usize,
        prefill_chunk: usize,
        logprobs: Option<i64>,
        json_object: bool,
        json_schema: Option<String>,
    ) -> PyResult<(Vec<Bound<'py, PyDict>>, Bound<'py, PyDict>)> {
        let p = params(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, ignore_eos, logprobs, json_object, json_schema)
            .map_err(to_py_err)?;
        let n = prompts.len();
        let requests: Vec<Request> = prompts.into_iter().map(|prompt| Request { prompt, params: p.clone() }).collect();
        let work = Work::Generate { requests, max_batch: max_batch.max(1), prefill_chunk: prefill_chunk.max(1) };
        let mut outs: Vec<Option<Completion>> = vec![None; n];
        let out = run_on_loop(py, &self.lp, work, |i, c| {
            if let Some(slot) = outs.get_mut(i) {
                *slot = Some(c);
            }
        })?;
        let Output::Generated(stats) = out else {
            return Err(loglm_err("InternalError", "the engine loop answered a generation with another output".into()));
        };
        let dicts = outs
            .iter()
            .map(|c| match c {
                Some(c) => completion_dict(py, c),
                None => Err(loglm_err("InternalError", "a request produced no completion".into())),
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok((dicts, stats_dict(py, &stats)?))
    }

    /// Submit several requests (each with its own sampling settings, a dict
    /// as `generate`'s keyword arguments) to the engine loop, where they join
    /// the running batch; returns a [`PyStream`] of `(index, piece, completion)`
    /// events: a text piece of request `index` (`completion` None), or its
    /// completion dict when it finishes.
    #[pyo3(signature = (prompts, params, *, max_batch=8, prefill_chunk=512))]
    fn submit(
        &self,
        prompts: Vec<Vec<u32>>,
        params: Vec<Bound<'_, PyDict>>,
        max_batch: usize,
        prefill_chunk: usize,
    ) -> PyResult<PyStream> {
        if prompts.len() != params.len() {
            return Err(to_py_err(Error::InvalidArgument(format!(
                "{} prompts but {} parameter sets",
                prompts.len(),
                params.len()
            ))));
        }
        if prompts.is_empty() {
            return Err(to_py_err(Error::InvalidArgument("empty batch: give at least one prompt".into())));
        }
        let mut requests = Vec::with_capacity(prompts.len());
        for (i, (prompt, d)) in prompts.into_iter().zip(params.iter()).enumerate() {
            let p = params_from_dict(d).map_err(|e| {
                Python::with_gil(|py| {
                    let msg = format!("request {i}: {}", e.value(py));
                    PyErr::from_type(e.get_type(py), msg)
                })
            })?;
            let req = Request { prompt, params: p };
            self.inner.check_request(&req).map_err(|e| match e {
                Error::InvalidArgument(m) => to_py_err(Error::InvalidArgument(format!("request {i}: {m}"))),
                other => to_py_err(other),
            })?;
            requests.push(req);
        }
        let work = Work::Generate { requests, max_batch: max_batch.max(1), prefill_chunk: prefill_chunk.max(1) };
        let Handle { events, cancel } = self.lp.submit(work).map_err(to_py_err)?;
        Ok(PyStream {
            rx: Mutex::new(Some(events)),
            cancel,
            stats: Mutex::new(None),
            error: Mutex::new(None),
            done: AtomicBool::new(false),
        })
    }

    /// Figures of the engine loop: `running` and `waiting` sequences, and
    /// totals of `decode_steps`, `decode_tokens`, `prefill_tokens`, `submitted` requests.
    fn loop_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lp.stats();
        let d = PyDict::new(py);
        d.set_item("running", s.running.load(Ordering::Relaxed))?;
        d.set_item("waiting", s.waiting.load(Ordering::Relaxed))?;
        d.set_item("decode_steps", s.decode_steps.load(Ordering::Relaxed))?;
        d.set_item("decode_tokens", s.decode_tokens.load(Ordering::Relaxed))?;
        d.set_item("prefill_tokens", s.prefill_tokens.load(Ordering::Relaxed))?;
        d.set_item("submitted", s.submitted.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// Logits of every position of `tokens`, as a float32 array `[len(tokens), vocab]`.
    #[pyo3(signature = (tokens, *, prefill_chunk=512))]
    fn logits<'py>(&self, py: Python<'py>, tokens: Vec<u32>, prefill_chunk: usize) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let n = tokens.len();
        let vocab = self.inner.config().vocab_size;
        let work = Work::Logits { tokens, prefill_chunk: prefill_chunk.max(1) };
        let Output::Logits(data) = run_on_loop(py, &self.lp, work, |_, _| {})? else {
            return Err(loglm_err("InternalError", "the engine loop answered logits with another output".into()));
        };
        let arr = PyArray1::from_vec(py, data);
        arr.reshape([n, vocab])
    }

    /// Log-probability of each token of each choice, continuing `prompt`.
    #[pyo3(signature = (prompt, choices, *, prefill_chunk=512))]
    fn score_choices(&self, py: Python<'_>, prompt: Vec<u32>, choices: Vec<Vec<u32>>, prefill_chunk: usize) -> PyResult<Vec<Vec<f64>>> {
        let work = Work::Score { prompts: vec![prompt], splits: None, choices, prefill_chunk: prefill_chunk.max(1) };
        match run_on_loop(py, &self.lp, work, |_, _| {})? {
            Output::Scores(mut s) if s.len() == 1 => Ok(s.remove(0)),
            _ => Err(loglm_err("InternalError", "the engine loop answered scoring with another output".into())),
        }
    }

    /// `score_choices` for many prompts; `splits[i]` tokens of prompt `i` are a
    /// prefix shared with other prompts, prefilled once (see the Rust docs).
    #[pyo3(signature = (prompts, splits, choices, *, prefill_chunk=512))]
    fn score_choices_split(
        &self,
        py: Python<'_>,
        prompts: Vec<Vec<u32>>,
        splits: Vec<usize>,
        choices: Vec<Vec<u32>>,
        prefill_chunk: usize,
    ) -> PyResult<Vec<Vec<Vec<f64>>>> {
        let work = Work::Score { prompts, splits: Some(splits), choices, prefill_chunk: prefill_chunk.max(1) };
        match run_on_loop(py, &self.lp, work, |_, _| {})? {
            Output::Scores(s) => Ok(s),
            _ => Err(loglm_err("InternalError", "the engine loop answered scoring with another output".into())),
        }
    }
}

/// The one stream type: the events of a request submitted to the engine loop,
/// `(index, piece, None)` for text and `(index, "", completion_dict)` when
/// request `index` finishes. After it is exhausted, `stats()` gives the batch
/// figures. Closing it (or dropping it, or Ctrl-C while it waits) cancels
/// whatever of the request still runs.
#[pyclass(module = "loglm._loglm", name = "Stream", frozen)]
pub struct PyStream {
    rx: Mutex<Option<Receiver<Event>>>,
    cancel: Arc<AtomicBool>,
    stats: Mutex<Option<BatchStats>>,
    /// An error that ended the request after events already handed out by `poll`.
    error: Mutex<Option<Error>>,
    done: AtomicBool,
}

fn lock_err() -> PyErr {
    loglm_err("InternalError", "stream lock poisoned".into())
}

impl PyStream {
    /// One event as a Python tuple; `None` for the end (stats stored, `done` set).
    fn convert<'py>(&self, py: Python<'py>, ev: Event) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match ev {
            Event::Piece(i, s) => Ok(Some(PyTuple::new(
                py,
                [i.into_pyobject(py)?.into_any(), s.into_pyobject(py)?.into_any(), py.None().into_bound(py)],
            )?)),
            Event::Finished(i, c) => {
                let d = completion_dict(py, &c)?;
                Ok(Some(PyTuple::new(py, [i.into_pyobject(py)?.into_any(), "".into_pyobject(py)?.into_any(), d.into_any()])?))
            }
            Event::Done(r) => {
                self.done.store(true, Ordering::Relaxed);
                match r {
                    Ok(Output::Generated(st)) => {
                        *self.stats.lock().map_err(|_| lock_err())? = Some(st);
                        Ok(None)
                    }
                    Ok(_) => Err(loglm_err("InternalError", "a generation ended with another output".into())),
                    Err(e) => Err(to_py_err(e)),
                }
            }
        }
    }
}

#[pymethods]
impl PyStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        if let Some(e) = self.error.lock().map_err(|_| lock_err())?.take() {
            return Err(to_py_err(e));
        }
        if self.done.load(Ordering::Relaxed) {
            return Err(PyStopIteration::new_err(()));
        }
        let mut slot = self.rx.lock().map_err(|_| lock_err())?;
        let ev = recv_interruptible(py, &mut slot, &self.cancel, "stream").inspect_err(|_| {
            self.done.store(true, Ordering::Relaxed);
        })?;
        match self.convert(py, ev)? {
            Some(t) => Ok(t),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// The events available now, waiting up to `timeout` seconds (GIL
    /// released) for the first; `[]` after a timeout or once the stream is
    /// exhausted (see `finished`). For event loops that poll from a thread.
    #[pyo3(signature = (timeout=0.1))]
    fn poll<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        if let Some(e) = self.error.lock().map_err(|_| lock_err())?.take() {
            return Err(to_py_err(e));
        }
        if self.done.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let wait = Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.0, 3600.0) } else { 0.0 });
        let mut slot = self.rx.lock().map_err(|_| lock_err())?;
        let Some(rx) = slot.take() else { return Ok(Vec::new()) };
        let (rx, first) = super::errors::without_gil(py, move || {
            let got = rx.recv_timeout(wait);
            (rx, got)
        });
        let mut evs = Vec::new();
        match first {
            Ok(ev) => evs.push(ev),
            Err(RecvTimeoutError::Timeout) => {
                *slot = Some(rx);
                return Ok(Vec::new());
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.done.store(true, Ordering::Relaxed);
                return Err(loglm_err("InternalError", "stream: the engine worker vanished".into()));
            }
        }
        while !matches!(evs.last(), Some(Event::Done(_))) {
            match rx.try_recv() {
                Ok(ev) => evs.push(ev),
                Err(_) => break,
            }
        }
        *slot = Some(rx);
        let mut out = Vec::with_capacity(evs.len());
        for ev in evs {
            if let (Event::Done(Err(_)), false) = (&ev, out.is_empty()) {
                // hand out what came first; the error is raised by the next call
                self.done.store(true, Ordering::Relaxed);
                if let Event::Done(Err(e)) = ev {
                    *self.error.lock().map_err(|_| lock_err())? = Some(e);
                }
                break;
            }
            match self.convert(py, ev)? {
                Some(t) => out.push(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// Whether the request has ended (all its events handed out).
    #[getter]
    fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// The batch figures (dict) once the stream is exhausted, else None.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let slot = self.stats.lock().map_err(|_| lock_err())?;
        slot.as_ref().map(|s| stats_dict(py, s)).transpose()
    }

    /// Cancel the request: the engine loop drops its sequences at the next step.
    fn close(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for PyStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// What this build of the extension contains.
#[pyfunction]
pub fn build_info<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("cuda", cfg!(feature = "cuda"))?;
    let mut compiled: Vec<&str> = Vec::new();
    if cfg!(target_feature = "avx2") {
        compiled.push("avx2");
    }
    if cfg!(target_feature = "fma") {
        compiled.push("fma");
    }
    if cfg!(target_feature = "f16c") {
        compiled.push("f16c");
    }
    if cfg!(target_feature = "avx512f") {
        compiled.push("avx512f");
    }
    if cfg!(target_feature = "neon") {
        compiled.push("neon");
    }
    d.set_item("cpu_features", compiled)?;
    d.set_item("kernels", crate::model::quant::simd_level())?;
    d.set_item("target", std::env::consts::ARCH)?;
    d.set_item("debug", cfg!(debug_assertions))?;
    Ok(d)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyStream>()?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(check_json_schema, m)?)?;
    Ok(())
}
