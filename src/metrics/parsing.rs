//! Log-parsing metrics over (log, true template, predicted template) triples.
//!
//! References followed:
//! * RandIndex / adjusted RandIndex: scikit-learn `rand_score` and
//!   `adjusted_rand_score` (`sklearn/metrics/cluster/_supervised.py`), same pair
//!   confusion matrix, same special cases, same final floating-point expression
//!   (exact integer statistics, then one rounding as Python does).
//! * GA / FGA: loghub-2.0 `evaluation/utils/GA_calculator.py::get_accuracy`
//!   (a true group is accurate when all its lines share one predicted template and
//!   that predicted template has no other lines; GA counts lines, PGA/RGA count groups).
//! * PA: loghub-2.0 `evaluation/utils/PA_calculator.py` — exact string equality
//!   of the two templates (`Series.eq`). The loghub-2.0 *evaluator* does not
//!   normalise whitespace; the "DS" (double space) rule lives in the parsers'
//!   post-processing. `normalize_whitespace=true` applies `" ".join(t.split())`
//!   to both sides before every metric, for parsers that do not.
//! * PTA / RTA / FTA: loghub-2.0 `evaluation/utils/template_level_analysis.py::
//!   evaluate_template_level` — a predicted template is correct when the set of true
//!   templates of its lines is exactly `{predicted template string}`.
//! * var_P / var_R / var_F1: LogLM's token-level variable F1 (issue 3): the log is
//!   split on whitespace; a token is a variable under a template when one of its
//!   characters lies inside a `<*>` span of the template matched against the log
//!   (template -> `(?s)^lit(.*?)lit...$`, lazy groups, leftmost-first like Python's
//!   `re`); when that regex does not match, tokens are aligned by position with
//!   the template's whitespace tokens (a log token is a variable when the template
//!   token at its position contains `<*>`; log tokens past the template's end are
//!   variables when the template's last token contains `<*>`). Counts are summed
//!   over all lines (micro average); a zero denominator gives 0.0 (sklearn's
//!   `zero_division=0`).
use rayon::prelude::*;
use regex::Regex;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::metrics::util::{is_py_space, py_split_spans, py_whitespace_normalize};

/// All parsing metrics of one evaluation (fractions in [0, 1], ARI in [-1, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParsingScores {
    pub ri: f64,
    pub ari: f64,
    pub ga: f64,
    pub fga: f64,
    pub pa: f64,
    pub pta: f64,
    pub rta: f64,
    pub fta: f64,
    pub var_p: f64,
    pub var_r: f64,
    pub var_f1: f64,
    pub var_tp: u64,
    pub var_fp: u64,
    pub var_fn: u64,
    pub n_true_groups: usize,
    pub n_pred_groups: usize,
}

/// Intern strings into dense ids (first-seen order).
pub(crate) fn intern<S: AsRef<str>>(items: &[S]) -> (Vec<u32>, usize) {
    let mut map: FxHashMap<&str, u32> = FxHashMap::default();
    let mut ids = Vec::with_capacity(items.len());
    for s in items {
        let next = map.len() as u32;
        ids.push(*map.entry(s.as_ref()).or_insert(next));
    }
    let n = map.len();
    (ids, n)
}

/// The 2x2 pair confusion matrix of sklearn (`pair_confusion_matrix`), as
/// `[[tn, fp], [fn, tp]]` over ordered pairs.
pub fn pair_confusion(true_ids: &[u32], pred_ids: &[u32]) -> [[i128; 2]; 2] {
    let n = true_ids.len() as i128;
    let mut cont: FxHashMap<(u32, u32), i128> = FxHashMap::default();
    let mut n_c: FxHashMap<u32, i128> = FxHashMap::default();
    let mut n_k: FxHashMap<u32, i128> = FxHashMap::default();
    for (&t, &p) in true_ids.iter().zip(pred_ids) {
        *cont.entry((t, p)).or_insert(0) += 1;
        *n_c.entry(t).or_insert(0) += 1;
        *n_k.entry(p).or_insert(0) += 1;
    }
    let mut sum_sq = 0i128;
    let mut dot_k = 0i128;
    let mut dot_c = 0i128;
    for (&(t, p), &v) in &cont {
        sum_sq += v * v;
        dot_k += v * n_k[&p];
        dot_c += v * n_c[&t];
    }
    let c11 = sum_sq - n;
    let c01 = dot_k - sum_sq;
    let c10 = dot_c - sum_sq;
    let c00 = n * n - c01 - c10 - sum_sq;
    [[c00, c01], [c10, c11]]
}

fn check_labels(a: usize, b: usize) -> Result<()> {
    if a == 0 {
        return Err(Error::InvalidArgument("labels must not be empty".into()));
    }
    if a != b {
        return Err(Error::InvalidArgument(format!(
            "length mismatch: {a} true labels but {b} predicted labels"
        )));
    }
    Ok(())
}

