//! The "llamafactory" variant: the text-similarity scores of LLaMA-Factory's SFT
//! evaluation (`src/llamafactory/train/sft/metric.py::ComputeSimilarity`), which
//! is how LogLM-style papers trained with LLaMA-Factory report BLEU and ROUGE.
//!
//! Per (prediction, label) pair:
//! * `bleu-4`: NLTK `sentence_bleu([list(label)], list(pred),
//!   smoothing_function=SmoothingFunction().method3)` -- *character* n-grams
//!   (spaces included), weights 0.25, clipped precisions with denominator
//!   `max(1, total)`, closest reference length, NLTK's brevity penalty, method 3
//!   (a zero precision becomes `1 / (2^k * denominator)`, k = 1, 2, ...), score 0
//!   when no character matches, `math.fsum` of the weighted logs (exactly rounded
//!   here as well).
//! * `rouge-1/2/l`: `rouge_chinese.Rouge().get_scores(" ".join(jieba.cut(pred)),
//!   " ".join(jieba.cut(label)))` F-measures: jieba tokens (HMM on, here via
//!   `jieba-rs`, which reproduces Python jieba's default `cut`), rouge-chinese's
//!   `cut_sent` sentence split and whitespace normalisation, *set* n-gram overlap
//!   (`exclusive=True`) for ROUGE-1/2, LCS of the whole word sequence for ROUGE-L,
//!   `F = 2 * (P*R / (P + R + 1e-8))`; all three are 0 when either side has no
//!   token.
//! Each score is multiplied by 100 and rounded to 4 decimals (Python `round`),
//! as LLaMA-Factory stores them; the reported figure is the mean over pairs.
use std::sync::OnceLock;

use jieba_rs::Jieba;
use rayon::prelude::*;
use regex::Regex;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Error, Result};
use crate::metrics::util::{is_py_space, py_split};

fn jieba() -> &'static Jieba {
    static J: OnceLock<Jieba> = OnceLock::new();
    J.get_or_init(Jieba::new)
}

/// `list(jieba.cut(text))` (accurate mode, HMM on).
///
/// jieba-rs 0.11 keeps `[._-]`-joined alphanumeric runs (`server-side`, `v1.2.3`)
/// together where Python jieba's `finalseg` splits them with
/// `re_skip = ([a-zA-Z0-9]+(?:\.\d+)?%?)`; such tokens (never dictionary words:
/// jieba's dictionary has no ASCII word containing `.`, `_` or `-`) are split
/// again here the Python way.
pub fn jieba_cut(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for t in jieba().cut(text, true) {
        let w = t.word;
        if w.len() > 1
            && w.bytes().any(|b| matches!(b, b'.' | b'_' | b'-'))
            && w.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%'))
        {
            python_skip_split(w, &mut out);
        } else {
            out.push(w);
        }
    }
    out
}

/// `[x for x in re_skip.split(s) if x]` with Python jieba's finalseg `re_skip`.
fn python_skip_split<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut gap = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() {
            if gap < i {
                out.push(&s[gap..i]);
            }
            let st = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < b.len() && b[i] == b'%' {
                i += 1;
            }
            out.push(&s[st..i]);
            gap = i;
        } else {
            i += 1;
        }
    }
    if gap < b.len() {
        out.push(&s[gap..]);
    }
}

/// Shewchuk's exactly rounded sum, as `math.fsum`.
fn fsum(xs: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &x0 in xs {
        let mut x = x0;
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        partials.push(x);
    }
    // CPython's final correction for round-half-even across partials
    let mut n = partials.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

/// NLTK `sentence_bleu([list(label)], list(pred), smoothing_function=method3)`.
pub fn nltk_char_bleu4(pred: &str, label: &str) -> f64 {
    let h: Vec<char> = pred.chars().collect();
    let r: Vec<char> = label.chars().collect();
    let mut num = [0u64; 4];
    let mut den = [0u64; 4];
    for n in 1..=4 {
        let mut hc: FxHashMap<&[char], u64> = FxHashMap::default();
        if h.len() >= n {
            for w in h.windows(n) {
                *hc.entry(w).or_insert(0) += 1;
            }
        }
        let mut rc: FxHashMap<&[char], u64> = FxHashMap::default();
        if r.len() >= n {
            for w in r.windows(n) {
                *rc.entry(w).or_insert(0) += 1;
            }
        }
        let mut total = 0;
        for (g, c) in &hc {
            total += c;
            num[n - 1] += (*c).min(*rc.get(g).unwrap_or(&0));
        }
        den[n - 1] = total.max(1);
    }
    let (hl, rl) = (h.len() as f64, r.len() as f64);
    let bp = if h.len() > r.len() {
        1.0
    } else if h.is_empty() {
        0.0
    } else {
        (1.0 - rl / hl).exp()
    };
    if num[0] == 0 {
        return 0.0;
    }
    let mut incvnt = 1i32;
    let mut logs = Vec::with_capacity(4);
    for i in 0..4 {
        let p = if num[i] == 0 {
            let p = 1.0 / (2f64.powi(incvnt) * den[i] as f64);
            incvnt += 1;
            p
        } else {
            num[i] as f64 / den[i] as f64
        };
        if p > 0.0 {
            logs.push(0.25 * p.ln());
        }
    }
    bp * fsum(&logs).exp()
}

fn cut_sent_regexes() -> &'static [Regex; 4] {
    static R: OnceLock<[Regex; 4]> = OnceLock::new();
    R.get_or_init(|| {
        [
            Regex::new(r"([。！？\?])([^”’])").unwrap(),
            Regex::new(r"(\.{6})([^”’])").unwrap(),
            Regex::new(r"(…{2})([^”’])").unwrap(),
            Regex::new(r"([。！？\?][”’])([^，。！？\?])").unwrap(),
        ]
    })
}

