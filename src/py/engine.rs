//! Python handle of [`crate::engine::Engine`]: loading, tokenization, chat
//! rendering, batched generation, streaming and choice scoring. Prompts and
//! results cross as plain lists / dicts; `loglm.model.LogLM` builds the typed
//! results. Long calls run on a worker thread while the calling thread waits
//! without the GIL and checks for Ctrl-C every 50 ms.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{loglm_err, panic_err, to_py_err};
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
            let (back, got) = py.allow_threads(move || {
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
                        let _ = py.allow_threads(move || rx.recv());
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

/// A loaded model (weights + tokenizer), shared by every call and thread.
#[pyclass(module = "loglm._loglm", name = "Engine", frozen)]
pub struct PyEngine {
    inner: Arc<Engine>,
}

#[pymethods]
impl PyEngine {
    #[staticmethod]
    #[pyo3(signature = (path, *, device="cpu".to_string(), threads=None, dtype="auto".to_string(), context_length=None, tokenizer=None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        device: String,
        threads: Option<usize>,
        dtype: String,
        context_length: Option<usize>,
        tokenizer: Option<PathBuf>,
    ) -> PyResult<Self> {
        let opts = LoadOptions { device, threads, dtype, context_length, tokenizer };
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
        d.set_item("weight_bytes", e.backend.weight_bytes())?;
        d.set_item("weight_types", e.backend.weight_types())?;
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

    /// Log-probability of each token of each choice, continuing `prompt`.
    #[pyo3(signature = (prompt, choices, *, prefill_chunk=512))]
    fn score_choices(&self, py: Python<'_>, prompt: Vec<u32>, choices: Vec<Vec<u32>>, prefill_chunk: usize) -> PyResult<Vec<Vec<f64>>> {
        let e = self.inner.clone();
        let sched = SchedulerConfig { max_batch: 1, prefill_chunk: prefill_chunk.max(1) };
        run_interruptible(py, move |cancel| {
            e.score_choices(&prompt, &choices, &sched, &CancelFlag(cancel))
        })
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
        let Some(mut rx) = slot.take() else {
            return Err(PyStopIteration::new_err(()));
        };
        let out = loop {
            let (back, got) = py.allow_threads(move || {
                let got = rx.recv_timeout(POLL);
                (rx, got)
            });
            rx = back;
            match got {
                Ok(StreamEvent::Piece(s)) => break Ok(s),
                Ok(StreamEvent::Done(r)) => {
                    self.done.store(true, Ordering::Relaxed);
                    match r {
                        Ok(c) => {
                            if let Ok(mut res) = self.result.lock() {
                                *res = Some(c);
                            }
                            break Err(PyStopIteration::new_err(()));
                        }
                        Err(e) => break Err(to_py_err(e)),
                    }
                }
                Ok(StreamEvent::Panic(msg)) => {
                    self.done.store(true, Ordering::Relaxed);
                    break Err(loglm_err(
                        "InternalError",
                        format!("Rust panic inside loglm (this is a bug, please report it): {msg}"),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        self.cancel.store(true, Ordering::Relaxed);
                        self.done.store(true, Ordering::Relaxed);
                        break Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.done.store(true, Ordering::Relaxed);
                    break Err(loglm_err("InternalError", "stream worker vanished".into()));
                }
            }
        };
        *slot = Some(rx);
        out
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
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}
