//! Binary classification metrics for anomaly detection (precision, recall, F1,
//! accuracy of a positive label), at template level and at session level (a
//! session is abnormal when any of its lines is).
//!
//! Reference: scikit-learn `precision_score` / `recall_score` / `f1_score` /
//! `accuracy_score` with `average="binary"`, including its floating-point
//! expressions (`F1 = 2*tp / (true_sum + pred_sum)`) and `zero_division=0`
//! (a 0/0 ratio gives 0.0; sklearn's default also warns).
use rustc_hash::FxHashMap;

use crate::error::Result;
use crate::metrics::util::check_pair;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinaryScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

/// Scores of predictions `y_pred` against `y_true` (true = positive class).
pub fn binary_scores(y_true: &[bool], y_pred: &[bool]) -> Result<BinaryScores> {
    check_pair("binary_scores", y_true.len(), y_pred.len())?;
    let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
    for (&t, &p) in y_true.iter().zip(y_pred) {
        match (t, p) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
    let pred_sum = (tp + fp) as f64;
    let true_sum = (tp + fn_) as f64;
    Ok(BinaryScores {
        precision: div(tp as f64, pred_sum),
        recall: div(tp as f64, true_sum),
        f1: div(2.0 * tp as f64, true_sum + pred_sum),
        accuracy: (tp + tn) as f64 / y_true.len() as f64,
        tp,
        fp,
        fn_,
        tn,
    })
}

/// Collapse line labels into session labels (any positive line makes the session
/// positive). Returns (session ids in first-seen order, labels per session).
pub fn session_labels(session_ids: &[i64], labels: &[bool]) -> Result<(Vec<i64>, Vec<bool>)> {
    check_pair("session_labels", session_ids.len(), labels.len())?;
    let mut idx: FxHashMap<i64, usize> = FxHashMap::default();
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for (&s, &l) in session_ids.iter().zip(labels) {
        let k = *idx.entry(s).or_insert_with(|| {
            ids.push(s);
            out.push(false);
            ids.len() - 1
        });
        out[k] |= l;
    }
    Ok((ids, out))
}

/// Session-level scores: a session is positive when any of its lines is.
pub fn session_scores(session_ids: &[i64], y_true: &[bool], y_pred: &[bool]) -> Result<BinaryScores> {
    check_pair("session_scores", y_true.len(), y_pred.len())?;
    let (_, t) = session_labels(session_ids, y_true)?;
    let (_, p) = session_labels(session_ids, y_pred)?;
    binary_scores(&t, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn counts_and_zero_division() {
        let s = binary_scores(&[true, false, true, false], &[true, true, false, false]).unwrap();
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (1, 1, 1, 1));
        assert_eq!(s.f1, 0.5);
        let z = binary_scores(&[false, false], &[false, false]).unwrap();
        assert_eq!((z.precision, z.recall, z.f1, z.accuracy), (0.0, 0.0, 0.0, 1.0));
        let ss = session_scores(&[1, 1, 2, 3], &[false, true, false, false], &[true, false, false, true]).unwrap();
        assert_eq!((ss.tp, ss.fp, ss.tn), (1, 1, 1));
        assert!(binary_scores(&[], &[]).is_err());
    }
}
