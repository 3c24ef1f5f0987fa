//! Generation: a continuous-batching scheduler over any [`LanguageModel`]
//! (the native CPU engine or the candle device path), stop rules, streaming,
//! and choice scoring.
//!
//! The scheduler follows TGI's `queue.rs` / mistral.rs: requests wait in a
//! queue; between decode steps new sequences are admitted (up to `max_batch`
//! running at once) and prefilled in chunks of at most `prefill_chunk` tokens
//! (the token budget of one step), then all running sequences advance one token
//! in a single batched forward step. Sequences finish on their own (EOS, stop
//! string, length) and leave the batch; each owns its KV cache, preallocated
//! for `prompt + max_new_tokens` positions.
//!
//! Prefill and decode never share a step, a prompt is prefilled on its own,
//! and decode steps run the per-row decode kernels however many sequences
//! share them ([`Path::Rows`]), so a sequence's output does not depend on what
//! else is in the batch: batched generation equals one-by-one generation.
pub mod engine_loop;
pub mod json;
pub mod schema;
pub mod sampler;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::backend::{LanguageModel, SeqCache};
use crate::model::forward::{Chunk, Logits};
use crate::model::linear::Path;
pub use sampler::{SamplingParams, Sampler, TokenLogprob};

/// Incremental detokenizer of one sequence.
pub trait TextDecoder: Send {
    /// Text that became complete with this token (may be empty).
    fn push(&mut self, id: u32) -> Result<String>;
    /// Whatever is still buffered at the end.
    fn finish(&mut self) -> Result<String>;
}

/// What generation needs from a tokenizer.
pub trait Vocab: Sync {
    fn is_eos(&self, id: u32) -> bool;
    fn decoder(&self) -> Box<dyn TextDecoder>;
    /// The bytes a token stands for; `None` for control tokens (JSON mode masks with it).
    fn token_bytes(&self, _id: u32) -> Option<&[u8]> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token.
    Eos,
    /// A stop string was produced (it is cut from the text).
    StopString,
    /// `max_new_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Eos => "stop",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
}

#[derive(Clone, Debug)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
    /// Seconds spent prefilling this sequence's prompt.
    pub prefill_secs: f64,
    /// Seconds of the decode steps this sequence took part in.
    pub decode_secs: f64,
    /// One per token of `tokens`, when the request asked for log-probabilities.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_batch: usize,
    pub prefill_chunk: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { max_batch: 8, prefill_chunk: 512 }
    }
}

/// Receives streamed text and tells the scheduler when to give up.
pub trait Sink {
    fn piece(&mut self, _index: usize, _text: &str) {}
    /// Request `index` has finished (called as soon as it leaves the batch).
    fn done(&mut self, _index: usize, _completion: &Completion) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// A sink that only watches a cancellation flag.
pub struct CancelFlag<'a>(pub &'a AtomicBool);

impl Sink for CancelFlag<'_> {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Batch-level figures of one `generate` call.
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    pub prefill_tokens: usize,
    pub prefill_secs: f64,
    pub decode_tokens: usize,
    pub decode_secs: f64,
    pub decode_steps: usize,
}

struct Seq<C> {
    index: usize,
    cache: C,
    sampler: Sampler,
    decoder: Box<dyn TextDecoder>,
    text: String,
    /// Bytes of `text` already handed to the sink.
    emitted: usize,
    tokens: Vec<u32>,
    last: u32,
    prompt_tokens: usize,
    prefill_secs: f64,
    decode_secs: f64,
    max_stop: usize,
    finished: Option<FinishReason>,
    logprobs: Option<Vec<TokenLogprob>>,
    /// JSON mode / JSON Schema mode: where the output stands in its document.
    json: Option<schema::Constraint>,
}

impl<C: SeqCache> Seq<C> {
    /// A sequence whose prompt is in `cache`, ready for its first token.
    fn new(index: usize, cache: C, req: Request, vocab_size: usize, vocab: &dyn Vocab) -> Self {
        let max_stop = req.params.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let logprobs = req.params.logprobs.map(|_| Vec::new());
        let json = match &req.params.json_schema {
            Some(s) => Some(schema::Constraint::schema(s.clone())),
            None => req.params.json_object.then(|| schema::Constraint::Json(json::JsonState::new(true))),
        };
        Seq {
            index,
            cache,
            sampler: Sampler::new(req.params, vocab_size, &req.prompt),
            decoder: vocab.decoder(),
            text: String::new(),
            emitted: 0,
            tokens: Vec::new(),
            last: 0,
            prompt_tokens: req.prompt.len(),
            prefill_secs: 0.0,
            decode_secs: 0.0,
            max_stop,
            finished: None,
            logprobs,
            json,
        }
    }