fn rand_from_ids(t: &[u32], p: &[u32]) -> f64 {
    let c = pair_confusion(t, p);
    let num = c[0][0] + c[1][1];
    let den = c[0][0] + c[0][1] + c[1][0] + c[1][1];
    if num == den || den == 0 {
        return 1.0;
    }
    num as f64 / den as f64
}

fn ari_from_ids(t: &[u32], p: &[u32]) -> f64 {
    let c = pair_confusion(t, p);
    let (tn, fp, fn_, tp) = (c[0][0], c[0][1], c[1][0], c[1][1]);
    if fn_ == 0 && fp == 0 {
        return 1.0;
    }
    let num = tp * tn - fn_ * fp;
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    2.0 * (num as f64) / (den as f64)
}

/// sklearn `rand_score(labels_true, labels_pred)` for string labels.
pub fn rand_index<S: AsRef<str>>(labels_true: &[S], labels_pred: &[S]) -> Result<f64> {
    check_labels(labels_true.len(), labels_pred.len())?;
    Ok(rand_from_ids(&intern(labels_true).0, &intern(labels_pred).0))
}

/// sklearn `adjusted_rand_score(labels_true, labels_pred)` for string labels.
pub fn adjusted_rand_index<S: AsRef<str>>(labels_true: &[S], labels_pred: &[S]) -> Result<f64> {
    check_labels(labels_true.len(), labels_pred.len())?;
    Ok(ari_from_ids(&intern(labels_true).0, &intern(labels_pred).0))
}

/// Same as [`rand_index`] / [`adjusted_rand_index`] for integer labels.
pub fn rand_index_ids(labels_true: &[i64], labels_pred: &[i64]) -> Result<(f64, f64)> {
    check_labels(labels_true.len(), labels_pred.len())?;
    let f = |v: &[i64]| {
        let mut m: FxHashMap<i64, u32> = FxHashMap::default();
        v.iter()
            .map(|x| {
                let k = m.len() as u32;
                *m.entry(*x).or_insert(k)
            })
            .collect::<Vec<u32>>()
    };
    let (t, p) = (f(labels_true), f(labels_pred));
    Ok((rand_from_ids(&t, &p), ari_from_ids(&t, &p)))
}

fn f1(p: f64, r: f64) -> f64 {
    if p != 0.0 || r != 0.0 {
        2.0 * (p * r) / (p + r)
    } else {
        0.0
    }
}

/// loghub-2.0 GA and FGA (`GA_calculator.get_accuracy`, no template filter).
fn grouping_accuracy(t: &[u32], nt: usize, p: &[u32], np: usize) -> (f64, f64) {
    let n = t.len();
    let mut true_size = vec![0usize; nt];
    let mut pred_size = vec![0usize; np];
    // the single predicted id of each true group, or MULTI when there are several
    const NONE: u32 = u32::MAX;
    const MULTI: u32 = u32::MAX - 1;
    let mut pred_of_true = vec![NONE; nt];
    for (&a, &b) in t.iter().zip(p) {
        true_size[a as usize] += 1;
        pred_size[b as usize] += 1;
        let slot = &mut pred_of_true[a as usize];
        if *slot == NONE {
            *slot = b;
        } else if *slot != b {
            *slot = MULTI;
        }
    }
    let mut acc_events = 0usize;
    let mut acc_templates = 0usize;
    for g in 0..nt {
        let q = pred_of_true[g];
        if q != MULTI && q != NONE && pred_size[q as usize] == true_size[g] {
            acc_events += true_size[g];
            acc_templates += 1;
        }
    }
    let ga = acc_events as f64 / n as f64;
    let pga = acc_templates as f64 / np as f64;
    let rga = acc_templates as f64 / nt as f64;
    (ga, f1(pga, rga))
}

/// loghub-2.0 PTA / RTA / FTA (`template_level_analysis.evaluate_template_level`).
fn template_accuracy(
    t: &[u32],
    nt: usize,
    p: &[u32],
    np: usize,
    pred_equals_true_string: &[Option<u32>],
) -> (f64, f64, f64) {
    const NONE: u32 = u32::MAX;
    const MULTI: u32 = u32::MAX - 1;
    let mut true_of_pred = vec![NONE; np];
    for (&a, &b) in t.iter().zip(p) {
        let slot = &mut true_of_pred[b as usize];
        if *slot == NONE {
            *slot = a;
        } else if *slot != a {
            *slot = MULTI;
        }
    }
    let mut correct = 0usize;
    for q in 0..np {
        let g = true_of_pred[q];
        if g != NONE && g != MULTI && pred_equals_true_string[q] == Some(g) {
            correct += 1;
        }
    }
    let pta = correct as f64 / np as f64;
    let rta = correct as f64 / nt as f64;
    (pta, rta, f1(pta, rta))
}

