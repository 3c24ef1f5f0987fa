//! Engine tests on tiny random-weight models written by the tests themselves:
//! the forward pass against a naive f32 reference, batching invariance,
//! chunked prefill, GGUF and safetensors round trips, and bad files.
use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use super::forward::{Chunk, Logits};
use super::linear::{self, Linear, Weight};
use super::quant::{self, BlockQ4_1};
use super::*;

pub(crate) fn tiny_config(arch: Arch) -> Config {
    Config {
        arch,
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        n_ff: 96,
        vocab_size: 300,
        rope_theta: 10_000.0,
        rope_style: match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 => RopeStyle::Neox,
        },
        rms_eps: 1e-5,
        train_context: 256,
        kv_f16: false,
    }
}

fn randn(r: &mut rand::rngs::StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-1.0f32..1.0) * scale).collect()
}

/// Random dense tensors by GGUF name (llama.cpp naming), deterministic per seed.
pub(crate) fn tiny_tensors(cfg: &Config, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = Vec::new();
    let (d, ff, qd, kvd) = (cfg.n_embd, cfg.n_ff, cfg.q_dim(), cfg.kv_dim());
    t.push(("token_embd.weight".to_string(), vec![cfg.vocab_size, d], randn(&mut r, cfg.vocab_size * d, 0.5)));
    t.push(("output_norm.weight".to_string(), vec![d], (0..d).map(|_| r.random_range(0.8f32..1.2)).collect()));
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}");
        let s = 0.15;
        t.push((p("attn_norm.weight"), vec![d], (0..d).map(|_| r.random_range(0.8f32..1.2)).collect()));
        t.push((p("attn_q.weight"), vec![qd, d], randn(&mut r, qd * d, s)));
        t.push((p("attn_k.weight"), vec![kvd, d], randn(&mut r, kvd * d, s)));
        t.push((p("attn_v.weight"), vec![kvd, d], randn(&mut r, kvd * d, s)));
        t.push((p("attn_output.weight"), vec![d, qd], randn(&mut r, d * qd, s)));
        if cfg.arch == Arch::Qwen2 {
            t.push((p("attn_q.bias"), vec![qd], randn(&mut r, qd, 0.1)));
            t.push((p("attn_k.bias"), vec![kvd], randn(&mut r, kvd, 0.1)));
            t.push((p("attn_v.bias"), vec![kvd], randn(&mut r, kvd, 0.1)));
        }
        t.push((p("ffn_norm.weight"), vec![d], (0..d).map(|_| r.random_range(0.8f32..1.2)).collect()));
        t.push((p("ffn_gate.weight"), vec![ff, d], randn(&mut r, ff * d, s)));
        t.push((p("ffn_up.weight"), vec![ff, d], randn(&mut r, ff * d, s)));
        t.push((p("ffn_down.weight"), vec![d, ff], randn(&mut r, d * ff, s)));
    }
    t
}

/// Build an in-memory model; matrices stored as `dtype` (F32, Q8_0 or Q4_1).
pub(crate) fn tiny_model(cfg: &Config, seed: u64, dtype: GgmlDType) -> Model {
    let tensors = tiny_tensors(cfg, seed);
    let map: HashMap<String, (Vec<usize>, Vec<f32>)> =
        tensors.into_iter().map(|(n, s, v)| (n, (s, v))).collect();
    let lin = |n: &str| -> Linear {
        let (s, v) = &map[n];
        let w = match dtype {
            GgmlDType::F32 => Weight::F32(v.clone()),
            GgmlDType::Q8_0 => {
                let mut b = Vec::new();
                quant::quantize_q8_0(v, &mut b);
                Weight::Q8_0(b)
            }
            GgmlDType::Q4_1 => {
                let qt = QTensor::quantize(&Tensor::from_slice(v, (s[0], s[1]), &Device::Cpu).unwrap(), GgmlDType::Q4_1)
                    .unwrap();
                Weight::Q4_1(quant::blocks_from_bytes::<BlockQ4_1>(&qt.data().unwrap()).unwrap())
            }
            other => panic!("unsupported test dtype {other:?}"),
        };
        Linear::new(s[0], s[1], w)
    };
    let vecf = |n: &str| map[n].1.clone();
    let opt = |n: &str| map.get(n).map(|x| x.1.clone());
    let layers = (0..cfg.n_layer)
        .map(|i| {
            let p = |s: &str| format!("blk.{i}.{s}");
            Layer {
                attn_norm: vecf(&p("attn_norm.weight")),
                wq: lin(&p("attn_q.weight")),
                wk: lin(&p("attn_k.weight")),
                wv: lin(&p("attn_v.weight")),
                wo: lin(&p("attn_output.weight")),
                bq: opt(&p("attn_q.bias")),
                bk: opt(&p("attn_k.bias")),
                bv: opt(&p("attn_v.bias")),
                ffn_norm: vecf(&p("ffn_norm.weight")),
                w_gate: lin(&p("ffn_gate.weight")),
                w_up: lin(&p("ffn_up.weight")),
                w_down: lin(&p("ffn_down.weight")),
            }
        })
        .collect();
    let weights = Weights { embed: lin("token_embd.weight"), layers, out_norm: vecf("output_norm.weight"), lm_head: None };
    Model::new(cfg.clone(), weights, Some(256), Some(2)).unwrap()
}

