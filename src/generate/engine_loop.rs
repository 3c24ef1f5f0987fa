//! The engine loop: one long-lived thread per loaded model that owns every
//! running sequence. Callers [`EngineLoop::submit`] work (a generation of one
//! or more prompts, each with its own sampling settings and stop rules; choice
//! scoring; logits) and get a [`Handle`] whose channel delivers text pieces as
//! they are decoded and the result at the end; [`Handle::cancel`] (or dropping
//! the handle's receiver) makes the loop drop the request at its next step,
//! freeing its KV caches.
//!
//! The shape is mistral.rs's `Engine::run` and vLLM's `LLMEngine.step`: a
//! loop that, between decode steps, takes new submissions from a channel,
//! drops cancelled requests, admits waiting sequences into the running batch
//! (each prefilled on its own, as in [`super::generate`]), runs at most one
//! slice of other work (choice scoring of up to [`SCORE_SLICE`] prompts), and
//! then advances every running sequence one token in a single batched decode
//! step ([`Path::Rows`]). Since prefill is per sequence and decode runs the
//! per-row kernels, a sequence's tokens do not depend on what else is in the
//! batch: requests that meet in the loop get the results they get alone.
//!
//! `max_batch` is a request's own limit: its sequences are admitted only
//! while fewer than `max_batch` sequences (of any request) are running. A
//! panic inside a step fails the requests it touched and the loop goes on.
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{
    check_request, check_scoring, logits, prefill, score_choices, score_choices_split, BatchStats, CancelFlag,
    Completion, Request, SchedulerConfig, Seq, Sink, Vocab,
};
use crate::error::{Error, Result};
use crate::model::backend::LanguageModel;
use crate::model::forward::{Chunk, Logits};
use crate::model::linear::Path;

/// Prompts of a scoring request handled between two decode steps: a long
/// scoring call never holds up the running generations for long.
pub const SCORE_SLICE: usize = 64;

/// Work for the loop.
#[derive(Clone, Debug)]
pub enum Work {
    /// Generate a completion for every request.
    Generate { requests: Vec<Request>, max_batch: usize, prefill_chunk: usize },
    /// Log-probabilities of each choice's tokens after each prompt; with
    /// `splits`, [`score_choices_split`] (shared prefixes), else one prompt
    /// and [`score_choices`].
    Score { prompts: Vec<Vec<u32>>, splits: Option<Vec<usize>>, choices: Vec<Vec<u32>>, prefill_chunk: usize },
    /// Logits of every position of `tokens` ([`logits`]).
    Logits { tokens: Vec<u32>, prefill_chunk: usize },
}

/// The result of a finished request.
#[derive(Debug)]
pub enum Output {
    /// A generation: its batch figures (the completions came as [`Event::Finished`]).
    Generated(BatchStats),
    /// `[prompt][choice][token]` log-probabilities.
    Scores(Vec<Vec<Vec<f64>>>),
    Logits(Vec<f32>),
}

/// What a [`Handle`] receives, in order; [`Event::Done`] is always the last.
#[derive(Debug)]
pub enum Event {
    /// Text of request `index` (held back while it could begin a stop string).
    Piece(usize, String),
    /// Request `index` has finished (it left the batch).
    Finished(usize, Completion),
    Done(Result<Output>),
}

/// Figures of the loop as a whole, read by monitoring (the server's `/metrics`).
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Sequences in the running batch.
    pub running: AtomicUsize,
    /// Sequences and scoring requests waiting to be admitted.
    pub waiting: AtomicUsize,
    pub decode_steps: AtomicU64,
    pub decode_tokens: AtomicU64,
    pub prefill_tokens: AtomicU64,
    /// Requests submitted since the loop started.
    pub submitted: AtomicU64,
}

/// A submitted request: its events and its cancel switch. A request whose
/// receiver is dropped is cancelled at its next event; [`Handle::cancel`]
/// stops it at the loop's next step.
pub struct Handle {
    pub events: Receiver<Event>,
    pub cancel: Arc<AtomicBool>,
}

