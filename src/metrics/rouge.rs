//! ROUGE-N / ROUGE-L / ROUGE-Lsum with exact parity to Google's `rouge-score`
//! 0.1.2 (`rouge_score/rouge_scorer.py`, `tokenize.py`, `scoring.py`).
//!
//! * Tokenizer: `text.lower()`, every run of `[^a-z0-9]` becomes a space, split,
//!   tokens longer than 3 characters are Porter-stemmed when asked (NLTK's
//!   `PorterStemmer()` in its default NLTK_EXTENSIONS mode, see `porter.rs`), then
//!   only tokens matching `^[a-z0-9]+$` are kept.
//! * ROUGE-N: clipped n-gram overlap; precision = overlap / max(#pred n-grams, 1),
//!   recall = overlap / max(#target n-grams, 1); F = 2PR/(P+R) (0 when P+R = 0).
//! * ROUGE-L: LCS length over the token sequences (0 when either is empty).
//! * ROUGE-Lsum: texts split on `"\n"`, empty lines dropped; union-LCS hits with
//!   the same backtracking tie-breaks as `_backtrack_norec` and the same
//!   token-count bookkeeping as `_summary_level_lcs`.
//! * Several references: `score_multi`, the reference with the highest F-measure
//!   per ROUGE type (first one on ties, `np.argmax`).
//!
//! The Rust crates seen on crates.io (`rouge`, `rouge-rs`) use their own
//! tokenization and no NLTK Porter stemmer, so they cannot give parity.
use std::cell::RefCell;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::metrics::porter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RougeType {
    N(usize),
    L,
    Lsum,
}

impl RougeType {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "rougeL" {
            return Ok(Self::L);
        }
        if s == "rougeLsum" {
            return Ok(Self::Lsum);
        }
        if let Some(d) = s.strip_prefix("rouge") {
            if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() {
                let n = (d.as_bytes()[0] - b'0') as usize;
                if n == 0 {
                    return Err(Error::InvalidArgument(format!("rougen requires positive n: {s}")));
                }
                return Ok(Self::N(n));
            }
        }
        Err(Error::InvalidArgument(format!(
            "invalid rouge type {s:?}; expected 'rouge1'..'rouge9', 'rougeL' or 'rougeLsum'"
        )))
    }
}

/// Precision, recall, F-measure (rouge-score's `Score`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

fn fmeasure(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

thread_local! {
    static STEM_CACHE: RefCell<FxHashMap<String, String>> = RefCell::new(FxHashMap::default());
}

fn cached_stem(tok: &str) -> String {
    STEM_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(s) = c.get(tok) {
            return s.clone();
        }
        let s = porter::stem(tok);
        if c.len() > 200_000 {
            c.clear();
        }
        c.insert(tok.to_string(), s.clone());
        s
    })
}

