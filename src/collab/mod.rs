//! Collaborative anomaly detection (issue 6): the coordinator that routes
//! routine sessions to a small model and novel ones to an LLM.
//!
//! Follows CoorLog / CollaborLog (an autoencoder over session embeddings
//! decides "known" vs "novel"; its threshold tau is a percentile of the
//! training reconstruction error; LLM verdicts are fed back and the
//! coordinator is refit) and FusionLog / GeneralLog (a training-free
//! similarity router for the zero-label mode, in [`knn`]). The LLM side and
//! the session bookkeeping live in Python (`loglm/collab.py`).
pub mod autoencoder;
pub mod knn;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

pub use autoencoder::{Autoencoder, TrainConfig};
pub use knn::{knn_vote, max_similarity, Vote};

use crate::error::{Error, Result};

/// `p`-th percentile (0..=100) with linear interpolation (numpy's default).
pub fn percentile(values: &[f32], p: f64) -> Result<f32> {
    if values.is_empty() {
        return Err(Error::InvalidArgument("percentile of an empty set".into()));
    }
    if !(0.0..=100.0).contains(&p) {
        return Err(Error::InvalidArgument(format!("percentile must lie in [0, 100], got {p}")));
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = p / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = (pos - lo as f64) as f32;
    Ok(v[lo] + (v[hi] - v[lo]) * frac)
}

/// The autoencoder coordinator: `route` flags sessions whose reconstruction
/// error exceeds `tau` (the `percentile`-th percentile of the training errors).
pub struct Coordinator {
    pub ae: Autoencoder,
    pub tau: f32,
    pub percentile: f64,
}

impl Coordinator {
    pub fn new(input_dim: usize, hidden: &[usize], percentile: f64, seed: u64) -> Result<Self> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(Error::InvalidArgument(format!("percentile must lie in [0, 100], got {percentile}")));
        }
        Ok(Self { ae: Autoencoder::new(input_dim, hidden, seed)?, tau: f32::INFINITY, percentile })
    }

    /// Train (or keep training) on `n` known sessions and reset tau.
    pub fn fit(&mut self, x: &[f32], n: usize, cfg: &TrainConfig, progress: &mut dyn FnMut(usize, f32)) -> Result<Vec<f32>> {
        let losses = self.ae.fit(x, n, cfg, progress)?;
        self.tau = percentile(&self.ae.errors(x, n)?, self.percentile)?;
        Ok(losses)
    }

    /// Reconstruction errors and the novel flag (`error > tau`) of each session.
    pub fn route(&self, x: &[f32], n: usize) -> Result<(Vec<f32>, Vec<bool>)> {
        let e = self.ae.errors(x, n)?;
        let novel = e.iter().map(|&v| v > self.tau).collect();
        Ok((e, novel))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t = self.ae.tensors();
        t.insert("coordinator.tau".into(), Tensor::new(&[self.tau], &Device::Cpu)?);
        t.insert("coordinator.percentile".into(), Tensor::new(&[self.percentile], &Device::Cpu)?);
        candle_core::safetensors::save(&t, path)?;
        Ok(())
    }

    pub fn load(path: &Path, seed: u64) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        let t: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::ModelFormat(format!("{}: {e}", path.display())))?;
        let get = |k: &str| {
            t.get(k).ok_or_else(|| Error::ModelFormat(format!("{}: missing {k}", path.display())))
        };
        let tau = get("coordinator.tau")?.to_vec1::<f32>()?[0];
        let percentile = get("coordinator.percentile")?.to_vec1::<f64>()?[0];
        Ok(Self { ae: Autoencoder::from_tensors(&t, seed)?, tau, percentile })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        let v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.0).unwrap(), 1.0);
        assert_eq!(percentile(&v, 100.0).unwrap(), 4.0);
        assert!((percentile(&v, 95.0).unwrap() - 3.85).abs() < 1e-6);
        assert!(percentile(&[], 50.0).is_err());
        assert!(percentile(&v, 101.0).is_err());
    }

    #[test]
    fn coordinator_routes_and_roundtrips() {
        // Known: rows on the e0..e3 axes; novel: a far-away direction.
        let mut x = Vec::new();
        for i in 0..120 {
            let mut r = vec![0f32; 8];
            r[i % 4] = 1.0;
            x.extend(r);
        }
        let mut c = Coordinator::new(8, &[4, 2], 95.0, 1).unwrap();
        c.fit(&x, 120, &TrainConfig { epochs: 60, batch_size: 16, lr: 1e-2 }, &mut |_, _| {}).unwrap();
        let mut novel = vec![0f32; 8];
        novel[6] = 0.6;
        novel[7] = -0.8;
        let q = [&x[..8], &novel[..]].concat();
        let (e, flags) = c.route(&q, 2).unwrap();
        assert!(!flags[0] && flags[1], "errors {e:?} tau {}", c.tau);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.safetensors");
        c.save(&p).unwrap();
        let c2 = Coordinator::load(&p, 0).unwrap();
        assert_eq!(c2.tau, c.tau);
        assert_eq!(c2.route(&q, 2).unwrap(), (e, flags));
    }
}
