//! Python handle of [`crate::engine::Engine`]: loading, tokenization, chat
//! rendering, batched generation, streaming and choice scoring. Prompts and
//! results cross as plain lists / dicts; `loglm.model.LogLM` builds the typed
//! results. Long calls run on a worker thread while the calling thread waits
//! without the GIL and checks for Ctrl-C every 50 ms. `stream_batch` runs many
//! requests, each with its own sampling settings, in one scheduler call and
//! reports every text piece and every finished request as it happens (the
//! HTTP server in `loglm.serve` batches concurrent clients through it).
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

use super::errors::{loglm_err, panic_err, panic_msg_err, to_py_err};
use crate::engine::{Engine, LoadOptions};
use crate::error::{Error, Result};
use crate::generate::{BatchStats, CancelFlag, Completion, Request, SamplingParams, SchedulerConfig, Sink};
use crate::tokenizer::ChatMessage;

const POLL: Duration = Duration::from_millis(50);

/// Run `f` on a worker thread; wait for it without the GIL, and on Ctrl-C
/// set the cancel flag, wait for the worker to stop and raise KeyboardInterrupt.
fn run_interruptible<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&AtomicBool) -> Result<T> + Send,
{
    let cancel = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let cancel_ref = &cancel;
        s.spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| f(cancel_ref)));
            let _ = tx.send(r);
        });
        let mut rx = rx;
        loop {
            // Receivers are not Sync: move it into the GIL-free closure and back.
            let (back, got) = super::errors::without_gil(py, move || {
                let got = rx.recv_timeout(POLL);
                (rx, got)
            });
            rx = back;
            match got {
                Ok(Ok(r)) => return r.map_err(to_py_err),
                Ok(Err(payload)) => return Err(panic_err(&payload)),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        cancel.store(true, Ordering::Relaxed);
                        let _ = super::errors::without_gil(py, move || rx.recv());
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(loglm_err("InternalError", "generation worker vanished".into()))
                }
            }
        }
    })
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
) -> Result<SamplingParams> {
    if max_new_tokens < 1 {
        return Err(Error::InvalidArgument(format!("max_new_tokens must be at least 1, got {max_new_tokens}")));
    }
    if top_k < 0 {
        return Err(Error::InvalidArgument(format!("top_k must be >= 0, got {top_k}")));
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
    };
    p.validate()?;
    Ok(p)
}

const PARAM_KEYS: [&str; 8] =
    ["max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop", "ignore_eos"];

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
    )
    .map_err(to_py_err)
}