impl Handle {
    /// Ask the loop to drop this request at its next step.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The cancel switch, for callers that wait on `events` elsewhere.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

/// What travels down the submit channel.
pub struct Submission {
    work: Work,
    tx: Sender<Event>,
    cancel: Arc<AtomicBool>,
}

/// The body of a loop thread: runs [`run`] on the model it owns.
type Body = dyn Fn(Receiver<Submission>, Arc<LoopStats>) + Send + Sync;

/// The submitting side of a model's loop thread. Dropping it lets the thread
/// finish what it holds and exit (it is never joined while someone waits).
/// In a child process made by `fork()` (which copies no threads) the first
/// submission starts a fresh loop thread there; the model's own worker threads
/// are not restarted, so a model loaded before `fork()` is still not usable in
/// the child (as before the loop): load it after forking.
pub struct EngineLoop {
    inner: Mutex<Inner>,
    body: Arc<Body>,
    name: String,
}

struct Inner {
    tx: Sender<Submission>,
    /// The process the loop thread runs in.
    pid: u32,
    stats: Arc<LoopStats>,
}

fn start_thread(name: &str, body: &Arc<Body>) -> Result<Inner> {
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(LoopStats::default());
    let (st, b) = (stats.clone(), body.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || b(rx, st))
        .map_err(|e| Error::Internal(format!("cannot start the engine loop thread: {e}")))?;
    Ok(Inner { tx, pid: std::process::id(), stats })
}

impl EngineLoop {
    /// Start the loop thread; `body` runs [`run`] on the model it owns.
    pub fn spawn<F>(name: &str, body: F) -> Result<EngineLoop>
    where
        F: Fn(Receiver<Submission>, Arc<LoopStats>) + Send + Sync + 'static,
    {
        let body: Arc<Body> = Arc::new(body);
        let inner = start_thread(name, &body)?;
        Ok(EngineLoop { inner: Mutex::new(inner), body, name: name.to_string() })
    }

    /// Hand `work` to the loop; it joins the running batch at the next step.
    pub fn submit(&self, work: Work) -> Result<Handle> {
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let sub = Submission { work, tx, cancel: cancel.clone() };
        let mut inner = self.inner.lock().map_err(|_| Error::Internal("engine loop lock poisoned".into()))?;
        if inner.pid != std::process::id() {
            *inner = start_thread(&self.name, &self.body)?; // a forked child: its own loop
        }
        inner.tx.send(sub).map_err(|_| Error::Internal("the engine loop has stopped".into()))?;
        inner.stats.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(Handle { events: rx, cancel })
    }

    /// Cancel a submitted request (the same as [`Handle::cancel`]).
    pub fn cancel(&self, handle: &Handle) {
        handle.cancel();
    }

    /// The figures of the loop (of this process).
    pub fn stats(&self) -> Arc<LoopStats> {
        match self.inner.lock() {
            Ok(i) => i.stats.clone(),
            Err(p) => p.into_inner().stats.clone(),
        }
    }
}

/// A generation request inside the loop.
struct GenJob {
    tx: Sender<Event>,
    cancel: Arc<AtomicBool>,
    pending: VecDeque<(usize, Request)>,
    /// Its sequences in the running batch.
    running: usize,
    /// Its sequences not yet finished (waiting or running).
    remaining: usize,
    max_batch: usize,
    prefill_chunk: usize,
    stats: BatchStats,
}

/// A scoring or logits request inside the loop.
struct OtherJob {
    tx: Sender<Event>,
    cancel: Arc<AtomicBool>,
    work: Work,
    /// Scores of the prompts done so far.
    done: Vec<Vec<Vec<f64>>>,
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    Error::Internal(format!("Rust panic inside loglm (this is a bug, please report it): {msg}"))
}

/// Sends pieces to a request's channel; notes when nobody listens any more.
struct Pieces<'a> {
    tx: &'a Sender<Event>,
    gone: bool,
}

impl Sink for Pieces<'_> {
    fn piece(&mut self, index: usize, text: &str) {
        if self.tx.send(Event::Piece(index, text.to_string())).is_err() {
            self.gone = true;
        }
    }
}