/// rouge-score `tokenize.tokenize(text, stemmer)`.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            let t = std::mem::take(cur);
            let t = if use_stemmer && t.len() > 3 { cached_stem(&t) } else { t };
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                out.push(t);
            }
        }
    };
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn ngram_counts(toks: &[u32], n: usize) -> FxHashMap<&[u32], u32> {
    let mut m: FxHashMap<&[u32], u32> = FxHashMap::default();
    if toks.len() >= n {
        for w in toks.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

fn score_ngrams(target: &[u32], pred: &[u32], n: usize) -> Prf {
    let t = ngram_counts(target, n);
    let p = ngram_counts(pred, n);
    let mut inter = 0u64;
    for (g, c) in &t {
        inter += (*c).min(*p.get(g).unwrap_or(&0)) as u64;
    }
    let tc: u64 = t.values().map(|&x| x as u64).sum();
    let pc: u64 = p.values().map(|&x| x as u64).sum();
    let precision = inter as f64 / pc.max(1) as f64;
    let recall = inter as f64 / tc.max(1) as f64;
    Prf { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// Length of the longest common subsequence (two-row dynamic programme).
pub(crate) fn lcs_len(a: &[u32], b: &[u32]) -> usize {
    let mut prev = vec![0u32; b.len() + 1];
    let mut cur = vec![0u32; b.len() + 1];
    for &x in a {
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()] as usize
}

fn score_lcs(target: &[u32], pred: &[u32]) -> Prf {
    if target.is_empty() || pred.is_empty() {
        return Prf::default();
    }
    let l = lcs_len(target, pred) as f64;
    let precision = l / pred.len() as f64;
    let recall = l / target.len() as f64;
    Prf { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// `lcs_ind(ref, can)`: indices into `r` of the LCS found by `_backtrack_norec`.
fn lcs_indices(r: &[u32], c: &[u32], out: &mut Vec<usize>) {
    let cols = c.len() + 1;
    let mut t = vec![0u32; (r.len() + 1) * cols];
    for i in 1..=r.len() {
        for j in 1..=c.len() {
            t[i * cols + j] = if r[i - 1] == c[j - 1] {
                t[(i - 1) * cols + j - 1] + 1
            } else {
                t[(i - 1) * cols + j].max(t[i * cols + j - 1])
            };
        }
    }
    let (mut i, mut j) = (r.len(), c.len());
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i * cols + j - 1] > t[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
}

fn score_lsum(target: &[Vec<u32>], pred: &[Vec<u32>]) -> Prf {
    if target.is_empty() || pred.is_empty() {
        return Prf::default();
    }
    let m: usize = target.iter().map(Vec::len).sum();
    let n: usize = pred.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return Prf::default();
    }
    let mut cnt_r: FxHashMap<u32, i64> = FxHashMap::default();
    let mut cnt_c: FxHashMap<u32, i64> = FxHashMap::default();
    for s in target {
        for &t in s {
            *cnt_r.entry(t).or_insert(0) += 1;
        }
    }
    for s in pred {
        for &t in s {
            *cnt_c.entry(t).or_insert(0) += 1;
        }
    }
    let mut hits = 0u64;
    let mut idx = Vec::new();
    for r in target {
        idx.clear();
        for c in pred {
            lcs_indices(r, c, &mut idx);
        }
        idx.sort_unstable();
        idx.dedup();
        for &i in &idx {
            let t = r[i];
            let cc = cnt_c.get(&t).copied().unwrap_or(0);
            let cr = cnt_r.get(&t).copied().unwrap_or(0);
            if cc > 0 && cr > 0 {
                hits += 1;
                *cnt_c.get_mut(&t).unwrap() -= 1;
                *cnt_r.get_mut(&t).unwrap() -= 1;
            }
        }
    }
    let recall = hits as f64 / m as f64;
    let precision = hits as f64 / n as f64;
    Prf { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// Scores of one (target, prediction) pair for every type in `types`.
pub fn score_pair(target: &str, prediction: &str, types: &[RougeType], use_stemmer: bool) -> Vec<Prf> {
    let mut ids: FxHashMap<String, u32> = FxHashMap::default();
    let mut intern = |toks: Vec<String>| -> Vec<u32> {
        toks.into_iter()
            .map(|t| {
                let k = ids.len() as u32;
                *ids.entry(t).or_insert(k)
            })
            .collect()
    };
    let need_flat = types.iter().any(|t| !matches!(t, RougeType::Lsum));
    let (tt, pt) = if need_flat {
        (intern(tokenize(target, use_stemmer)), intern(tokenize(prediction, use_stemmer)))
    } else {
        (Vec::new(), Vec::new())
    };
    let mut sents: Option<(Vec<Vec<u32>>, Vec<Vec<u32>>)> = None;
    let mut out = Vec::with_capacity(types.len());
    for ty in types {
        out.push(match ty {
            RougeType::N(n) => score_ngrams(&tt, &pt, *n),
            RougeType::L => score_lcs(&tt, &pt),
            RougeType::Lsum => {
                if sents.is_none() {
                    let mut split = |s: &str| -> Vec<Vec<u32>> {
                        s.split('\n')
                            .filter(|x| !x.is_empty())
                            .map(|x| intern(tokenize(x, use_stemmer)))
                            .collect()
                    };
                    let a = split(target);
                    let b = split(prediction);
                    sents = Some((a, b));
                }
                let (a, b) = sents.as_ref().unwrap();
                score_lsum(a, b)
            }
        });
    }
    out
}

/// Batched scores: `refs[k][i]` is the k-th reference of prediction i (`None`:
/// absent). Returns, per pair, one [`Prf`] per type (`score_multi` when several
/// references).
pub fn rouge_batch(
    predictions: &[String],
    refs: &[Vec<Option<String>>],
    types: &[RougeType],
    use_stemmer: bool,
) -> Result<Vec<Vec<Prf>>> {
    if predictions.is_empty() {
        return Err(Error::InvalidArgument("rouge: hypotheses must not be empty".into()));
    }
    if types.is_empty() {
        return Err(Error::InvalidArgument("rouge: at least one rouge type is needed".into()));
    }
    if refs.is_empty() {
        return Err(Error::InvalidArgument("rouge: at least one reference stream is needed".into()));
    }
    for (k, r) in refs.iter().enumerate() {
        if r.len() != predictions.len() {
            return Err(Error::InvalidArgument(format!(
                "rouge: length mismatch: {} hypotheses but reference stream {k} has {} segments",
                predictions.len(),
                r.len()
            )));
        }
    }
    (0..predictions.len())
        .into_par_iter()
        .map(|i| {
            let mut best: Option<Vec<Prf>> = None;
            for stream in refs {
                let Some(t) = stream[i].as_deref() else { continue };
                let s = score_pair(t, &predictions[i], types, use_stemmer);
                best = Some(match best {
                    None => s,
                    Some(b) => b.iter().zip(&s).map(|(x, y)| if y.fmeasure > x.fmeasure { *y } else { *x }).collect(),
                });
            }
            best.ok_or_else(|| Error::InvalidArgument(format!("rouge: hypothesis {i} has no reference")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn readme_example() {
        // rouge_scorer.RougeScorer(['rouge1','rougeL'], use_stemmer=True).score(
        //   'The quick brown fox jumps over the lazy dog', 'The quick brown dog jumps on the log.')
        let s = score_pair(
            "The quick brown fox jumps over the lazy dog",
            "The quick brown dog jumps on the log.",
            &[RougeType::N(1), RougeType::L],
            true,
        );
        assert!((s[0].precision - 0.75).abs() < 1e-12);
        assert!((s[0].recall - 6.0 / 9.0).abs() < 1e-12);
        assert!((s[1].precision - 0.625).abs() < 1e-12);
        assert_eq!(tokenize("Hello, WORLD!! x_y", false), vec!["hello", "world", "x", "y"]);
    }
}