fn dense(l: &Linear) -> Vec<Vec<f32>> {
    (0..l.out_dim)
        .map(|r| {
            let mut o = vec![0f32; l.in_dim];
            l.row_f32(r, &mut o);
            o
        })
        .collect()
}

fn matvec(w: &[Vec<f32>], x: &[f32]) -> Vec<f32> {
    w.iter().map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ss + eps).sqrt();
    x.iter().zip(w).map(|(a, b)| a * s * b).collect()
}

fn rope_ref(h: &mut [f32], pos: usize, theta: f32, style: RopeStyle) {
    let hd = h.len();
    for i in 0..hd / 2 {
        let f = 1.0f64 / (theta as f64).powf(2.0 * i as f64 / hd as f64);
        let (c, s) = ((pos as f64 * f).cos() as f32, (pos as f64 * f).sin() as f32);
        let (a, b) = match style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + hd / 2),
        };
        let (x0, x1) = (h[a], h[b]);
        h[a] = x0 * c - x1 * s;
        h[b] = x0 * s + x1 * c;
    }
}

/// Straightforward f32 forward over a whole sequence: logits at every position.
pub(crate) fn reference_logits(m: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let cfg = &m.cfg;
    let w = &m.weights;
    let emb = dense(&w.embed);
    let mut xs: Vec<Vec<f32>> = tokens.iter().map(|&t| emb[t as usize].clone()).collect();
    let hd = cfg.head_dim;
    let group = cfg.n_head / cfg.n_head_kv;
    for l in &w.layers {
        let (wq, wk, wv, wo) = (dense(&l.wq), dense(&l.wk), dense(&l.wv), dense(&l.wo));
        let (wg, wu, wd) = (dense(&l.w_gate), dense(&l.w_up), dense(&l.w_down));
        let add = |mut v: Vec<f32>, b: &Option<Vec<f32>>| {
            if let Some(b) = b {
                v.iter_mut().zip(b).for_each(|(a, c)| *a += c);
            }
            v
        };
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let xn = rmsnorm(x, &l.attn_norm, cfg.rms_eps);
            let mut q = add(matvec(&wq, &xn), &l.bq);
            let mut k = add(matvec(&wk, &xn), &l.bk);
            for h in q.chunks_mut(hd) {
                rope_ref(h, p, cfg.rope_theta, cfg.rope_style);
            }
            for h in k.chunks_mut(hd) {
                rope_ref(h, p, cfg.rope_theta, cfg.rope_style);
            }
            // The engine's cache holds f16 for quantized models: the reference rounds the same way.
            let kv = |v: Vec<f32>| -> Vec<f32> {
                if cfg.kv_f16 {
                    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
                } else {
                    v
                }
            };
            qs.push(q);
            ks.push(kv(k));
            vs.push(kv(add(matvec(&wv, &xn), &l.bv)));
        }
        for p in 0..xs.len() {
            let mut att = vec![0f32; cfg.q_dim()];
            for h in 0..cfg.n_head {
                let g = h / group;
                let q = &qs[p][h * hd..(h + 1) * hd];
                let scores: Vec<f32> = (0..=p)
                    .map(|j| q.iter().zip(&ks[j][g * hd..(g + 1) * hd]).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt())
                    .collect();
                let mx = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for d in 0..hd {
                        att[h * hd + d] += ej / z * vs[j][g * hd + d];
                    }
                }
            }
            let o = matvec(&wo, &att);
            xs[p].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rmsnorm(&xs[p], &l.ffn_norm, cfg.rms_eps);
            let g = matvec(&wg, &xn);
            let u = matvec(&wu, &xn);
            let hmid: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a / (1.0 + (-a).exp()) * b).collect();
            let dn = matvec(&wd, &hmid);
            xs[p].iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
        }
    }
    let head = dense(w.lm_head());
    xs.iter().map(|x| matvec(&head, &rmsnorm(x, &w.out_norm, cfg.rms_eps))).collect()
}