    /// Choose the next token from this sequence's logits (noting its
    /// log-probability when asked for; within the JSON grammar in JSON mode).
    fn sample(&mut self, logits: &mut [f32], vocab: &dyn Vocab) -> u32 {
        let Some(n) = self.sampler.params().logprobs else {
            return self.choose(logits, vocab);
        };
        let raw = logits.to_vec();
        let tok = self.choose(logits, vocab);
        if let Some(l) = self.logprobs.as_mut() {
            l.push(sampler::token_logprob(&raw, tok, n));
        }
        tok
    }

    fn choose(&mut self, logits: &mut [f32], vocab: &dyn Vocab) -> u32 {
        let Some(js) = self.json.as_ref() else {
            return self.sampler.sample(logits);
        };
        let complete = js.is_complete();
        let allowed = |id: u32| {
            if vocab.is_eos(id) {
                complete
            } else {
                vocab.token_bytes(id).is_some_and(|b| js.accepts(b))
            }
        };
        let tok = match self.sampler.sample_allowed(logits, allowed) {
            Some(t) => t,
            // Nothing fits (a vocabulary without the needed bytes): end here.
            None => (0..logits.len() as u32).find(|&i| vocab.is_eos(i)).unwrap_or(0),
        };
        if let (Some(js), Some(b)) = (self.json.as_mut(), vocab.token_bytes(tok)) {
            if !vocab.is_eos(tok) {
                js.advance(b);
            }
        }
        tok
    }

    /// Take a sampled token: update text, check the stop rules, stream.
    fn accept(&mut self, tok: u32, vocab: &dyn Vocab, sink: &mut dyn Sink) -> Result<()> {
        let params = self.sampler.params();
        if vocab.is_eos(tok) && !params.ignore_eos {
            self.finished = Some(FinishReason::Eos);
            if let Some(l) = self.logprobs.as_mut() {
                l.pop();
            }
        } else {
            self.tokens.push(tok);
            self.last = tok;
            let piece = self.decoder.push(tok)?;
            let search_from = floor_boundary(&self.text, self.text.len().saturating_sub(self.max_stop));
            self.text.push_str(&piece);
            if let Some(cut) = find_stop(&self.text, search_from, &params.stop) {
                self.text.truncate(cut);
                self.finished = Some(FinishReason::StopString);
            } else if self.tokens.len() >= params.max_new_tokens || self.cache.len() >= self.cache.capacity() {
                self.finished = Some(FinishReason::Length);
            }
        }
        if self.finished.is_some() && self.finished != Some(FinishReason::StopString) {
            let rest = self.decoder.finish()?;
            self.text.push_str(&rest);
        }
        // Hold back text that could still turn out to start a stop string.
        let safe = if self.finished.is_some() || self.max_stop == 0 {
            self.text.len()
        } else {
            floor_boundary(&self.text, self.text.len().saturating_sub(self.max_stop - 1))
        };
        if safe > self.emitted {
            sink.piece(self.index, &self.text[self.emitted..safe]);
            self.emitted = safe;
        }
        Ok(())
    }

