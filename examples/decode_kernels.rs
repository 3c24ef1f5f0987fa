//! Dev benchmark: how fast the decode kernels stream quantized weights, against a
//! plain read of the same bytes in the same run.
//!
//! `cargo run --release --example decode_kernels [-- LAYERS]`
//!
//! Builds LAYERS (default 120, ~66 MB of Q4_1, more than any L3 cache) random
//! 1536x576 layers, as SmolLM2's FFN matrices, in Q4_1 and in Q8_0, and times
//! `Linear::forward_path(.., Path::Rows)` for 1, 2, 4 and 8 activation rows on 1
//! and 2 threads (best of 7). With one row a decode step is memory-bound: the
//! figure to compare is GB/s of weights against the plain read.
use loglm::model::linear::{Linear, Path, Weight};
use loglm::model::quant::{self, BlockQ4_1};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::time::Instant;

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let n_layers: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(120);
    let (n, k) = (1536usize, 576usize);
    let mut r = rand::rngs::StdRng::seed_from_u64(1);
    let x: Vec<f32> = (0..8 * k).map(|_| r.random_range(-1.0f32..1.0)).collect();
    for kind in ["q4_1", "q8_0"] {
        let layers: Vec<Linear> = (0..n_layers)
            .map(|_| {
                let w = if kind == "q4_1" {
                    let b: Vec<BlockQ4_1> = (0..n * k / quant::QK)
                        .map(|_| BlockQ4_1 {
                            d: half::f16::from_f32(r.random_range(0.01..0.02)),
                            m: half::f16::from_f32(-0.1),
                            qs: std::array::from_fn(|_| r.random()),
                        })
                        .collect();
                    Weight::Q4_1(b)
                } else {
                    let v: Vec<f32> = (0..n * k).map(|_| r.random_range(-1.0f32..1.0)).collect();
                    let mut b = Vec::new();
                    quant::quantize_q8_0(&v, &mut b);
                    Weight::Q8_0(b)
                };
                Linear::new(n, k, w)
            })
            .collect();
        let bytes: usize = layers.iter().map(|l| l.weight_bytes()).sum();
        println!("{kind}: {n_layers} layers of {n}x{k}, {:.1} MB", bytes as f64 / 1e6);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            // The reference: the same number of bytes read once, summed as u64 words.
            let words: Vec<Vec<u64>> = layers.iter().map(|l| vec![1u64; l.weight_bytes() / 8]).collect();
            let plain = best_of(7, || {
                let s: u64 = pool.install(|| words.par_iter().map(|w| w.iter().fold(0u64, |a, &v| a.wrapping_add(v))).sum());
                std::hint::black_box(s);
            });
            let plain_gbs = bytes as f64 / plain / 1e9;
            println!("  {threads} thread(s): plain read {plain_gbs:.1} GB/s");
            for m in [1usize, 2, 4, 8] {
                let mut out = vec![0f32; m * n];
                let dt = best_of(7, || {
                    pool.install(|| {
                        for l in &layers {
                            l.forward_path(&x[..m * k], m, &mut out, Path::Rows);
                        }
                    })
                });
                let gbs = bytes as f64 / dt / 1e9;
                println!(
                    "    {m} row(s): {:6.1} us/layer, weights at {gbs:5.1} GB/s = {:.2} x plain read, {:6.1} G MAC/s",
                    dt / n_layers as f64 * 1e6,
                    gbs / plain_gbs,
                    (m * n * k * n_layers) as f64 / dt / 1e9
                );
            }
        }
    }
}
