//! The candle device path on candle's CPU backend, checked against the native
//! engine and the naive f32 reference of `model/tests.rs`: tiny random models
//! of both architectures and all weight types, batching and chunking, choice
//! scoring through the scheduler, errors; and, when `LOGLM_SMOLLM2_GGUF` names
//! the SmolLM2 GGUF, greedy decoding of the real model on both paths.
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use rand::{Rng, SeedableRng};

use super::{DeviceCache, DeviceModel};
use crate::generate::{self, Request, SamplingParams, SchedulerConfig, TextDecoder, Vocab};
use crate::model::backend::LanguageModel;
use crate::model::forward::{Chunk, Logits};
use crate::model::tests::{reference_logits, tiny_config, tiny_model};
use crate::model::{Arch, KvCache, Model};

fn on_candle_cpu(m: Model) -> DeviceModel {
    DeviceModel::from_model(m, Device::Cpu, "candle-cpu".into()).unwrap()
}

fn tokens(n: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(0..vocab as u32)).collect()
}

/// Largest |a - b| over the largest |b|.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Logits of every position on the device path, feeding `toks` in chunks.
fn device_chunks(m: &DeviceModel, toks: &[u32], chunk: usize) -> Vec<Vec<f32>> {
    let mut cache = DeviceCache::new(m, toks.len()).unwrap();
    let mut out = Vec::new();
    for c in toks.chunks(chunk) {
        let r = m.forward(&mut [Chunk { cache: &mut cache, tokens: c, logits: Logits::All }]).unwrap();
        assert_eq!(r[0].rows, c.len());
        out.extend(r[0].data.chunks(m.cfg.vocab_size).map(|x| x.to_vec()));
    }
    assert_eq!(cache.len, toks.len());
    out
}

#[test]
fn f32_device_path_matches_reference_both_archs() {
    for arch in [Arch::Llama, Arch::Qwen2] {
        let cfg = tiny_config(arch);
        let toks = tokens(40, 2, cfg.vocab_size);
        let want = reference_logits(&tiny_model(&cfg, 1, GgmlDType::F32), &toks);
        let dm = on_candle_cpu(tiny_model(&cfg, 1, GgmlDType::F32));
        // Whole prompt, uneven chunks (masking against a partly filled cache), one by one.
        for chunk in [40, 7, 1] {
            let got = device_chunks(&dm, &toks, chunk);
            for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                let d = max_rel_diff(g, w);
                assert!(d < 1e-4, "{arch:?} chunk {chunk} position {p}: {d}");
            }
        }
    }
}

#[test]
fn quantized_device_path_close_to_reference_and_native() {
    for (arch, dtype) in [(Arch::Llama, GgmlDType::Q4_1), (Arch::Qwen2, GgmlDType::Q8_0), (Arch::Llama, GgmlDType::Q8_0)] {
        let cfg = tiny_config(arch);
        let toks = tokens(24, 4, cfg.vocab_size);
        let native = tiny_model(&cfg, 3, dtype);
        let want = reference_logits(&native, &toks);
        let mut cache = KvCache::new(&native.cfg, toks.len());
        let nat = native.forward(&mut [Chunk { cache: &mut cache, tokens: &toks, logits: Logits::All }]).unwrap();
        let dm = on_candle_cpu(tiny_model(&cfg, 3, dtype));
        // Same weights as the reference; candle quantizes activations to Q8_1 /
        // Q8_0 per 32 values (as llama.cpp and our decode kernels do), which the
        // f32 reference does not: the same 3% bound as the native engine's test.
        for chunk in [24, 5, 1] {
            let got = device_chunks(&dm, &toks, chunk);
            for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                let d = max_rel_diff(g, w);
                assert!(d < 0.03, "{arch:?} {dtype:?} chunk {chunk} position {p}: {d}");
            }
            for (p, g) in got.iter().enumerate() {
                let n = &nat[0].data[p * cfg.vocab_size..(p + 1) * cfg.vocab_size];
                let d = max_rel_diff(g, n);
                assert!(d < 0.03, "{arch:?} {dtype:?} vs native, chunk {chunk} position {p}: {d}");
            }
        }
    }
}