pub(crate) fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

pub(crate) fn tokens(n: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(0..vocab as u32)).collect()
}

/// Logits of every position, feeding `toks` one chunk at a time.
pub(crate) fn run_chunks(m: &Model, toks: &[u32], chunk: usize) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(&m.cfg, toks.len());
    let mut out = Vec::new();
    for c in toks.chunks(chunk) {
        let r = m.forward(&mut [Chunk { cache: &mut cache, tokens: c, logits: Logits::All }]).unwrap();
        out.extend(r[0].data.chunks(m.cfg.vocab_size).map(|x| x.to_vec()));
    }
    out
}

#[test]
fn forward_matches_reference_f32_both_archs() {
    for arch in [Arch::Llama, Arch::Qwen2] {
        let cfg = tiny_config(arch);
        let m = tiny_model(&cfg, 1, GgmlDType::F32);
        let toks = tokens(40, 2, cfg.vocab_size);
        let want = reference_logits(&m, &toks);
        // prefill path (gemm), whole sequence at once
        let got = run_chunks(&m, &toks, 40);
        for (g, w) in got.iter().zip(&want) {
            assert!(max_rel_diff(g, w) < 1e-4, "{arch:?} prefill: {}", max_rel_diff(g, w));
        }
        // decode path (dot products), one token at a time
        let got = run_chunks(&m, &toks, 1);
        for (g, w) in got.iter().zip(&want) {
            assert!(max_rel_diff(g, w) < 1e-4, "{arch:?} decode: {}", max_rel_diff(g, w));
        }
    }
}

#[test]
fn quantized_forward_close_to_reference() {
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
        let cfg = tiny_config(Arch::Llama);
        let m = tiny_model(&cfg, 3, dtype);
        let toks = tokens(24, 4, cfg.vocab_size);
        // The reference uses the same (dequantized) weights; only activation
        // quantization on the decode path separates the two.
        let want = reference_logits(&m, &toks);
        for chunk in [24, 5, 1] {
            let got = run_chunks(&m, &toks, chunk);
            for (g, w) in got.iter().zip(&want) {
                let d = max_rel_diff(g, w);
                assert!(d < 0.03, "{dtype:?} chunk {chunk}: {d}");
            }
        }
    }
}

#[test]
fn batched_decode_is_bitwise_equal_to_single() {
    // 20 sequences: more rows than GEMM_MIN_ROWS, which decode steps (Path::Rows) must not notice.
    let cfg = tiny_config(Arch::Qwen2);
    let m = tiny_model(&cfg, 5, GgmlDType::Q4_1);
    let prompts: Vec<Vec<u32>> = (0..20).map(|i| tokens(3 + 7 * (i % 5), 10 + i as u64, cfg.vocab_size)).collect();
    // Sequences alone.
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| {
            let mut c = KvCache::new(&m.cfg, p.len() + 3);
            m.forward(&mut [Chunk { cache: &mut c, tokens: p, logits: Logits::Last }]).unwrap();
            (0..3u32)
                .map(|s| m.forward(&mut [Chunk { cache: &mut c, tokens: &[s + 1], logits: Logits::Last }]).unwrap()[0].data.clone())
                .collect()
        })
        .collect();
    for n in [4, 20] {
        // The first n sequences prefilled separately, then decoded together.
        let mut caches: Vec<KvCache> = prompts[..n].iter().map(|p| KvCache::new(&m.cfg, p.len() + 3)).collect();
        for (c, p) in caches.iter_mut().zip(&prompts) {
            m.forward(&mut [Chunk { cache: c, tokens: p, logits: Logits::Last }]).unwrap();
        }
        for s in 0..3u32 {
            let toks = [s + 1];
            let mut chunks: Vec<Chunk<'_>> =
                caches.iter_mut().map(|c| Chunk { cache: c, tokens: &toks, logits: Logits::Last }).collect();
            let out = m.forward_path(&mut chunks, linear::Path::Rows).unwrap();
            for (i, o) in out.iter().enumerate() {
                assert_eq!(o.data, alone[i][s as usize], "{n} sequences: sequence {i} step {s}");
            }
        }
    }
}