    fn into_completion(self) -> Completion {
        Completion {
            text: self.text,
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            finish_reason: self.finished.unwrap_or(FinishReason::Length),
            prefill_secs: self.prefill_secs,
            decode_secs: self.decode_secs,
            logprobs: self.logprobs,
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn find_stop(text: &str, from: usize, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text[from..].find(s.as_str()).map(|i| i + from)).min()
}

/// Check a request against the model before any work starts.
pub fn check_request<M: LanguageModel + ?Sized>(model: &M, r: &Request) -> Result<()> {
    r.params.validate()?;
    if r.prompt.is_empty() {
        return Err(Error::InvalidArgument("empty prompt: nothing to condition on".into()));
    }
    let need = r.prompt.len() + r.params.max_new_tokens;
    if need > model.context_length() {
        return Err(Error::ContextLength {
            prompt_tokens: r.prompt.len(),
            max_new_tokens: r.params.max_new_tokens,
            context_length: model.context_length(),
        });
    }
    Ok(())
}

/// Prefill `tokens` into `cache` in chunks; returns the last token's logits.
/// `dense`: compute even a short chunk as a long prefill is ([`Path::Dense`]).
fn prefill<M: LanguageModel + ?Sized>(
    model: &M,
    cache: &mut M::Cache,
    tokens: &[u32],
    chunk: usize,
    dense: bool,
    sink: &dyn Sink,
) -> Result<Vec<f32>> {
    let chunk = chunk.max(1);
    let mut last = Vec::new();
    let n = tokens.len();
    let mut start = 0;
    while start < n {
        if sink.cancelled() {
            return Err(Error::Interrupted);
        }
        let end = (start + chunk).min(n);
        let mode = if end == n { Logits::Last } else { Logits::None };
        let mut chunks = [Chunk { cache, tokens: &tokens[start..end], logits: mode }];
        let path = if dense { Path::Dense } else { Path::Auto };
        let mut out = model.forward_chunks_on(&mut chunks, path)?;
        if end == n {
            last = std::mem::take(&mut out[0].data);
        }
        start = end;
    }
    Ok(last)
}

/// Generate completions for all requests, batching up to `sched.max_batch`
/// sequences per decode step. Results are in request order.
pub fn generate<M: LanguageModel + ?Sized>(
    model: &M,
    vocab: &dyn Vocab,
    requests: Vec<Request>,
    sched: &SchedulerConfig,
    sink: &mut dyn Sink,
) -> Result<(Vec<Completion>, BatchStats)> {
    if requests.is_empty() {
        return Err(Error::InvalidArgument("empty batch: give at least one prompt".into()));
    }
    for r in &requests {
        check_request(model, r)?;
    }
    let max_batch = sched.max_batch.max(1);
    let mut results: Vec<Option<Completion>> = vec![None; requests.len()];
    let mut pending: VecDeque<(usize, Request)> = requests.into_iter().enumerate().collect();
    let mut active: Vec<Seq<M::Cache>> = Vec::new();
    let mut stats = BatchStats::default();
    let vocab_size = model.config().vocab_size;
    loop {
        // Admit and prefill new sequences.
        while active.len() < max_batch {
            let Some((index, req)) = pending.pop_front() else { break };
            let t0 = Instant::now();
            let capacity = req.prompt.len() + req.params.max_new_tokens;
            let mut cache = model.new_cache(capacity)?;
            let mut logits = prefill(model, &mut cache, &req.prompt, sched.prefill_chunk, false, sink)?;
            let mut seq = Seq::new(index, cache, req, vocab_size, vocab);
            let tok = seq.sample(&mut logits, vocab);
            seq.prefill_secs = t0.elapsed().as_secs_f64();
            stats.prefill_tokens += seq.prompt_tokens;
            stats.prefill_secs += seq.prefill_secs;
            seq.accept(tok, vocab, sink)?;
            if seq.finished.is_some() {
                let i = seq.index;
                let c = seq.into_completion();
                sink.done(i, &c);
                results[i] = Some(c);
            } else {
                active.push(seq);
            }
        }
        if active.is_empty() {
            break;
        }
        if sink.cancelled() {
            return Err(Error::Interrupted);
        }
        // One decode step for every running sequence.
        let t0 = Instant::now();
        let last: Vec<[u32; 1]> = active.iter().map(|s| [s.last]).collect();
        let mut chunks: Vec<Chunk<'_, M::Cache>> = active
            .iter_mut()
            .zip(last.iter())
            .map(|(s, t)| Chunk { cache: &mut s.cache, tokens: t, logits: Logits::Last })
            .collect();
        let outs = model.forward_chunks_on(&mut chunks, Path::Rows)?;
        drop(chunks);
        for (s, mut o) in active.iter_mut().zip(outs) {
            let tok = s.sample(&mut o.data, vocab);
            s.accept(tok, vocab, sink)?;
        }
        let dt = t0.elapsed().as_secs_f64();
        stats.decode_steps += 1;
        stats.decode_tokens += active.len();
        stats.decode_secs += dt;
        let mut still = Vec::with_capacity(active.len());
        for mut s in active.drain(..) {
            s.decode_secs += dt;
            if s.finished.is_some() {
                let i = s.index;
                let c = s.into_completion();
                sink.done(i, &c);
                results[i] = Some(c);
            } else {
                still.push(s);
            }
        }
        active = still;
    }
    let out = results
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::Internal("a request produced no completion".into())))
        .collect::<Result<Vec<_>>>()?;
    Ok((out, stats))
}