struct State<C> {
    /// Generation requests in arrival order (admission is first come, first served).
    gen: Vec<(u64, GenJob)>,
    other: VecDeque<OtherJob>,
    /// The running batch: (request id, sequence).
    active: Vec<(u64, Seq<C>)>,
    next_id: u64,
}

impl<C> State<C> {
    fn idle(&self) -> bool {
        self.active.is_empty() && self.other.is_empty() && self.gen.iter().all(|(_, j)| j.pending.is_empty())
    }

    fn job(&mut self, id: u64) -> Option<&mut GenJob> {
        self.gen.iter_mut().find(|(i, _)| *i == id).map(|(_, j)| j)
    }

    /// End request `id` with `result` and drop its sequences.
    fn finish_gen(&mut self, id: u64, result: Result<Output>) {
        self.active.retain(|(j, _)| *j != id);
        if let Some(pos) = self.gen.iter().position(|(i, _)| *i == id) {
            let (_, job) = self.gen.remove(pos);
            let _ = job.tx.send(Event::Done(result));
        }
    }
}

/// Run the loop on `model` until the submit channel closes and nothing is left.
pub fn run<M: LanguageModel + ?Sized>(model: &M, vocab: &dyn Vocab, rx: Receiver<Submission>, stats: &LoopStats) {
    let mut st: State<M::Cache> = State { gen: Vec::new(), other: VecDeque::new(), active: Vec::new(), next_id: 0 };
    let mut open = true;
    loop {
        // Take new submissions: wait for one when there is nothing to do.
        if st.idle() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(sub) => take(model, &mut st, sub),
                Err(_) => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(sub) => take(model, &mut st, sub),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        drop_cancelled(&mut st);
        admit(model, vocab, &mut st, stats);
        if let Some(job) = st.other.pop_front() {
            other_slice(model, &mut st, job);
        }
        decode_step(model, vocab, &mut st, stats);
        stats.running.store(st.active.len(), Ordering::Relaxed);
        let waiting: usize = st.gen.iter().map(|(_, j)| j.pending.len()).sum::<usize>() + st.other.len();
        stats.waiting.store(waiting, Ordering::Relaxed);
    }
}

/// Check a submission and queue it (a bad one is answered at once).
fn take<M: LanguageModel + ?Sized>(model: &M, st: &mut State<M::Cache>, sub: Submission) {
    let Submission { work, tx, cancel } = sub;
    let checked = match &work {
        Work::Generate { requests, .. } if requests.is_empty() => {
            Err(Error::InvalidArgument("empty batch: give at least one prompt".into()))
        }
        Work::Generate { requests, .. } => requests.iter().try_for_each(|r| check_request(model, r)),
        Work::Score { prompts, splits, choices, .. } => {
            if prompts.is_empty() {
                Err(Error::InvalidArgument("empty batch: give at least one prompt".into()))
            } else if splits.as_ref().is_some_and(|s| s.len() != prompts.len()) {
                Err(Error::InvalidArgument(format!(
                    "{} splits for {} prompts",
                    splits.as_ref().map_or(0, |s| s.len()),
                    prompts.len()
                )))
            } else {
                prompts.iter().try_for_each(|p| check_scoring(model, p, choices))
            }
        }
        Work::Logits { .. } => Ok(()),
    };
    if let Err(e) = checked {
        let _ = tx.send(Event::Done(Err(e)));
        return;
    }
    match work {
        Work::Generate { requests, max_batch, prefill_chunk } => {
            let id = st.next_id;
            st.next_id += 1;
            let n = requests.len();
            st.gen.push((
                id,
                GenJob {
                    tx,
                    cancel,
                    pending: requests.into_iter().enumerate().collect(),
                    running: 0,
                    remaining: n,
                    max_batch: max_batch.max(1),
                    prefill_chunk: prefill_chunk.max(1),
                    stats: BatchStats::default(),
                },
            ));
        }
        other => st.other.push_back(OtherJob { tx, cancel, work: other, done: Vec::new() }),
    }
}