/// A loaded model (weights + tokenizer), shared by every call and thread.
#[pyclass(module = "loglm._loglm", name = "Engine", frozen)]
pub struct PyEngine {
    inner: Arc<Engine>,
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
        let engine = run_interruptible(py, |_| Engine::load(&path, &opts))?;
        Ok(PyEngine { inner: Arc::new(engine) })
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
    #[pyo3(signature = (prompts, *, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0, stop=Vec::new(), ignore_eos=false, max_batch=8, prefill_chunk=512))]
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
    ) -> PyResult<(Vec<Bound<'py, PyDict>>, Bound<'py, PyDict>)> {
        let p = params(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, ignore_eos).map_err(to_py_err)?;
        let requests: Vec<Request> = prompts.into_iter().map(|prompt| Request { prompt, params: p.clone() }).collect();
        let sched = SchedulerConfig { max_batch: max_batch.max(1), prefill_chunk: prefill_chunk.max(1) };
        let e = self.inner.clone();
        let (outs, stats) = run_interruptible(py, move |cancel| e.generate(requests, &sched, &mut CancelFlag(cancel)))?;
        let dicts = outs.iter().map(|c| completion_dict(py, c)).collect::<PyResult<Vec<_>>>()?;
        Ok((dicts, stats_dict(py, &stats)?))
    }

    /// Start generating one prompt; returns an iterator of text pieces.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (prompt, *, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0, stop=Vec::new(), ignore_eos=false, prefill_chunk=512))]
    fn stream(
        &self,
        prompt: Vec<u32>,
        max_new_tokens: i64,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        repetition_penalty: f32,
        seed: u64,
        stop: Vec<String>,
        ignore_eos: bool,
        prefill_chunk: usize,
    ) -> PyResult<PyTokenStream> {
        let p = params(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, ignore_eos).map_err(to_py_err)?;
        let req = Request { prompt, params: p };
        self.inner.check_request(&req).map_err(to_py_err)?;
        let (tx, rx) = mpsc::channel::<StreamEvent>();
        let cancel = Arc::new(AtomicBool::new(false));
        let e = self.inner.clone();
        let c2 = cancel.clone();
        std::thread::Builder::new()
            .name("loglm-stream".into())
            .spawn(move || {
                let mut sink = ChannelSink { tx: tx.clone(), cancel: c2 };
                let sched = SchedulerConfig { max_batch: 1, prefill_chunk: prefill_chunk.max(1) };
                let r = catch_unwind(AssertUnwindSafe(|| e.generate(vec![req], &sched, &mut sink)));
                let msg = match r {
                    Ok(Ok((mut outs, _))) => StreamEvent::Done(Ok(outs.remove(0))),
                    Ok(Err(err)) => StreamEvent::Done(Err(err)),
                    Err(p) => StreamEvent::Panic(super::errors::panic_message(&p)),
                };
                let _ = tx.send(msg);
            })
            .map_err(|e| loglm_err("InternalError", format!("cannot start a thread: {e}")))?;
        Ok(PyTokenStream { rx: Mutex::new(Some(rx)), cancel, result: Mutex::new(None), done: AtomicBool::new(false) })
    }

    /// Run several requests (each with its own sampling settings, a dict as
    /// `generate`'s keyword arguments) in one scheduler call; returns an
    /// iterator of `(index, piece, completion)` events: a text piece of request
    /// `index` (`completion` None), or its completion dict when it finishes.
    #[pyo3(signature = (prompts, params, *, max_batch=8, prefill_chunk=512))]
    fn stream_batch(
        &self,
        prompts: Vec<Vec<u32>>,
        params: Vec<Bound<'_, PyDict>>,
        max_batch: usize,
        prefill_chunk: usize,
    ) -> PyResult<PyBatchStream> {
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
        let (tx, rx) = mpsc::channel::<BatchEvent>();
        let cancel = Arc::new(AtomicBool::new(false));
        let e = self.inner.clone();
        let c2 = cancel.clone();
        std::thread::Builder::new()
            .name("loglm-batch".into())
            .spawn(move || {
                let mut sink = BatchSink { tx: tx.clone(), cancel: c2 };
                let sched = SchedulerConfig { max_batch: max_batch.max(1), prefill_chunk: prefill_chunk.max(1) };
                let r = catch_unwind(AssertUnwindSafe(|| e.generate(requests, &sched, &mut sink)));
                let msg = match r {
                    Ok(Ok((_, stats))) => BatchEvent::End(Ok(stats)),
                    Ok(Err(err)) => BatchEvent::End(Err(err)),
                    Err(p) => BatchEvent::Panic(super::errors::panic_message(&p)),
                };
                let _ = tx.send(msg);
            })
            .map_err(|e| loglm_err("InternalError", format!("cannot start a thread: {e}")))?;
        Ok(PyBatchStream { rx: Mutex::new(Some(rx)), cancel, stats: Mutex::new(None), done: AtomicBool::new(false) })
    }

    /// Logits of every position of `tokens`, as a float32 array `[len(tokens), vocab]`.
    #[pyo3(signature = (tokens, *, prefill_chunk=512))]
    fn logits<'py>(&self, py: Python<'py>, tokens: Vec<u32>, prefill_chunk: usize) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let e = self.inner.clone();
        let n = tokens.len();
        let vocab = e.config().vocab_size;
        let data = run_interruptible(py, move |cancel| e.logits(&tokens, prefill_chunk, &CancelFlag(cancel)))?;
        let arr = PyArray1::from_vec(py, data);
        arr.reshape([n, vocab])
    }

    /// Log-probability of each token of each choice, continuing `prompt`.
    #[pyo3(signature = (prompt, choices, *, prefill_chunk=512))]
    fn score_choices(&self, py: Python<'_>, prompt: Vec<u32>, choices: Vec<Vec<u32>>, prefill_chunk: usize) -> PyResult<Vec<Vec<f64>>> {
        let e = self.inner.clone();
        let sched = SchedulerConfig { max_batch: 1, prefill_chunk: prefill_chunk.max(1) };
        run_interruptible(py, move |cancel| {
            e.score_choices(&prompt, &choices, &sched, &CancelFlag(cancel))
        })
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
        let e = self.inner.clone();
        let sched = SchedulerConfig { max_batch: 1, prefill_chunk: prefill_chunk.max(1) };
        run_interruptible(py, move |cancel| e.score_choices_split(&prompts, &splits, &choices, &sched, &CancelFlag(cancel)))
    }
}

enum StreamEvent {
    Piece(String),
    Done(Result<Completion>),
    Panic(String),
}

struct ChannelSink {
    tx: mpsc::Sender<StreamEvent>,
    cancel: Arc<AtomicBool>,
}