/// Log-probability of each choice as a continuation of `prompt`:
/// the prompt is prefilled once (dense, [`Path::Dense`], its logits included,
/// however short it is), then the later tokens of the choices are scored in
/// batched decode steps ([`Path::Rows`]), each on its own copy of the prompt's
/// cache. Returns, per choice, the log-probability of each of its tokens.
pub fn score_choices<M: LanguageModel + ?Sized>(
    model: &M,
    prompt: &[u32],
    choices: &[Vec<u32>],
    sched: &SchedulerConfig,
    sink: &dyn Sink,
) -> Result<Vec<Vec<f64>>> {
    check_scoring(model, prompt, choices)?;
    let mut cache = model.new_cache(prompt.len())?;
    let first = prefill(model, &mut cache, prompt, sched.prefill_chunk, true, sink)?;
    Ok(score_after(model, std::slice::from_ref(&cache), &[first], choices, sink)?.remove(0))
}

/// [`score_choices`] for many prompts, each given with the length of a prefix it
/// shares with others (`splits[i]`, e.g. the chat header and instruction before a
/// log line). Every prompt is prefilled as its prefix, then the rest, both
/// computed as a long prefill is (dense) however short, so its scores depend on
/// the prompt and split alone, never on the other prompts, and equal those of
/// [`score_choices`] up to float summation order. A prefix equal to the previous
/// prompt's is not prefilled again, and the rests of consecutive prompts with
/// the same prefix go through the model together (up to `prefill_chunk`
/// tokens per step): scoring thousands of lines after one instruction reads
/// the weights a few times per hundred lines instead of once per line.
pub fn score_choices_split<M: LanguageModel + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    splits: &[usize],
    choices: &[Vec<u32>],
    sched: &SchedulerConfig,
    sink: &dyn Sink,
) -> Result<Vec<Vec<Vec<f64>>>> {
    if prompts.is_empty() {
        return Err(Error::InvalidArgument("empty batch: give at least one prompt".into()));
    }
    if splits.len() != prompts.len() {
        return Err(Error::InvalidArgument(format!("{} splits for {} prompts", splits.len(), prompts.len())));
    }
    for p in prompts {
        check_scoring(model, p, choices)?;
    }
    // At least the last prompt token stays outside the prefix: its logits score the first choice token.
    let splits: Vec<usize> = prompts.iter().zip(splits).map(|(p, &s)| s.min(p.len() - 1)).collect();
    let longest = choices.iter().map(|c| c.len()).max().unwrap_or(0);
    let budget = sched.prefill_chunk.max(1);
    let mut shared: Option<(&[u32], M::Cache)> = None;
    let mut out = Vec::with_capacity(prompts.len());
    let mut i = 0;
    while i < prompts.len() {
        if sink.cancelled() {
            return Err(Error::Interrupted);
        }
        if splits[i] == 0 {
            out.push(score_choices(model, &prompts[i], choices, sched, sink)?);
            i += 1;
            continue;
        }
        let prefix = &prompts[i][..splits[i]];
        // The group: following prompts with the same prefix, while their rests fit one step.
        let mut j = i;
        let mut rows = 0;
        while j < prompts.len() && splits[j] == prefix.len() && prompts[j][..splits[j]] == *prefix {
            let r = prompts[j].len() - splits[j];
            if j > i && rows + r > budget {
                break;
            }
            rows += r;
            j += 1;
        }
        if shared.as_ref().is_none_or(|(q, _)| *q != prefix) {
            let mut c = model.new_cache(prefix.len())?;
            prefill(model, &mut c, prefix, budget, true, sink)?;
            shared = Some((prefix, c));
        }
        let Some((_, base)) = shared.as_ref() else { unreachable!() };
        let mut caches: Vec<M::Cache> =
            (i..j).map(|k| model.fork_cache(base, prompts[k].len() + longest)).collect::<Result<_>>()?;
        let firsts: Vec<Vec<f32>> = if rows > budget {
            // One prompt whose rest alone exceeds the step budget: prefill it in chunks.
            vec![prefill(model, &mut caches[0], &prompts[i][splits[i]..], budget, true, sink)?]
        } else {
            let mut chunks: Vec<Chunk<'_, M::Cache>> = caches
                .iter_mut()
                .zip(i..j)
                .map(|(c, k)| Chunk { cache: c, tokens: &prompts[k][splits[k]..], logits: Logits::Last })
                .collect();
            model.forward_chunks_on(&mut chunks, Path::Dense)?.into_iter().map(|l| l.data).collect()
        };
        out.extend(score_after(model, &caches, &firsts, choices, sink)?);
        i = j;
    }
    Ok(out)
}