#[test]
fn batched_chunks_at_different_positions_equal_single_runs() {
    let cfg = tiny_config(Arch::Qwen2);
    let dm = on_candle_cpu(tiny_model(&cfg, 5, GgmlDType::Q4_1));
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| tokens(3 + 7 * i, 10 + i as u64, cfg.vocab_size)).collect();
    let steps = 3u32;
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| {
            let mut c = DeviceCache::new(&dm, p.len() + steps as usize).unwrap();
            dm.forward(&mut [Chunk { cache: &mut c, tokens: p, logits: Logits::None }]).unwrap();
            (0..steps)
                .map(|s| dm.forward(&mut [Chunk { cache: &mut c, tokens: &[s + 1], logits: Logits::Last }]).unwrap()[0].data.clone())
                .collect()
        })
        .collect();
    let mut caches: Vec<DeviceCache> =
        prompts.iter().map(|p| DeviceCache::new(&dm, p.len() + steps as usize).unwrap()).collect();
    // All four prompts (multi-token chunks at different lengths) prefilled in one step.
    {
        let mut ch: Vec<Chunk<'_, DeviceCache>> = caches
            .iter_mut()
            .zip(&prompts)
            .map(|(c, p)| Chunk { cache: c, tokens: p, logits: Logits::None })
            .collect();
        let out = dm.forward(&mut ch).unwrap();
        assert!(out.iter().all(|o| o.rows == 0 && o.data.is_empty()));
    }
    for s in 0..steps {
        let toks = [s + 1];
        let mut chunks: Vec<Chunk<'_, DeviceCache>> =
            caches.iter_mut().map(|c| Chunk { cache: c, tokens: &toks, logits: Logits::Last }).collect();
        let out = dm.forward(&mut chunks).unwrap();
        for (i, o) in out.iter().enumerate() {
            let d = max_rel_diff(&o.data, &alone[i][s as usize]);
            assert!(d < 1e-5, "sequence {i} step {s}: {d}");
        }
    }
}

#[test]
fn fork_copies_the_filled_part() {
    let cfg = tiny_config(Arch::Llama);
    let dm = on_candle_cpu(tiny_model(&cfg, 7, GgmlDType::Q8_0));
    let toks = tokens(12, 8, cfg.vocab_size);
    let mut base = dm.new_cache(8).unwrap();
    dm.forward(&mut [Chunk { cache: &mut base, tokens: &toks[..8], logits: Logits::None }]).unwrap();
    let mut forked = dm.fork_cache(&base, 12).unwrap();
    assert_eq!((forked.len, forked.capacity), (8, 12));
    let a = dm.forward(&mut [Chunk { cache: &mut forked, tokens: &toks[8..], logits: Logits::All }]).unwrap();
    let full = device_chunks(&dm, &toks, 12);
    for (i, row) in a[0].data.chunks(cfg.vocab_size).enumerate() {
        assert!(max_rel_diff(row, &full[8 + i]) < 1e-4, "row {i}");
    }
}

#[test]
fn device_path_rejects_bad_tokens_and_overflow() {
    let cfg = tiny_config(Arch::Llama);
    let dm = on_candle_cpu(tiny_model(&cfg, 1, GgmlDType::F32));
    let mut c = DeviceCache::new(&dm, 4).unwrap();
    let e = dm.forward(&mut [Chunk { cache: &mut c, tokens: &[9999], logits: Logits::Last }]);
    assert!(matches!(e, Err(crate::Error::InvalidArgument(_))));
    let e = dm.forward(&mut [Chunk { cache: &mut c, tokens: &[1, 2, 3, 4, 5], logits: Logits::Last }]);
    assert!(matches!(e, Err(crate::Error::ContextLength { .. })));
    let e = dm.forward(&mut [Chunk { cache: &mut c, tokens: &[], logits: Logits::Last }]);
    assert!(matches!(e, Err(crate::Error::InvalidArgument(_))));
    assert_eq!(c.len, 0, "a failed step must not advance the cache");
}

