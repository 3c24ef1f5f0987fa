//! Next-token choice from a row of logits: greedy, or temperature / top-k /
//! top-p sampling with a per-sequence seeded RNG, after a repetition penalty
//! (the CTRL paper's rule as used by Hugging Face `transformers` and
//! llama.cpp: divide positive logits by the penalty, multiply negative ones).
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = no top-k cut.
    pub top_k: usize,
    /// 1.0 = no nucleus cut.
    pub top_p: f32,
    /// 1.0 = off.
    pub repetition_penalty: f32,
    pub seed: u64,
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
    /// Report the log-probability of each generated token and of the
    /// `n` most likely tokens at its position (`Some(0)`: the chosen one only).
    pub logprobs: Option<usize>,
    /// JSON mode: the output is a JSON object ([`super::json`] masks the tokens).
    pub json_object: bool,
    /// JSON Schema mode: the output is a document of this schema
    /// ([`super::schema`] masks the tokens); takes the place of `json_object`.
    pub json_schema: Option<std::sync::Arc<super::schema::Schema>>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            json_object: false,
            json_schema: None,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!("repetition_penalty must be > 0, got {}", self.repetition_penalty));
        }
        if self.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return bad(format!("top logprobs must be at most {MAX_TOP_LOGPROBS}"));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return bad("stop strings must not be empty".into());
        }
        Ok(())
    }
}

/// Most alternatives reported per position (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Log-probability of a generated token under the model's distribution (the
/// raw logits, before penalty, temperature or cuts), and the `n` most likely
/// tokens at that position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// [`TokenLogprob`] of `chosen` from a row of raw logits.
pub fn token_logprob(logits: &[f32], chosen: u32, n: usize) -> TokenLogprob {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    let lp = |i: u32| (logits[i as usize] as f64 - lse) as f32;
    let mut top: Vec<u32> = Vec::new();
    if n > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = n.min(idx.len());
        let key = |i: &u32| logits[*i as usize];
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
            idx.truncate(k);
        }
        idx.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
        top = idx;
    }
    TokenLogprob { id: chosen, logprob: lp(chosen), top: top.into_iter().map(|i| (i, lp(i))).collect() }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Tokens seen so far (prompt and output), for the repetition penalty.
    seen: Vec<u32>,
    seen_mask: Vec<bool>,
}

impl Sampler {
    pub fn new(params: SamplingParams, vocab: usize, prompt: &[u32]) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        let mut s = Sampler { params, rng, seen: Vec::new(), seen_mask: Vec::new() };
        if s.params.repetition_penalty != 1.0 {
            s.seen_mask = vec![false; vocab];
            for &t in prompt {
                s.observe(t);
            }
        }
        s
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn observe(&mut self, t: u32) {
        if let Some(m) = self.seen_mask.get_mut(t as usize) {
            if !*m {
                *m = true;
                self.seen.push(t);
            }
        }
    }

    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.penalize(logits);
        let tok = self.pick(logits);
        self.observe(tok);
        tok
    }

    /// [`Sampler::sample`] restricted to the tokens `allowed` accepts: the token
    /// that would be chosen is tried first; only when it is refused are all the
    /// others masked out and the choice made again. `None` when nothing is allowed.
    pub fn sample_allowed(&mut self, logits: &mut [f32], allowed: impl Fn(u32) -> bool) -> Option<u32> {
        self.penalize(logits);
        let mut tok = self.pick(logits);
        if !allowed(tok) {
            let mut any = false;
            for (i, l) in logits.iter_mut().enumerate() {
                if allowed(i as u32) {
                    any = true;
                } else {
                    *l = f32::NEG_INFINITY;
                }
            }
            if !any {
                return None;
            }
            tok = self.pick(logits);
            if !allowed(tok) {
                tok = argmax(logits); // a zero-probability draw at the edge of the float range
            }
        }
        self.observe(tok);
        Some(tok)
    }

    /// Apply the repetition penalty to `logits` in place.
    fn penalize(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                let l = &mut logits[t as usize];
                if *l > 0.0 {
                    *l /= p.repetition_penalty;
                } else {
                    *l *= p.repetition_penalty;
                }
            }
        }
    }

    /// The next token from penalized logits: greedy or a random draw.
    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            argmax(logits)
        } else {
            self.sample_random(logits)
        }
    }

    fn sample_random(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = if p.top_k == 0 { logits.len() } else { p.top_k.min(logits.len()) };
        let key = |i: &u32| logits[*i as usize];
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)));
            idx.truncate(k);
        }
        idx.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
        let max = key(&idx[0]);
        let mut probs: Vec<f32> = idx.iter().map(|i| ((key(i) - max) * inv_t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        for v in probs.iter_mut() {
            *v /= sum;
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut cut = probs.len();
            for (i, v) in probs.iter().enumerate() {
                acc += v;
                if acc >= p.top_p {
                    cut = i + 1;
                    break;
                }
            }
            probs.truncate(cut);
            idx.truncate(cut);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, v) in probs.iter().enumerate() {
            if r < *v {
                return idx[i];
            }
            r -= v;
        }
        idx[probs.len() - 1]
    }
}

/// Index of the largest logit (the first one on ties, like llama.cpp).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// log-softmax value of `logits[target]`, computed in f64.
pub fn log_prob(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[target as usize] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: usize, p: f32, seed: u64) -> SamplingParams {
        SamplingParams { temperature: t, top_k: k, top_p: p, seed, ..Default::default() }
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(params(0.0, 0, 1.0, 0), 4, &[]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_is_deterministic() {
        let logits = [0.5f32, 0.4, 0.3, 0.2, 0.1];
        let mut s = Sampler::new(params(1.0, 1, 1.0, 7), 5, &[]);
        assert_eq!(s.sample(&mut logits.clone()), 0);
        let draw = |seed| {
            let mut s = Sampler::new(params(1.5, 0, 1.0, seed), 5, &[]);
            (0..20).map(|_| s.sample(&mut logits.clone())).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let logits = [10.0f32, 0.0, 0.0, 0.0];
        for seed in 0..50 {
            let mut s = Sampler::new(params(1.0, 0, 0.5, seed), 4, &[]);
            assert_eq!(s.sample(&mut logits.clone()), 0);
        }
    }

    #[test]
    fn repetition_penalty_changes_the_choice() {
        let sp = SamplingParams { repetition_penalty: 2.0, ..Default::default() };
        let mut s = Sampler::new(sp, 3, &[0]);
        // token 0 seen in the prompt: 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&mut [3.0, 2.0, 0.0]), 1);
    }

    #[test]
    fn validation() {
        assert!(SamplingParams { max_new_tokens: 0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { top_p: 0.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { stop: vec![String::new()], ..Default::default() }.validate().is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }

    #[test]
    fn token_logprobs_are_sorted_and_match_log_prob() {
        let l = [1.0f32, 3.0, 2.0, 3.0];
        let t = token_logprob(&l, 2, 3);
        assert_eq!(t.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!((t.logprob as f64 - log_prob(&l, 2)).abs() < 1e-6);
        assert!(token_logprob(&l, 0, 0).top.is_empty());
        assert!(SamplingParams { logprobs: Some(21), ..Default::default() }.validate().is_err());
    }

    #[test]
    fn log_prob_is_normalised() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f64 = (0..3).map(|i| log_prob(&l, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}