/// Token rows per forward step when scoring the later tokens of choices. The
/// steps run the per-row decode kernels ([`Path::Rows`]), so a choice's score
/// does not depend on what it was batched with, only the weights are read
/// once for all the rows.
const CHOICE_ROWS_PER_STEP: usize = 32;

fn check_scoring<M: LanguageModel + ?Sized>(model: &M, prompt: &[u32], choices: &[Vec<u32>]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("empty prompt".into()));
    }
    if choices.is_empty() {
        return Err(Error::InvalidArgument("give at least one choice".into()));
    }
    if choices.iter().any(|c| c.is_empty()) {
        return Err(Error::InvalidArgument("a choice encodes to no tokens".into()));
    }
    let longest = choices.iter().map(|c| c.len()).max().unwrap_or(0);
    if prompt.len() + longest > model.context_length() {
        return Err(Error::ContextLength {
            prompt_tokens: prompt.len() + longest,
            max_new_tokens: 0,
            context_length: model.context_length(),
        });
    }
    Ok(())
}

/// Scores of the choices after each prompt held in `caches[p]`, whose last
/// logits are `firsts[p]`: `[prompt][choice][token]`.
fn score_after<M: LanguageModel + ?Sized>(
    model: &M,
    caches: &[M::Cache],
    firsts: &[Vec<f32>],
    choices: &[Vec<u32>],
    sink: &dyn Sink,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut out: Vec<Vec<Vec<f64>>> =
        firsts.iter().map(|f| choices.iter().map(|c| vec![sampler::log_prob(f, c[0])]).collect()).collect();
    // Choices of more than one token: feed all but their last token, a few rows per step.
    let jobs: Vec<(usize, usize)> = (0..caches.len())
        .flat_map(|p| (0..choices.len()).filter(|&c| choices[c].len() > 1).map(move |c| (p, c)))
        .collect();
    let vocab = model.config().vocab_size;
    let mut start = 0;
    while start < jobs.len() {
        if sink.cancelled() {
            return Err(Error::Interrupted);
        }
        let mut end = start;
        let mut rows = 0;
        while end < jobs.len() {
            let r = choices[jobs[end].1].len() - 1;
            if end > start && rows + r > CHOICE_ROWS_PER_STEP {
                break;
            }
            rows += r;
            end += 1;
        }
        let mut forks: Vec<M::Cache> = jobs[start..end]
            .iter()
            .map(|&(p, c)| model.fork_cache(&caches[p], caches[p].len() + choices[c].len()))
            .collect::<Result<_>>()?;
        let mut chunks: Vec<Chunk<'_, M::Cache>> = forks
            .iter_mut()
            .zip(&jobs[start..end])
            .map(|(f, &(_, c))| Chunk { cache: f, tokens: &choices[c][..choices[c].len() - 1], logits: Logits::All })
            .collect();
        let logits = model.forward_chunks_on(&mut chunks, Path::Rows)?;
        for (&(p, c), l) in jobs[start..end].iter().zip(logits) {
            for (j, row) in l.data.chunks(vocab).enumerate() {
                out[p][c].push(sampler::log_prob(row, choices[c][j + 1]));
            }
        }
        start = end;
    }
    Ok(out)
}

/// Logits of every position of `tokens` (row-major `[tokens.len(), vocab]`),
/// processed `prefill_chunk` tokens at a time from an empty cache. For tests
/// and analysis: the row of position `i` is the distribution of token `i + 1`.
pub fn logits<M: LanguageModel + ?Sized>(model: &M, tokens: &[u32], prefill_chunk: usize, sink: &dyn Sink) -> Result<Vec<f32>> {
    if tokens.is_empty() {
        return Err(Error::InvalidArgument("empty token list".into()));
    }
    if tokens.len() > model.context_length() {
        return Err(Error::ContextLength {
            prompt_tokens: tokens.len(),
            max_new_tokens: 0,
            context_length: model.context_length(),
        });
    }
    let mut cache = model.new_cache(tokens.len())?;
    let mut out = Vec::with_capacity(tokens.len() * model.config().vocab_size);
    for c in tokens.chunks(prefill_chunk.max(1)) {
        if sink.cancelled() {
            return Err(Error::Interrupted);
        }
        let mut r = model.forward_chunks(&mut [Chunk { cache: &mut cache, tokens: c, logits: Logits::All }])?;
        out.append(&mut r[0].data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