/// Compile a template into the anchored lazy-group regex (None if it fails).
pub(crate) fn template_regex(template: &str) -> Option<Regex> {
    let mut pat = String::with_capacity(template.len() * 2 + 8);
    pat.push_str("(?s)^");
    for (i, part) in template.split("<*>").enumerate() {
        if i > 0 {
            pat.push_str("(.*?)");
        }
        pat.push_str(&regex::escape(part));
    }
    pat.push('$');
    regex::RegexBuilder::new(&pat)
        .size_limit(64 << 20)
        .build()
        .ok()
}

/// Which whitespace tokens of `log` are variables under `template`.
/// `re` is the compiled [`template_regex`] of the template (None: fallback only).
pub fn variable_mask(log: &str, template: &str, re: Option<&Regex>) -> Vec<bool> {
    let spans = py_split_spans(log);
    let mut mask = vec![false; spans.len()];
    if let Some(caps) = re.and_then(|r| r.captures(log)) {
        let mut groups: Vec<(usize, usize)> = caps
            .iter()
            .skip(1)
            .flatten()
            .map(|m| (m.start(), m.end()))
            .filter(|(s, e)| e > s)
            .collect();
        groups.sort_unstable();
        let mut gi = 0;
        for (ti, &(ts, te)) in spans.iter().enumerate() {
            while gi < groups.len() && groups[gi].1 <= ts {
                gi += 1;
            }
            if gi < groups.len() && groups[gi].0 < te {
                mask[ti] = true;
            }
        }
        return mask;
    }
    // Fallback: position-wise alignment of whitespace tokens.
    let ttoks: Vec<&str> = template.split(is_py_space).filter(|s| !s.is_empty()).collect();
    let tail_var = ttoks.last().map_or(false, |s| s.contains("<*>"));
    for (i, m) in mask.iter_mut().enumerate() {
        *m = match ttoks.get(i) {
            Some(tok) => tok.contains("<*>"),
            None => tail_var,
        };
    }
    mask
}