impl Sink for ChannelSink {
    fn piece(&mut self, _index: usize, text: &str) {
        if self.tx.send(StreamEvent::Piece(text.to_string())).is_err() {
            // The Python side is gone: stop generating.
            self.cancel.store(true, Ordering::Relaxed);
        }
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Iterator over the text pieces of a streamed generation. After it is
/// exhausted, `result()` gives the completion dict.
#[pyclass(module = "loglm._loglm", name = "TokenStream", frozen)]
pub struct PyTokenStream {
    rx: Mutex<Option<Receiver<StreamEvent>>>,
    cancel: Arc<AtomicBool>,
    result: Mutex<Option<Completion>>,
    done: AtomicBool,
}

/// Next event of a worker thread, waited for with the GIL released; Ctrl-C
/// between polls cancels the worker. The receiver is handed back so the
/// caller can keep it for the next call.
fn next_event<T: Send>(
    py: Python<'_>,
    mut rx: Receiver<T>,
    cancel: &AtomicBool,
    done: &AtomicBool,
    what: &str,
) -> (Receiver<T>, PyResult<T>) {
    loop {
        let (back, got) = super::errors::without_gil(py, move || {
            let got = rx.recv_timeout(POLL);
            (rx, got)
        });
        rx = back;
        match got {
            Ok(ev) => return (rx, Ok(ev)),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    cancel.store(true, Ordering::Relaxed);
                    done.store(true, Ordering::Relaxed);
                    return (rx, Err(e));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                done.store(true, Ordering::Relaxed);
                return (rx, Err(loglm_err("InternalError", format!("{what} worker vanished"))));
            }
        }
    }
}

#[pymethods]
impl PyTokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<String> {
        if self.done.load(Ordering::Relaxed) {
            return Err(PyStopIteration::new_err(()));
        }
        let mut slot = self.rx.lock().map_err(|_| loglm_err("InternalError", "stream lock poisoned".into()))?;
        let Some(rx) = slot.take() else {
            return Err(PyStopIteration::new_err(()));
        };
        let (back, got) = next_event(py, rx, &self.cancel, &self.done, "stream");
        *slot = Some(back);
        match got? {
            StreamEvent::Piece(s) => Ok(s),
            StreamEvent::Done(r) => {
                self.done.store(true, Ordering::Relaxed);
                let c = r.map_err(to_py_err)?;
                if let Ok(mut res) = self.result.lock() {
                    *res = Some(c);
                }
                Err(PyStopIteration::new_err(()))
            }
            StreamEvent::Panic(msg) => {
                self.done.store(true, Ordering::Relaxed);
                Err(panic_msg_err(&msg))
            }
        }
    }

    /// The completion (dict) once the stream is exhausted, else None.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let slot = self.result.lock().map_err(|_| loglm_err("InternalError", "stream lock poisoned".into()))?;
        slot.as_ref().map(|c| completion_dict(py, c)).transpose()
    }

    /// Stop the generation early.
    fn close(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for PyTokenStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

enum BatchEvent {
    Piece(usize, String),
    Finished(usize, Completion),
    End(Result<BatchStats>),
    Panic(String),
}

struct BatchSink {
    tx: mpsc::Sender<BatchEvent>,
    cancel: Arc<AtomicBool>,
}

impl Sink for BatchSink {
    fn piece(&mut self, index: usize, text: &str) {
        if self.tx.send(BatchEvent::Piece(index, text.to_string())).is_err() {
            self.cancel.store(true, Ordering::Relaxed);
        }
    }
    fn done(&mut self, index: usize, completion: &Completion) {
        if self.tx.send(BatchEvent::Finished(index, completion.clone())).is_err() {
            self.cancel.store(true, Ordering::Relaxed);
        }
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Iterator over the events of a batched generation: `(index, piece, None)`
/// for text, `(index, "", completion_dict)` when request `index` finishes.
/// After it is exhausted, `stats()` gives the batch figures.
#[pyclass(module = "loglm._loglm", name = "BatchStream", frozen)]
pub struct PyBatchStream {
    rx: Mutex<Option<Receiver<BatchEvent>>>,
    cancel: Arc<AtomicBool>,
    stats: Mutex<Option<BatchStats>>,
    done: AtomicBool,
}

#[pymethods]
impl PyBatchStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        if self.done.load(Ordering::Relaxed) {
            return Err(PyStopIteration::new_err(()));
        }
        let mut slot = self.rx.lock().map_err(|_| loglm_err("InternalError", "stream lock poisoned".into()))?;
        let Some(rx) = slot.take() else {
            return Err(PyStopIteration::new_err(()));
        };
        let (back, got) = next_event(py, rx, &self.cancel, &self.done, "batch");
        *slot = Some(back);
        match got? {
            BatchEvent::Piece(i, s) => {
                PyTuple::new(py, [i.into_pyobject(py)?.into_any(), s.into_pyobject(py)?.into_any(), py.None().into_bound(py)])
            }
            BatchEvent::Finished(i, c) => {
                let d = completion_dict(py, &c)?;
                PyTuple::new(py, [i.into_pyobject(py)?.into_any(), "".into_pyobject(py)?.into_any(), d.into_any()])
            }
            BatchEvent::End(r) => {
                self.done.store(true, Ordering::Relaxed);
                let st = r.map_err(to_py_err)?;
                if let Ok(mut slot) = self.stats.lock() {
                    *slot = Some(st);
                }
                Err(PyStopIteration::new_err(()))
            }
            BatchEvent::Panic(msg) => {
                self.done.store(true, Ordering::Relaxed);
                Err(panic_msg_err(&msg))
            }
        }
    }

    /// The batch figures (dict) once the stream is exhausted, else None.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let slot = self.stats.lock().map_err(|_| loglm_err("InternalError", "stream lock poisoned".into()))?;
        slot.as_ref().map(|s| stats_dict(py, s)).transpose()
    }

    /// Stop the whole batch early.
    fn close(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for PyBatchStream {
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
    m.add_class::<PyTokenStream>()?;
    m.add_class::<PyBatchStream>()?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}