/// rouge-chinese: `cut_sent`, `" ".join(s.split())` per non-empty sentence, then
/// the words `s.split(" ")` of every sentence.
fn rouge_chinese_words(text: &str) -> Vec<String> {
    let mut s = text.to_string();
    for re in cut_sent_regexes() {
        s = re.replace_all(&s, "$1\n$2").into_owned();
    }
    let s = s.trim_end_matches(is_py_space);
    let mut words = Vec::new();
    for sent in s.split('\n') {
        if sent.is_empty() {
            continue;
        }
        let norm: Vec<&str> = py_split(sent).collect();
        let joined = norm.join(" ");
        for w in joined.split(' ') {
            words.push(w.to_string());
        }
    }
    words
}

fn f_rouge_chinese(p: f64, r: f64) -> f64 {
    2.0 * ((p * r) / (p + r + 1e-8))
}

fn rouge_n_set(h: &[u32], r: &[u32], n: usize) -> f64 {
    let hs: FxHashSet<&[u32]> = if h.len() >= n { h.windows(n).collect() } else { FxHashSet::default() };
    let rs: FxHashSet<&[u32]> = if r.len() >= n { r.windows(n).collect() } else { FxHashSet::default() };
    let overlap = hs.intersection(&rs).count() as f64;
    let p = if hs.is_empty() { 0.0 } else { overlap / hs.len() as f64 };
    let rc = if rs.is_empty() { 0.0 } else { overlap / rs.len() as f64 };
    f_rouge_chinese(p, rc)
}

/// rouge-1, rouge-2, rouge-l F-measures (0..1) of one pair, LLaMA-Factory style.
pub fn rouge_jieba(pred: &str, label: &str) -> [f64; 3] {
    let hyp = jieba_cut(pred).join(" ");
    let refr = jieba_cut(label).join(" ");
    if py_split(&hyp).next().is_none() || py_split(&refr).next().is_none() {
        return [0.0; 3];
    }
    let hw = rouge_chinese_words(&hyp);
    let rw = rouge_chinese_words(&refr);
    fn to_ids<'a>(ids: &mut FxHashMap<&'a str, u32>, v: &'a [String]) -> Vec<u32> {
        v.iter()
            .map(|w| {
                let k = ids.len() as u32;
                *ids.entry(w.as_str()).or_insert(k)
            })
            .collect()
    }
    let mut ids: FxHashMap<&str, u32> = FxHashMap::default();
    let h = to_ids(&mut ids, &hw);
    let r = to_ids(&mut ids, &rw);
    let r1 = rouge_n_set(&h, &r, 1);
    let r2 = rouge_n_set(&h, &r, 2);
    let l = crate::metrics::rouge::lcs_len(&r, &h) as f64;
    let (m, n) = (r.len() as f64, h.len() as f64);
    let rl = f_rouge_chinese(l / n, l / m);
    [r1, r2, rl]
}

/// Python's `round(x, 4)` (correctly rounded decimal, ties to even).
pub fn py_round4(x: f64) -> f64 {
    format!("{x:.4}").parse().unwrap_or(x)
}

/// Per pair `[bleu-4, rouge-1, rouge-2, rouge-l]`, each x100 and rounded to 4
/// decimals as LLaMA-Factory stores them.
pub fn llamafactory_scores(preds: &[String], labels: &[String]) -> Result<Vec<[f64; 4]>> {
    if preds.is_empty() {
        return Err(Error::InvalidArgument("llamafactory: inputs must not be empty".into()));
    }
    if preds.len() != labels.len() {
        return Err(Error::InvalidArgument(format!(
            "llamafactory: length mismatch: {} hypotheses but {} references",
            preds.len(),
            labels.len()
        )));
    }
    Ok((0..preds.len())
        .into_par_iter()
        .map(|i| {
            let [a, b, c] = rouge_jieba(&preds[i], &labels[i]);
            let bleu = nltk_char_bleu4(&preds[i], &labels[i]);
            [py_round4(bleu * 100.0), py_round4(a * 100.0), py_round4(b * 100.0), py_round4(c * 100.0)]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn fsum_exact() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(fsum(&[0.1; 10]), 1.0);
    }
    #[test]
    fn bleu_identity_and_zero() {
        assert!((nltk_char_bleu4("abcdef", "abcdef") - 1.0).abs() < 1e-15);
        assert_eq!(nltk_char_bleu4("xyz", "abc"), 0.0);
    }
}