/// Dense steps (choice scoring): a chunk's logits do not depend on the chunks beside it,
/// one or many, fewer or more rows than GEMM_MIN_ROWS.
#[test]
fn dense_chunks_are_bitwise_independent_of_the_batch() {
    let cfg = tiny_config(Arch::Llama);
    let m = tiny_model(&cfg, 8, GgmlDType::Q8_0);
    let head = tokens(12, 3, cfg.vocab_size);
    let rests: Vec<Vec<u32>> = (0..24).map(|i| tokens(1 + i % 6, 40 + i as u64, cfg.vocab_size)).collect();
    let mut base = KvCache::new(&m.cfg, head.len());
    m.forward_path(&mut [Chunk { cache: &mut base, tokens: &head, logits: Logits::None }], linear::Path::Dense).unwrap();
    let run = |idx: &[usize]| -> Vec<Vec<f32>> {
        let mut caches: Vec<KvCache> = idx.iter().map(|&i| base.fork(&m.cfg, head.len() + rests[i].len())).collect();
        let mut chunks: Vec<Chunk<'_>> = caches
            .iter_mut()
            .zip(idx)
            .map(|(c, &i)| Chunk { cache: c, tokens: &rests[i], logits: Logits::Last })
            .collect();
        m.forward_path(&mut chunks, linear::Path::Dense).unwrap().into_iter().map(|o| o.data).collect()
    };
    let all: Vec<usize> = (0..rests.len()).collect();
    let together = run(&all);
    for i in 0..rests.len() {
        assert_eq!(run(&[i])[0], together[i], "chunk {i} alone");
    }
    let some = run(&[5, 1, 17]);
    assert_eq!((&some[0], &some[1], &some[2]), (&together[5], &together[1], &together[17]));
}

#[test]
fn forward_rejects_bad_tokens_and_overflow() {
    let cfg = tiny_config(Arch::Llama);
    let m = tiny_model(&cfg, 1, GgmlDType::F32);
    let mut c = KvCache::new(&m.cfg, 4);
    let e = m.forward(&mut [Chunk { cache: &mut c, tokens: &[9999], logits: Logits::Last }]);
    assert!(matches!(e, Err(crate::Error::InvalidArgument(_))));
    let e = m.forward(&mut [Chunk { cache: &mut c, tokens: &[1, 2, 3, 4, 5], logits: Logits::Last }]);
    assert!(matches!(e, Err(crate::Error::ContextLength { .. })));
    assert_eq!(c.len, 0, "a failed step must not advance the cache");
}

/// Write the tiny model as a GGUF file with matrices in `dtype`.
pub(crate) fn write_tiny_gguf(path: &Path, cfg: &Config, seed: u64, dtype: GgmlDType, extra: &[(&str, Value)]) {
    let arch = cfg.arch.name();
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(cfg.n_layer as u32)),
        (format!("{arch}.embedding_length"), Value::U32(cfg.n_embd as u32)),
        (format!("{arch}.feed_forward_length"), Value::U32(cfg.n_ff as u32)),
        (format!("{arch}.attention.head_count"), Value::U32(cfg.n_head as u32)),
        (format!("{arch}.attention.head_count_kv"), Value::U32(cfg.n_head_kv as u32)),
        (format!("{arch}.rope.freq_base"), Value::F32(cfg.rope_theta)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_eps)),
        (format!("{arch}.context_length"), Value::U32(cfg.train_context as u32)),
    ];
    for (k, v) in extra {
        md.push((k.to_string(), v.clone()));
    }
    let qts: Vec<(String, QTensor)> = tiny_tensors(cfg, seed)
        .into_iter()
        .map(|(n, s, v)| {
            let t = Tensor::from_vec(v, s.clone(), &Device::Cpu).unwrap();
            let dt = if s.len() == 2 { dtype } else { GgmlDType::F32 };
            (n, QTensor::quantize(&t, dt).unwrap())
        })
        .collect();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