/// Forget cancelled requests; their KV caches are freed here.
fn drop_cancelled<C>(st: &mut State<C>) {
    let gone: Vec<u64> =
        st.gen.iter().filter(|(_, j)| j.cancel.load(Ordering::Relaxed)).map(|(i, _)| *i).collect();
    for id in gone {
        st.finish_gen(id, Err(Error::Interrupted));
    }
    st.other.retain(|j| {
        let keep = !j.cancel.load(Ordering::Relaxed);
        if !keep {
            let _ = j.tx.send(Event::Done(Err(Error::Interrupted)));
        }
        keep
    });
}

/// Admit waiting sequences, first come first served, while their requests' `max_batch` allows.
fn admit<M: LanguageModel + ?Sized>(model: &M, vocab: &dyn Vocab, st: &mut State<M::Cache>, stats: &LoopStats) {
    let vocab_size = model.config().vocab_size;
    let mut k = 0;
    while k < st.gen.len() {
        let id = st.gen[k].0;
        // Whether request `id` ended (and left `st.gen`) while admitting.
        let mut ended = false;
        loop {
            let running = st.active.len();
            let job = &mut st.gen[k].1;
            if job.running >= job.max_batch || running >= job.max_batch || job.cancel.load(Ordering::Relaxed) {
                break;
            }
            let Some((index, req)) = job.pending.pop_front() else { break };
            let t0 = Instant::now();
            let (chunk, cancel) = (job.prefill_chunk, job.cancel.clone());
            let started = catch_unwind(AssertUnwindSafe(|| -> Result<(Seq<M::Cache>, u32)> {
                let mut cache = model.new_cache(req.prompt.len() + req.params.max_new_tokens)?;
                let mut logits = prefill(model, &mut cache, &req.prompt, chunk, false, &CancelFlag(&cancel))?;
                let mut seq = Seq::new(index, cache, req, vocab_size, vocab);
                let tok = seq.sample(&mut logits, vocab);
                Ok((seq, tok))
            }))
            .unwrap_or_else(|p| Err(panic_error(p)));
            let accepted = started.and_then(|(mut seq, tok)| {
                seq.prefill_secs = t0.elapsed().as_secs_f64();
                job.stats.prefill_tokens += seq.prompt_tokens;
                job.stats.prefill_secs += seq.prefill_secs;
                stats.prefill_tokens.fetch_add(seq.prompt_tokens as u64, Ordering::Relaxed);
                let mut sink = Pieces { tx: &job.tx, gone: false };
                let r = catch_unwind(AssertUnwindSafe(|| seq.accept(tok, vocab, &mut sink)))
                    .unwrap_or_else(|p| Err(panic_error(p)));
                if sink.gone {
                    job.cancel.store(true, Ordering::Relaxed);
                }
                r.map(|()| seq)
            });
            match accepted {
                Err(Error::Interrupted) => break, // dropped at the next step
                Err(e) => {
                    st.finish_gen(id, Err(e));
                    ended = true;
                    break;
                }
                Ok(seq) if seq.finished.is_some() => {
                    if complete(st, id, seq) {
                        ended = true;
                        break;
                    }
                }
                Ok(seq) => {
                    job.running += 1;
                    st.active.push((id, seq));
                }
            }
        }
        if !ended {
            k += 1;
        }
    }
}

/// Hand a finished sequence to its request; true when that ended the request.
fn complete<C: crate::model::backend::SeqCache>(st: &mut State<C>, id: u64, seq: Seq<C>) -> bool {
    let Some(job) = st.job(id) else { return false };
    let i = seq.index;
    if job.tx.send(Event::Finished(i, seq.into_completion())).is_err() {
        job.cancel.store(true, Ordering::Relaxed);
    }
    job.remaining -= 1;
    if job.remaining == 0 {
        let stats = std::mem::take(&mut job.stats);
        st.finish_gen(id, Ok(Output::Generated(stats)));
        return true;
    }
    false
}