/// Compute every parsing metric. Groups are defined by template string equality
/// on each side. Errors on empty input and length mismatches.
pub fn parsing_scores<S: AsRef<str> + Sync>(
    logs: &[S],
    true_templates: &[S],
    pred_templates: &[S],
    normalize_whitespace: bool,
) -> Result<ParsingScores> {
    let n = logs.len();
    if n == 0 {
        return Err(Error::InvalidArgument("parsing_scores: inputs must not be empty".into()));
    }
    if true_templates.len() != n || pred_templates.len() != n {
        return Err(Error::InvalidArgument(format!(
            "parsing_scores: length mismatch: {} logs, {} true templates, {} predicted templates",
            n,
            true_templates.len(),
            pred_templates.len()
        )));
    }
    let (tt, pt): (Vec<std::borrow::Cow<str>>, Vec<std::borrow::Cow<str>>) = if normalize_whitespace
    {
        (
            true_templates.iter().map(|s| py_whitespace_normalize(s.as_ref()).into()).collect(),
            pred_templates.iter().map(|s| py_whitespace_normalize(s.as_ref()).into()).collect(),
        )
    } else {
        (
            true_templates.iter().map(|s| s.as_ref().into()).collect(),
            pred_templates.iter().map(|s| s.as_ref().into()).collect(),
        )
    };

    // Intern both sides in one table so that a predicted template can be compared
    // with a true template by id.
    let mut table: FxHashMap<&str, u32> = FxHashMap::default();
    let mut uniq: Vec<&str> = Vec::new();
    let mut gt: Vec<u32> = Vec::with_capacity(n);
    let mut gp: Vec<u32> = Vec::with_capacity(n);
    for s in tt.iter() {
        let s: &str = s.as_ref();
        let k = uniq.len() as u32;
        let id = *table.entry(s).or_insert_with(|| {
            uniq.push(s);
            k
        });
        gt.push(id);
    }
    for s in pt.iter() {
        let s: &str = s.as_ref();
        let k = uniq.len() as u32;
        let id = *table.entry(s).or_insert_with(|| {
            uniq.push(s);
            k
        });
        gp.push(id);
    }
    // Dense per-side ids.
    let dense = |g: &[u32]| -> (Vec<u32>, Vec<u32>) {
        // returns (dense ids, dense -> global)
        let mut m: FxHashMap<u32, u32> = FxHashMap::default();
        let mut back = Vec::new();
        let ids = g
            .iter()
            .map(|&x| {
                *m.entry(x).or_insert_with(|| {
                    back.push(x);
                    (back.len() - 1) as u32
                })
            })
            .collect();
        (ids, back)
    };
    let (t, t_back) = dense(&gt);
    let (p, p_back) = dense(&gp);
    let (nt, np) = (t_back.len(), p_back.len());
    let mut true_dense_of_global: FxHashMap<u32, u32> = FxHashMap::default();
    for (d, &g) in t_back.iter().enumerate() {
        true_dense_of_global.insert(g, d as u32);
    }
    let pred_eq: Vec<Option<u32>> =
        p_back.iter().map(|g| true_dense_of_global.get(g).copied()).collect();

    let ri = rand_from_ids(&t, &p);
    let ari = ari_from_ids(&t, &p);
    let (ga, fga) = grouping_accuracy(&t, nt, &p, np);
    let pa = gt.iter().zip(&gp).filter(|(a, b)| a == b).count() as f64 / n as f64;
    let (pta, rta, fta) = template_accuracy(&t, nt, &p, np, &pred_eq);

    // Variable F1: compile each distinct template once.
    let regexes: Vec<Option<Regex>> = uniq.par_iter().map(|s| template_regex(s)).collect();
    let (tp, fp, fn_) = (0..n)
        .into_par_iter()
        .map(|i| {
            let log = logs[i].as_ref();
            let a = gt[i] as usize;
            let b = gp[i] as usize;
            let mt = variable_mask(log, uniq[a], regexes[a].as_ref());
            let mp = if a == b { mt.clone() } else { variable_mask(log, uniq[b], regexes[b].as_ref()) };
            let mut c = (0u64, 0u64, 0u64);
            for (x, y) in mt.iter().zip(&mp) {
                match (x, y) {
                    (true, true) => c.0 += 1,
                    (false, true) => c.1 += 1,
                    (true, false) => c.2 += 1,
                    _ => {}
                }
            }
            c
        })
        .reduce(|| (0, 0, 0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2));
    let var_p = if tp + fp > 0 { tp as f64 / (tp + fp) as f64 } else { 0.0 };
    let var_r = if tp + fn_ > 0 { tp as f64 / (tp + fn_) as f64 } else { 0.0 };
    Ok(ParsingScores {
        ri,
        ari,
        ga,
        fga,
        pa,
        pta,
        rta,
        fta,
        var_p,
        var_r,
        var_f1: f1(var_p, var_r),
        var_tp: tp,
        var_fp: fp,
        var_fn: fn_,
        n_true_groups: nt,
        n_pred_groups: np,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_matches_sklearn_examples() {
        // sklearn docstring: rand_score([0, 0, 1, 2], [0, 0, 1, 1]) == 0.83...
        let t = ["0", "0", "1", "2"];
        let p = ["0", "0", "1", "1"];
        assert!((rand_index(&t, &p).unwrap() - 5.0 / 6.0).abs() < 1e-15);
        // adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) == 0.57...
        assert!((adjusted_rand_index(&t, &p).unwrap() - 0.5714285714285714).abs() < 1e-15);
        assert_eq!(rand_index(&["a"], &["b"]).unwrap(), 1.0);
        assert!(rand_index::<&str>(&[], &[]).is_err());
        assert!(rand_index(&["a"], &["a", "b"]).is_err());
    }

    #[test]
    fn variable_mask_regex_and_fallback() {
        let log = "Receiving block blk_123 src: /10.0.0.1:50010";
        let tpl = "Receiving block <*> src: /<*>";
        let re = template_regex(tpl);
        assert_eq!(variable_mask(log, tpl, re.as_ref()), vec![false, false, true, false, true]);
        // no match -> position-wise
        let tpl2 = "Sending <*> x";
        let re2 = template_regex(tpl2);
        assert_eq!(variable_mask("a b c d", tpl2, re2.as_ref()), vec![false, true, false, false]);
        assert_eq!(variable_mask("a b c d", "q <*>", None), vec![false, true, true, true]);
    }

    #[test]
    fn loghub_definitions_small() {
        let logs = ["a 1", "a 2", "b 3", "b 4", "c"];
        let t = ["a <*>", "a <*>", "b <*>", "b <*>", "c"];
        let p = ["a <*>", "a <*>", "b 3", "b 4", "c"];
        let s = parsing_scores(&logs, &t, &p, false).unwrap();
        // true groups: a(2) ok, b(2) split -> not ok, c ok
        assert_eq!(s.ga, 3.0 / 5.0);
        assert_eq!(s.pa, 3.0 / 5.0);
        // pred groups: 4; correct templates: "a <*>", "c"
        assert_eq!(s.pta, 2.0 / 4.0);
        assert_eq!(s.rta, 2.0 / 3.0);
        assert_eq!((s.var_tp, s.var_fp, s.var_fn), (2, 0, 2));
    }
}