#[test]
fn gguf_round_trip_all_supported_types() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Llama, Arch::Qwen2] {
        let cfg = tiny_config(arch);
        let toks = tokens(20, 9, cfg.vocab_size);
        for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q5_0] {
            let p = dir.path().join(format!("tiny-{arch:?}-{dtype:?}.gguf"));
            write_tiny_gguf(&p, &cfg, 7, dtype, &[]);
            let mut g = gguf::GgufFile::open(&p).unwrap();
            let (c2, w2) = gguf::load(&mut g).unwrap();
            assert_eq!(c2.n_layer, cfg.n_layer);
            assert_eq!(c2.vocab_size, cfg.vocab_size);
            let loaded = Model::new(c2, w2, Some(64), Some(1)).unwrap();
            let mem = tiny_model(&cfg, 7, GgmlDType::F32);
            let a = run_chunks(&loaded, &toks, 20);
            // Exact against a reference on the loaded (dequantized) weights...
            let exact = reference_logits(&loaded, &toks);
            for (x, y) in a.iter().zip(&exact) {
                assert!(max_rel_diff(x, y) < 1e-4, "{arch:?} {dtype:?}: {}", max_rel_diff(x, y));
            }
            // ...and close to the original f32 model within the type's quantization error.
            let b = reference_logits(&mem, &toks);
            let tol = match dtype {
                GgmlDType::F32 => 1e-4,
                GgmlDType::F16 | GgmlDType::Q8_0 => 0.02,
                _ => 0.4,
            };
            for (x, y) in a.iter().zip(&b) {
                let d = max_rel_diff(x, y);
                assert!(d < tol, "{arch:?} {dtype:?}: {d}");
            }
            let kind = loaded.weights.layers[0].wq.kind();
            let want_kind = match dtype {
                GgmlDType::F32 => "f32",
                GgmlDType::Q4_1 => "q4_1",
                _ => "q8_0",
            };
            assert_eq!(kind, want_kind, "{dtype:?} kept as {kind}");
        }
    }
}

#[test]
fn bad_gguf_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(Arch::Llama);
    let good = dir.path().join("good.gguf");
    write_tiny_gguf(&good, &cfg, 1, GgmlDType::Q8_0, &[]);
    let bytes = std::fs::read(&good).unwrap();
    // truncated in the tensor data
    let p = dir.path().join("trunc.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = gguf::GgufFile::open(&p).err().expect("truncated file must fail");
    assert!(matches!(e, crate::Error::ModelFormat(_)), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    // truncated in the header
    std::fs::write(&p, &bytes[..64]).unwrap();
    assert!(matches!(gguf::GgufFile::open(&p), Err(crate::Error::ModelFormat(_))));
    // not a GGUF file at all
    std::fs::write(&p, b"this is a text file, not a model").unwrap();
    let e = gguf::GgufFile::open(&p).err().unwrap();
    assert!(e.to_string().contains("not a GGUF"), "{e}");
    // empty
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(gguf::GgufFile::open(&p), Err(crate::Error::ModelFormat(_))));
    // missing
    assert!(matches!(gguf::GgufFile::open(&dir.path().join("nope.gguf")), Err(crate::Error::NotFound(_))));
    // unsupported architecture
    let mut c2 = cfg.clone();
    c2.arch = Arch::Llama;
    let p2 = dir.path().join("gpt.gguf");
    write_tiny_gguf(&p2, &c2, 1, GgmlDType::Q8_0, &[]);
    let mut b2 = std::fs::read(&p2).unwrap();
    // rename the architecture value "llama" -> "gpt2x" in place (same length)
    let pos = b2.windows(5).position(|w| w == b"llama").unwrap();
    b2[pos..pos + 5].copy_from_slice(b"gpt2x");
    std::fs::write(&p2, &b2).unwrap();
    let mut g = gguf::GgufFile::open(&p2).unwrap();
    assert!(matches!(gguf::load(&mut g), Err(crate::Error::Unsupported(_))));
}