/// One slice of a scoring / logits request; it goes back in the queue when not done.
fn other_slice<M: LanguageModel + ?Sized>(model: &M, st: &mut State<M::Cache>, mut job: OtherJob) {
    let flag = CancelFlag(&job.cancel);
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Output>> {
        match &job.work {
            Work::Logits { tokens, prefill_chunk } => Ok(Some(Output::Logits(logits(model, tokens, *prefill_chunk, &flag)?))),
            Work::Score { prompts, splits: None, choices, prefill_chunk } => {
                let sched = SchedulerConfig { max_batch: 1, prefill_chunk: *prefill_chunk };
                let mut out = Vec::with_capacity(prompts.len());
                for p in prompts {
                    out.push(score_choices(model, p, choices, &sched, &flag)?);
                }
                Ok(Some(Output::Scores(out)))
            }
            Work::Score { prompts, splits: Some(splits), choices, prefill_chunk } => {
                let sched = SchedulerConfig { max_batch: 1, prefill_chunk: *prefill_chunk };
                let a = job.done.len();
                let b = (a + SCORE_SLICE).min(prompts.len());
                let part = score_choices_split(model, &prompts[a..b], &splits[a..b], choices, &sched, &flag)?;
                job.done.extend(part);
                if job.done.len() == prompts.len() {
                    Ok(Some(Output::Scores(std::mem::take(&mut job.done))))
                } else {
                    Ok(None)
                }
            }
            Work::Generate { .. } => Err(Error::Internal("a generation in the scoring queue".into())),
        }
    }))
    .unwrap_or_else(|p| Err(panic_error(p)));
    match r {
        Ok(None) => st.other.push_back(job),
        Ok(Some(out)) => {
            let _ = job.tx.send(Event::Done(Ok(out)));
        }
        Err(e) => {
            let _ = job.tx.send(Event::Done(Err(e)));
        }
    }
}

/// Advance every running sequence by one token.
fn decode_step<M: LanguageModel + ?Sized>(model: &M, vocab: &dyn Vocab, st: &mut State<M::Cache>, stats: &LoopStats) {
    if st.active.is_empty() {
        return;
    }
    let t0 = Instant::now();
    let State { gen, active, .. } = &mut *st;
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let last: Vec<[u32; 1]> = active.iter().map(|(_, s)| [s.last]).collect();
        let mut chunks: Vec<Chunk<'_, M::Cache>> = active
            .iter_mut()
            .zip(last.iter())
            .map(|((_, s), t)| Chunk { cache: &mut s.cache, tokens: t, logits: Logits::Last })
            .collect();
        let outs = model.forward_chunks_on(&mut chunks, Path::Rows)?;
        drop(chunks);
        for ((id, s), mut o) in active.iter_mut().zip(outs) {
            let tok = s.sample(&mut o.data, vocab);
            let Some((_, job)) = gen.iter_mut().find(|(i, _)| *i == *id) else { continue };
            let mut sink = Pieces { tx: &job.tx, gone: false };
            s.accept(tok, vocab, &mut sink)?;
            if sink.gone {
                job.cancel.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }))
    .unwrap_or_else(|p| Err(panic_error(p)));
    let dt = t0.elapsed().as_secs_f64();
    if let Err(e) = r {
        // The step failed as a whole: every request in it fails with the same error.
        let mut ids: Vec<u64> = st.active.iter().map(|(i, _)| *i).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let msg = match &e {
                Error::Internal(m) => Error::Internal(m.clone()),
                other => Error::Internal(format!("decode step failed: {other}")),
            };
            st.finish_gen(id, Err(msg));
        }
        return;
    }
    stats.decode_steps.fetch_add(1, Ordering::Relaxed);
    stats.decode_tokens.fetch_add(st.active.len() as u64, Ordering::Relaxed);
    for (id, job) in st.gen.iter_mut() {
        let n = st.active.iter().filter(|(i, _)| i == id).count();
        if n > 0 {
            job.stats.decode_steps += 1;
            job.stats.decode_tokens += n;
            job.stats.decode_secs += dt;
        }
    }
    let mut still = Vec::with_capacity(st.active.len());
    let mut finished = Vec::new();
    for (id, mut s) in st.active.drain(..) {
        s.decode_secs += dt;
        if s.finished.is_some() {
            finished.push((id, s));
        } else {
            still.push((id, s));
        }
    }
    st.active = still;
    for (id, s) in finished {
        if let Some(job) = st.job(id) {
            job.running -= 1;
        }
        complete(st, id, s);
    }
}

#[cfg(test)]
mod tests;
