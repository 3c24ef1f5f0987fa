//! A small fully-connected autoencoder over session embeddings, trained with
//! candle-nn (Adam, MSE), whose per-sample reconstruction error measures how
//! unlike the training sessions a session is.
//!
//! Follows CoorLog / CollaborLog's coordinator: an autoencoder fitted on the
//! embeddings of known sessions; sessions it reconstructs badly are "novel".
//! Training is deterministic for a seed: weights are drawn from a seeded
//! ChaCha RNG (PyTorch's `Linear` init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and
//! mini-batches are shuffled with the same RNG.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Training hyper-parameters.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 30, batch_size: 64, lr: 1e-3 }
    }
}

/// `dims = [input, h1, ..., bottleneck]`; the decoder mirrors the encoder.
/// Hidden layers use ReLU (tanh at the bottleneck); the output is linear.
pub struct Autoencoder {
    dims: Vec<usize>,
    layers: Vec<(Var, Var)>, // (weight [out, in], bias [out])
    rng: StdRng,
    device: Device,
}

impl Autoencoder {
    /// A freshly initialised autoencoder; `hidden` are the encoder widths after
    /// the input (e.g. `[64, 16]`), the last one being the bottleneck.
    pub fn new(input_dim: usize, hidden: &[usize], seed: u64) -> Result<Self> {
        if input_dim == 0 || hidden.is_empty() || hidden.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "autoencoder needs input_dim >= 1 and non-empty, non-zero hidden sizes (got {input_dim}, {hidden:?})"
            )));
        }
        let device = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![input_dim];
        dims.extend_from_slice(hidden);
        let mut shape: Vec<(usize, usize)> = dims.windows(2).map(|w| (w[0], w[1])).collect();
        let dec: Vec<(usize, usize)> = shape.iter().rev().map(|&(a, b)| (b, a)).collect();
        shape.extend(dec);
        let mut layers = Vec::with_capacity(shape.len());
        for (fan_in, fan_out) in shape {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let w: Vec<f32> = (0..fan_in * fan_out).map(|_| rng.random_range(-bound..bound)).collect();
            let b: Vec<f32> = (0..fan_out).map(|_| rng.random_range(-bound..bound)).collect();
            layers.push((
                Var::from_tensor(&Tensor::from_vec(w, (fan_out, fan_in), &device)?)?,
                Var::from_tensor(&Tensor::from_vec(b, fan_out, &device)?)?,
            ));
        }
        Ok(Self { dims, layers, rng, device })
    }

    pub fn input_dim(&self) -> usize {
        self.dims[0]
    }

    /// `[input, h1, ..., bottleneck]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.layers.len();
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i + 1 == n {
                break;
            }
            h = if i + 1 == n / 2 { h.tanh()? } else { h.relu()? };
        }
        Ok(h)
    }

    fn check(&self, x: &[f32], n: usize) -> Result<()> {
        let d = self.dims[0];
        if n == 0 {
            return Err(Error::InvalidArgument("no samples given to the autoencoder".into()));
        }
        if x.len() != n * d {
            return Err(Error::InvalidArgument(format!(
                "autoencoder expects {n} x {d} = {} values, got {}",
                n * d,
                x.len()
            )));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument("autoencoder input contains NaN or infinity".into()));
        }
        Ok(())
    }

    /// Train on `n` row-major samples; returns the mean training loss of each
    /// epoch. Calling it again continues from the current weights (warm refit).
    pub fn fit(
        &mut self,
        x: &[f32],
        n: usize,
        cfg: &TrainConfig,
        progress: &mut dyn FnMut(usize, f32),
    ) -> Result<Vec<f32>> {
        self.check(x, n)?;
        if cfg.batch_size == 0 || !(cfg.lr > 0.0) {
            return Err(Error::InvalidArgument("batch_size must be >= 1 and lr > 0".into()));
        }
        let d = self.dims[0];
        let data = Tensor::from_vec(x.to_vec(), (n, d), &self.device)?;
        let vars: Vec<Var> = self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
        let mut opt = AdamW::new(vars, ParamsAdamW { lr: cfg.lr, weight_decay: 0.0, ..Default::default() })?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        let mut losses = Vec::with_capacity(cfg.epochs);
        for epoch in 0..cfg.epochs {
            order.shuffle(&mut self.rng);
            let mut total = 0f64;
            for chunk in order.chunks(cfg.batch_size) {
                let idx = Tensor::from_slice(chunk, chunk.len(), &self.device)?;
                let xb = data.index_select(&idx, 0)?;
                let loss = (self.forward(&xb)? - &xb)?.sqr()?.mean_all()?;
                opt.backward_step(&loss)?;
                total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            }
            let mean = (total / n as f64) as f32;
            losses.push(mean);
            progress(epoch + 1, mean);
        }
        Ok(losses)
    }

    /// Mean squared reconstruction error of each of the `n` samples.
    pub fn errors(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check(x, n)?;
        let d = self.dims[0];
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(4096) {
            let m = (n - start).min(4096);
            let xb = Tensor::from_slice(&x[start * d..(start + m) * d], (m, d), &self.device)?;
            let e = (self.forward(&xb)? - &xb)?.sqr()?.mean(1)?;
            out.extend(e.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The weights as named tensors (`layers.{i}.weight` / `.bias`).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            m.insert(format!("layers.{i}.weight"), w.as_tensor().clone());
            m.insert(format!("layers.{i}.bias"), b.as_tensor().clone());
        }
        m
    }

    /// Rebuild from named tensors written by [`Self::tensors`]; `seed` seeds
    /// the shuffling of any later refit.
    pub fn from_tensors(t: &HashMap<String, Tensor>, seed: u64) -> Result<Self> {
        let device = Device::Cpu;
        let mut layers = Vec::new();
        let mut dims = Vec::new();
        for i in 0.. {
            let (Some(w), Some(b)) = (t.get(&format!("layers.{i}.weight")), t.get(&format!("layers.{i}.bias")))
            else {
                break;
            };
            let w = w.to_dtype(DType::F32)?;
            let b = b.to_dtype(DType::F32)?;
            let (out, inp) = w.dims2().map_err(|e| Error::ModelFormat(format!("layer {i}: {e}")))?;
            if b.dims() != [out] {
                return Err(Error::ModelFormat(format!("layer {i}: bias shape {:?} != [{out}]", b.dims())));
            }
            if let Some(&prev) = dims.last() {
                if prev != inp {
                    return Err(Error::ModelFormat(format!("layer {i}: input width {inp} != {prev}")));
                }
            } else {
                dims.push(inp);
            }
            dims.push(out);
            layers.push((Var::from_tensor(&w)?, Var::from_tensor(&b)?));
        }
        let nl = layers.len();
        if nl < 2 || nl % 2 != 0 || dims[0] != dims[nl] {
            return Err(Error::ModelFormat(format!("not an autoencoder: {nl} layers, widths {dims:?}")));
        }
        dims.truncate(nl / 2 + 1);
        Ok(Self { dims, layers, rng: StdRng::seed_from_u64(seed), device })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors(), path)?;
        Ok(())
    }

    pub fn load(path: &Path, seed: u64) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::ModelFormat(format!("{}: {e}", path.display())))?;
        Self::from_tensors(&t, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points near a 3-d subspace of R^16, normalised.
    pub(crate) fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let basis: Vec<f32> = (0..3 * 16).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let mut x = Vec::new();
        for _ in 0..n {
            let c: [f32; 3] = [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)];
            let mut row: Vec<f32> = (0..16)
                .map(|j| c[0] * basis[j] + c[1] * basis[16 + j] + c[2] * basis[32 + j] + rng.random_range(-0.01..0.01))
                .collect();
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            row.iter_mut().for_each(|v| *v /= norm);
            x.extend(row);
        }
        x
    }

    #[test]
    fn training_reduces_loss_and_is_deterministic() {
        let x = data(200, 1);
        let cfg = TrainConfig { epochs: 40, batch_size: 32, lr: 5e-3 };
        let mut a = Autoencoder::new(16, &[8, 3], 7).unwrap();
        let la = a.fit(&x, 200, &cfg, &mut |_, _| {}).unwrap();
        assert!(la[la.len() - 1] < 0.5 * la[0], "loss {la:?}");
        let mut b = Autoencoder::new(16, &[8, 3], 7).unwrap();
        let lb = b.fit(&x, 200, &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(la, lb);
        assert_eq!(a.errors(&x, 200).unwrap(), b.errors(&x, 200).unwrap());
        let mut c = Autoencoder::new(16, &[8, 3], 8).unwrap();
        let lc = c.fit(&x, 200, &cfg, &mut |_, _| {}).unwrap();
        assert_ne!(la, lc);
        // An off-subspace point reconstructs worse than the training data.
        let e = a.errors(&x, 200).unwrap();
        let mean_e = e.iter().sum::<f32>() / 200.0;
        let mut odd = vec![0f32; 16];
        odd[0] = 0.7071;
        odd[15] = -0.7071;
        let eo = a.errors(&odd, 1).unwrap()[0];
        assert!(eo > 3.0 * mean_e, "{eo} vs {mean_e}");
    }

    #[test]
    fn save_load_roundtrip_and_bad_inputs() {
        let x = data(50, 2);
        let mut a = Autoencoder::new(16, &[4], 3).unwrap();
        a.fit(&x, 50, &TrainConfig { epochs: 3, ..Default::default() }, &mut |_, _| {}).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ae.safetensors");
        a.save(&p).unwrap();
        let b = Autoencoder::load(&p, 0).unwrap();
        assert_eq!(b.dims(), &[16, 4]);
        assert_eq!(a.errors(&x, 50).unwrap(), b.errors(&x, 50).unwrap());
        assert!(a.errors(&x, 49).is_err());
        assert!(a.errors(&[], 0).is_err());
        assert!(a.errors(&[f32::NAN; 16], 1).is_err());
        assert!(Autoencoder::new(16, &[], 0).is_err());
        assert!(matches!(Autoencoder::load(&d.path().join("x"), 0), Err(Error::NotFound(_))));
    }
}