#[test]
fn safetensors_folder_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(Arch::Qwen2);
    // HF checkpoints use rotate_half (Neox) for both families.
    let tensors = tiny_tensors(&cfg, 11);
    let rename = |n: &str| -> String {
        if n == "token_embd.weight" {
            return "model.embed_tokens.weight".into();
        }
        if n == "output_norm.weight" {
            return "model.norm.weight".into();
        }
        let rest = n.strip_prefix("blk.").unwrap();
        let (i, t) = rest.split_once('.').unwrap();
        let t = t
            .replace("attn_norm", "input_layernorm")
            .replace("ffn_norm", "post_attention_layernorm")
            .replace("attn_q", "self_attn.q_proj")
            .replace("attn_k", "self_attn.k_proj")
            .replace("attn_v", "self_attn.v_proj")
            .replace("attn_output", "self_attn.o_proj")
            .replace("ffn_gate", "mlp.gate_proj")
            .replace("ffn_up", "mlp.up_proj")
            .replace("ffn_down", "mlp.down_proj");
        format!("model.layers.{i}.{t}")
    };
    for (dtype, shards) in [(candle_core::DType::F32, 1), (candle_core::DType::BF16, 2), (candle_core::DType::F16, 1)] {
        let sub = dir.path().join(format!("m-{dtype:?}"));
        std::fs::create_dir_all(&sub).unwrap();
        let all: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, s, v)| (rename(n), Tensor::from_vec(v.clone(), s.clone(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()))
            .collect();
        if shards == 1 {
            let m: HashMap<String, Tensor> = all.into_iter().collect();
            candle_core::safetensors::save(&m, sub.join("model.safetensors")).unwrap();
        } else {
            let half = all.len() / 2;
            let mut weight_map = serde_json::Map::new();
            for (k, part) in [(1, &all[..half]), (2, &all[half..])] {
                let fname = format!("model-0000{k}-of-00002.safetensors");
                let m: HashMap<String, Tensor> = part.iter().cloned().collect();
                for (n, _) in part {
                    weight_map.insert(n.clone(), serde_json::Value::String(fname.clone()));
                }
                candle_core::safetensors::save(&m, sub.join(&fname)).unwrap();
            }
            let idx = serde_json::json!({"metadata": {}, "weight_map": weight_map});
            std::fs::write(sub.join("model.safetensors.index.json"), idx.to_string()).unwrap();
        }
        let conf = serde_json::json!({
            "model_type": "qwen2", "hidden_size": cfg.n_embd, "intermediate_size": cfg.n_ff,
            "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_head_kv, "vocab_size": cfg.vocab_size,
            "rms_norm_eps": cfg.rms_eps, "rope_theta": cfg.rope_theta,
            "max_position_embeddings": 256, "tie_word_embeddings": true
        });
        std::fs::write(sub.join("config.json"), conf.to_string()).unwrap();
        let (c2, w2) = hf::load(&sub, hf::DenseAs::F32).unwrap();
        assert_eq!(c2.rope_style, RopeStyle::Neox);
        let loaded = Model::new(c2, w2, Some(64), Some(1)).unwrap();
        let mem = tiny_model(&cfg, 11, GgmlDType::F32);
        let toks = tokens(18, 3, cfg.vocab_size);
        let a = run_chunks(&loaded, &toks, 18);
        let b = reference_logits(&mem, &toks);
        let tol = if dtype == candle_core::DType::F32 { 1e-4 } else { 0.03 };
        for (x, y) in a.iter().zip(&b) {
            assert!(max_rel_diff(x, y) < tol, "{dtype:?}: {}", max_rel_diff(x, y));
        }
        // Missing tensor -> ModelFormat, bad model_type -> Unsupported
        if shards == 1 {
            let bad = serde_json::json!({"model_type": "gpt_neox", "hidden_size": 8});
            std::fs::write(sub.join("config.json"), bad.to_string()).unwrap();
            assert!(matches!(hf::load(&sub, hf::DenseAs::F32), Err(crate::Error::Unsupported(_))));
        }
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(hf::load(&empty, hf::DenseAs::F32), Err(crate::Error::NotFound(_))));
}