/// Token t < 256 is byte t; no EOS.
struct Bytes;
struct ByteDec;
impl TextDecoder for ByteDec {
    fn push(&mut self, id: u32) -> crate::Result<String> {
        Ok(char::from((id % 128) as u8).to_string())
    }
    fn finish(&mut self) -> crate::Result<String> {
        Ok(String::new())
    }
}
impl Vocab for Bytes {
    fn is_eos(&self, _id: u32) -> bool {
        false
    }
    fn decoder(&self) -> Box<dyn TextDecoder> {
        Box::new(ByteDec)
    }
}

fn greedy(max_new: usize, prompt: Vec<u32>) -> Request {
    Request { prompt, params: SamplingParams { max_new_tokens: max_new, temperature: 0.0, ..Default::default() } }
}

#[test]
fn scheduler_runs_on_the_device_path() {
    // F32 weights: both paths compute the same function up to float rounding,
    // so greedy tokens, batched or not, agree with the native engine.
    let cfg = tiny_config(Arch::Llama);
    let native = tiny_model(&cfg, 21, GgmlDType::F32);
    let dm = on_candle_cpu(tiny_model(&cfg, 21, GgmlDType::F32));
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| tokens(5 + 9 * i, 30 + i as u64, 256)).collect();
    let reqs: Vec<Request> = prompts.iter().map(|p| greedy(12, p.clone())).collect();
    let sched = SchedulerConfig { max_batch: 2, prefill_chunk: 6 };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (nat, _) = generate::generate(&native, &Bytes, reqs.clone(), &sched, &mut generate::CancelFlag(&cancel)).unwrap();
    let (dev, stats) = generate::generate(&dm, &Bytes, reqs, &sched, &mut generate::CancelFlag(&cancel)).unwrap();
    assert_eq!(stats.decode_tokens, 3 * 11);
    for (i, (a, b)) in nat.iter().zip(&dev).enumerate() {
        assert_eq!(a.tokens, b.tokens, "request {i}");
        assert_eq!(b.tokens.len(), 12);
    }
    // Choice scoring: prompt prefilled once, multi-token choices on forked caches.
    let choices = vec![vec![5u32], vec![7, 8, 9], vec![200, 3]];
    let flag = generate::CancelFlag(&cancel);
    let a = generate::score_choices(&native, &prompts[1], &choices, &sched, &flag).unwrap();
    let b = generate::score_choices(&dm, &prompts[1], &choices, &sched, &flag).unwrap();
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
}

