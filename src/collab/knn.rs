//! The small model of the collaborative detector: k-nearest neighbours over
//! L2-normalised session embeddings with similarity-weighted voting, reporting
//! its own uncertainty, plus the similarity router of the zero-label mode.
//!
//! Follows CoorLog / CollaborLog (a cheap model handles routine sessions) and
//! FusionLog / GeneralLog (a training-free router on semantic similarity to a
//! source memory). Cosine similarity is the dot product of unit vectors;
//! weights are `exp((sim - max_sim) / temperature)` over the k nearest.
use rayon::prelude::*;

use crate::error::{Error, Result};

/// What the vote says about one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    /// Weighted fraction of anomalous neighbours, in [0, 1].
    pub score: f32,
    /// `1 - |2 score - 1|`: 0 when the neighbours agree, 1 when split evenly.
    pub uncertainty: f32,
    /// Cosine similarity of the nearest neighbour.
    pub max_sim: f32,
    /// Indices of the k nearest memory rows, nearest first.
    pub neighbours: Vec<u32>,
    pub sims: Vec<f32>,
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn check_matrix(x: &[f32], dim: usize, name: &str) -> Result<usize> {
    if dim == 0 {
        return Err(Error::InvalidArgument("embedding dimension must be >= 1".into()));
    }
    if x.is_empty() {
        return Err(Error::InvalidArgument(format!("{name} is empty")));
    }
    if x.len() % dim != 0 {
        return Err(Error::InvalidArgument(format!("{name}: {} values is not a multiple of dim {dim}", x.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!("{name} contains NaN or infinity")));
    }
    Ok(x.len() / dim)
}

/// Vote for every row of `queries` among the `k` most similar rows of
/// `memory` (labels: 1.0 anomalous, 0.0 normal; fractional soft labels are
/// allowed).
pub fn knn_vote(
    memory: &[f32],
    labels: &[f32],
    queries: &[f32],
    dim: usize,
    k: usize,
    temperature: f32,
) -> Result<Vec<Vote>> {
    let n = check_matrix(memory, dim, "memory")?;
    let q = check_matrix(queries, dim, "queries")?;
    if labels.len() != n {
        return Err(Error::InvalidArgument(format!("{} labels for {n} memory rows", labels.len())));
    }
    if labels.iter().any(|l| !(0.0..=1.0).contains(l)) {
        return Err(Error::InvalidArgument("labels must lie in [0, 1]".into()));
    }
    if k == 0 {
        return Err(Error::InvalidArgument("k must be >= 1".into()));
    }
    if !(temperature > 0.0) {
        return Err(Error::InvalidArgument("temperature must be > 0".into()));
    }
    let k = k.min(n);
    Ok((0..q)
        .into_par_iter()
        .map(|i| {
            let qv = &queries[i * dim..(i + 1) * dim];
            let sims: Vec<f32> = (0..n).map(|j| dot(qv, &memory[j * dim..(j + 1) * dim])).collect();
            let mut idx: Vec<u32> = (0..n as u32).collect();
            let cmp = |a: &u32, b: &u32| {
                sims[*b as usize].total_cmp(&sims[*a as usize]).then(a.cmp(b))
            };
            if k < n {
                idx.select_nth_unstable_by(k - 1, cmp);
                idx.truncate(k);
            }
            idx.sort_unstable_by(cmp);
            let top: Vec<f32> = idx.iter().map(|&j| sims[j as usize]).collect();
            let m = top[0];
            let (mut wsum, mut ysum) = (0f32, 0f32);
            for (&j, &s) in idx.iter().zip(&top) {
                let w = ((s - m) / temperature).exp();
                wsum += w;
                ysum += w * labels[j as usize];
            }
            let score = (ysum / wsum).clamp(0.0, 1.0);
            Vote { score, uncertainty: 1.0 - (2.0 * score - 1.0).abs(), max_sim: m, neighbours: idx, sims: top }
        })
        .collect())
}

/// Cosine similarity of each query to its nearest memory row (the
/// zero-label router: below a threshold a session is "proprietary"/novel).
pub fn max_similarity(memory: &[f32], queries: &[f32], dim: usize) -> Result<Vec<f32>> {
    let n = check_matrix(memory, dim, "memory")?;
    let q = check_matrix(queries, dim, "queries")?;
    Ok((0..q)
        .into_par_iter()
        .map(|i| {
            let qv = &queries[i * dim..(i + 1) * dim];
            (0..n).map(|j| dot(qv, &memory[j * dim..(j + 1) * dim])).fold(f32::NEG_INFINITY, f32::max)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn weighted_vote() {
        // Two normal points near e0, one anomalous at e1.
        let mem: Vec<f32> = [unit(&[1.0, 0.1, 0.0]), unit(&[1.0, -0.1, 0.0]), unit(&[0.0, 1.0, 0.0])].concat();
        let labels = [0.0, 0.0, 1.0];
        let q: Vec<f32> = [unit(&[1.0, 0.0, 0.0]), unit(&[0.1, 1.0, 0.0]), unit(&[1.0, 1.0, 0.0])].concat();
        let v = knn_vote(&mem, &labels, &q, 3, 3, 0.1).unwrap();
        assert!(v[0].score < 0.01 && v[0].uncertainty < 0.05, "{:?}", v[0]);
        assert!(v[1].score > 0.99, "{:?}", v[1]);
        assert_eq!(v[1].neighbours[0], 2);
        // Equidistant-ish: the vote is split, uncertainty high.
        assert!(v[2].uncertainty > 0.5, "{:?}", v[2]);
        // k = 1 takes the nearest label.
        let v1 = knn_vote(&mem, &labels, &q, 3, 1, 0.1).unwrap();
        assert_eq!(v1[1].score, 1.0);
        assert_eq!(v1[0].neighbours.len(), 1);
        // A big temperature makes the vote a plain majority.
        let vt = knn_vote(&mem, &labels, &q[..3], 3, 3, 1e6).unwrap();
        assert!((vt[0].score - 1.0 / 3.0).abs() < 1e-3);
        let ms = max_similarity(&mem, &q, 3).unwrap();
        assert!((ms[0] - v[0].max_sim).abs() < 1e-6);
    }

    #[test]
    fn bad_inputs() {
        let mem = vec![1.0, 0.0];
        assert!(knn_vote(&mem, &[0.0, 1.0], &mem, 2, 1, 0.1).is_err());
        assert!(knn_vote(&mem, &[2.0], &mem, 2, 1, 0.1).is_err());
        assert!(knn_vote(&mem, &[0.0], &[1.0, 0.0, 1.0], 2, 1, 0.1).is_err());
        assert!(knn_vote(&mem, &[0.0], &mem, 2, 0, 0.1).is_err());
        assert!(knn_vote(&[], &[], &mem, 2, 1, 0.1).is_err());
        assert!(knn_vote(&mem, &[0.0], &[f32::NAN, 0.0], 2, 1, 0.1).is_err());
    }
}