/// The GEMM path gives each row the same bits whatever the number of rows
/// (one included, which the `gemm` crate would send to its matrix-vector
/// kernel) and the number of threads, at the real model's sizes.
#[test]
fn gemm_rows_do_not_depend_on_the_row_count() {
    let mut r = rand::rngs::StdRng::seed_from_u64(17);
    for (k, n) in [(576, 1536), (1536, 576), (64, 32)] {
        let w: Vec<f32> = (0..k * n).map(|_| r.random_range(-1.0f32..1.0)).collect();
        let x: Vec<f32> = (0..40 * k).map(|_| r.random_range(-1.0f32..1.0)).collect();
        let mut full = vec![0f32; 40 * n];
        linear::gemm_xwt(&x, &w, 40, k, n, &mut full);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for m in [1, 2, 3, 7, 16, 17, 33] {
                for start in [0, 40 - m] {
                    let mut out = vec![0f32; m * n];
                    pool.install(|| linear::gemm_xwt(&x[start * k..(start + m) * k], &w, m, k, n, &mut out));
                    assert!(out == full[start * n..(start + m) * n], "k {k} n {n}: rows {start}..{} on {threads} threads", start + m);
                }
            }
        }
    }
}

/// Packed layers whose column groups do not pair up evenly (5 groups: two pairs
/// and one alone) give each row the values it gets alone and match the f32 reference.
#[test]
fn packed_layers_with_an_odd_group_count() {
    let mut r = rand::rngs::StdRng::seed_from_u64(23);
    let (n, k) = (40usize, 96usize);
    let wf: Vec<f32> = (0..n * k).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let x: Vec<f32> = (0..9 * k).map(|_| r.random_range(-1.0f32..1.0)).collect();
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let w = match dtype {
            GgmlDType::Q8_0 => {
                let mut b = Vec::new();
                quant::quantize_q8_0(&wf, &mut b);
                Weight::Q8_0(b)
            }
            _ => {
                let qt = QTensor::quantize(&Tensor::from_slice(&wf, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q4_1).unwrap();
                Weight::Q4_1(quant::blocks_from_bytes::<BlockQ4_1>(&qt.data().unwrap()).unwrap())
            }
        };
        let lin = Linear::new(n, k, w);
        assert!(matches!(lin.weight, Weight::Q4_1x8(_) | Weight::Q8_0x8(_)));
        let mut all = vec![0f32; 9 * n];
        lin.forward_path(&x, 9, &mut all, linear::Path::Rows);
        let mut dense = vec![0f32; n * k];
        for j in 0..n {
            lin.row_f32(j, &mut dense[j * k..(j + 1) * k]);
        }
        for row in 0..9 {
            let mut one = vec![0f32; n];
            lin.forward_path(&x[row * k..(row + 1) * k], 1, &mut one, linear::Path::Rows);
            assert_eq!(one, all[row * n..(row + 1) * n], "{dtype:?} row {row}");
            for j in 0..n {
                let want: f32 = (0..k).map(|i| dense[j * k + i] * x[row * k + i]).sum();
                assert!((one[j] - want).abs() < 0.05 * (1.0 + want.abs()), "{dtype:?} row {row} col {j}: {} vs {want}", one[j]);
            }
        }
    }
}

#[test]
fn concurrent_first_dense_use_does_not_deadlock() {
    // The dense copy of a quantized layer is built on first GEMM use. It was built by a
    // rayon job inside `OnceLock::get_or_init`: a worker that stole part of that job could
    // pick up another request's forward pass on the same pool and block on the same cell,
    // while the initialising worker waited for the stolen part (a deadlock of the
    // engine-loop tests). Many layers, each first used by several requests at once.
    use std::sync::{mpsc, Arc};
    let (n, k, m) = (512usize, 256usize, 24usize);
    let mut r = rand::rngs::StdRng::seed_from_u64(11);
    let wf: Vec<f32> = (0..n * k).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let x: Arc<Vec<f32>> = Arc::new((0..m * k).map(|_| r.random_range(-1.0f32..1.0)).collect());
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first: Option<Vec<f32>> = None;
        for _ in 0..300 {
            let mut b = Vec::new();
            quant::quantize_q8_0(&wf, &mut b);
            let lin = Arc::new(Linear::new(n, k, Weight::Q8_0(b)));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (lin, pool, x) = (lin.clone(), pool.clone(), x.clone());
                    std::thread::spawn(move || {
                        let mut out = vec![0f32; m * n];
                        pool.install(|| lin.forward_path(&x, m, &mut out, linear::Path::Dense));
                        out
                    })
                })
                .collect();
            for h in handles {
                let out = h.join().unwrap();
                assert_eq!(&out, first.get_or_insert_with(|| out.clone()));
            }
        }
        let _ = tx.send(());
    });
    assert!(rx.recv_timeout(std::time::Duration::from_secs(300)).is_ok(), "forward passes deadlocked (or took > 300 s)");
}