/// A real GGUF model on both paths for a log-line prompt: prefill, then
/// `steps` teacher-forced decode steps.
fn compare_real_model(path: &str, steps: usize) {
    let load = || {
        let mut g = crate::model::gguf::GgufFile::open(std::path::Path::new(path)).unwrap();
        let (cfg, w) = crate::model::gguf::load(&mut g).unwrap();
        Model::new(cfg, w, Some(512), Some(1)).unwrap()
    };
    let native = load();
    let dm = on_candle_cpu(load());
    let tok = crate::tokenizer::Tokenizer::from_gguf_metadata(
        crate::model::gguf::GgufFile::open(std::path::Path::new(path)).unwrap().metadata(),
    )
    .unwrap();
    let line = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block \
                blk_38865049064139660 terminating";
    let msgs = [crate::tokenizer::ChatMessage { role: "user".into(), content: format!("Explain this log line: {line}") }];
    let prompt = tok.encode_chat(&msgs, true).unwrap();
    // Teacher-forced: every run sees the native path's greedy tokens, so logits
    // are compared at identical contexts at every step. Three runs: native
    // (prefill on dequantized f32 weights, decode with Q8_1 activations), native
    // fed one token at a time (Q8_1 activations throughout), device path.
    let mut kc = native.new_cache(prompt.len() + steps).unwrap();
    let mut k1 = native.new_cache(prompt.len() + steps).unwrap();
    let mut dc = dm.new_cache(prompt.len() + steps).unwrap();
    let mut nl = native.forward(&mut [Chunk { cache: &mut kc, tokens: &prompt, logits: Logits::Last }]).unwrap().remove(0).data;
    let mut n1 = Vec::new();
    for t in &prompt {
        n1 = native.forward(&mut [Chunk { cache: &mut k1, tokens: &[*t], logits: Logits::Last }]).unwrap().remove(0).data;
    }
    let mut dl = dm.forward(&mut [Chunk { cache: &mut dc, tokens: &prompt, logits: Logits::Last }]).unwrap().remove(0).data;
    let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32;
    let maxdiff = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let (mut agree, mut worst, mut own, mut worst_margin_flip) = (0, 0f32, 0f32, 0f32);
    for step in 0..steps {
        let (a, b) = (argmax(&nl), argmax(&dl));
        worst = worst.max(maxdiff(&nl, &dl));
        own = own.max(maxdiff(&nl, &n1));
        if a == b {
            agree += 1;
        } else {
            // A disagreement is only acceptable between near-ties of the native logits.
            let margin = nl[a as usize] - nl[b as usize];
            worst_margin_flip = worst_margin_flip.max(margin);
            eprintln!("step {step}: native {a} vs device {b}, native margin {margin}");
        }
        let t = [a];
        nl = native.forward(&mut [Chunk { cache: &mut kc, tokens: &t, logits: Logits::Last }]).unwrap().remove(0).data;
        n1 = native.forward(&mut [Chunk { cache: &mut k1, tokens: &t, logits: Logits::Last }]).unwrap().remove(0).data;
        dl = dm.forward(&mut [Chunk { cache: &mut dc, tokens: &t, logits: Logits::Last }]).unwrap().remove(0).data;
    }
    eprintln!(
        "{path}: top-1 agreement {agree}/{steps}; max |logit diff| device vs native {worst}, \
         native vs itself fed token by token {own}"
    );
    // The tolerance is the native engine's own spread: its two kernels (f32 GEMM
    // prefill vs Q8_1 dot products) disagree by `own` on the same weights. The
    // device path quantizes activations too, but for Q8_0 weights candle uses
    // Q8_0 activation blocks where we use Q8_1, another small rounding. Measured:
    // SmolLM2 1.22 vs own 1.51; Qwen2.5 0.49 vs own 0.36. Bound: 2x own.
    assert!(worst <= 2.0 * own.max(0.1), "device vs native {worst}, native vs itself {own}");
    assert!(agree >= steps - 2, "top-1 agreement {agree}/{steps}");
    assert!(worst_margin_flip < 0.5, "a flip with native margin {worst_margin_flip}");
}

/// The real default model (llama, Q4_1), when `LOGLM_SMOLLM2_GGUF` gives its
/// path (tests/test_rust_core.py does); skipped (passes) otherwise.
#[test]
fn smollm2_greedy_agrees_with_native() {
    match std::env::var("LOGLM_SMOLLM2_GGUF") {
        Ok(path) => compare_real_model(&path, 32),
        Err(_) => eprintln!("LOGLM_SMOLLM2_GGUF not set: skipping the SmolLM2 comparison"),
    }
}

/// Qwen2.5-Coder-0.5B (qwen2: q/k/v biases, NeoX rope; Q4_K_M re-encoded to
/// Q8_0 at load), when `LOGLM_QWEN25_GGUF` gives its path.
#[test]
fn qwen25_greedy_agrees_with_native() {
    match std::env::var("LOGLM_QWEN25_GGUF") {
        Ok(path) => compare_real_model(&path, 8),
        Err(_) => eprintln!("LOGLM_QWEN25_GGUF not set: skipping the Qwen2.5 comparison"),
    }
}
