//! Scheduler tests on a tiny random model with a one-byte-per-token vocabulary.
use candle_core::quantized::GgmlDType;

use super::*;
use crate::model::tests::{tiny_config, tiny_model};
use crate::model::{Arch, KvCache};

/// Token t < 256 is byte t; 299 is EOS.
pub(crate) struct ByteVocab;
struct ByteDecoder(Vec<u8>);

impl TextDecoder for ByteDecoder {
    fn push(&mut self, id: u32) -> Result<String> {
        self.0.push((id % 256) as u8);
        match std::str::from_utf8(&self.0) {
            Ok(s) => {
                let s = s.to_string();
                self.0.clear();
                Ok(s)
            }
            Err(e) if e.error_len().is_none() => Ok(String::new()),
            Err(_) => {
                let s = String::from_utf8_lossy(&self.0).into_owned();
                self.0.clear();
                Ok(s)
            }
        }
    }
    fn finish(&mut self) -> Result<String> {
        let s = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        Ok(s)
    }
}

impl Vocab for ByteVocab {
    fn is_eos(&self, id: u32) -> bool {
        id == 299
    }
    fn decoder(&self) -> Box<dyn TextDecoder> {
        Box::new(ByteDecoder(Vec::new()))
    }
    fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        static BYTES: [u8; 256] = {
            let mut b = [0u8; 256];
            let mut i = 0;
            while i < 256 {
                b[i] = i as u8;
                i += 1;
            }
            b
        };
        BYTES.get(id as usize).map(std::slice::from_ref)
    }
}

#[derive(Default)]
pub(crate) struct Collect(Vec<(usize, String)>);
impl Sink for Collect {
    fn piece(&mut self, i: usize, t: &str) {
        self.0.push((i, t.to_string()));
    }
}

pub(crate) fn req(prompt: &[u32], max_new: usize, temp: f32, seed: u64) -> Request {
    Request {
        prompt: prompt.to_vec(),
        params: SamplingParams { max_new_tokens: max_new, temperature: temp, seed, ..Default::default() },
    }
}

pub(crate) fn prompts() -> Vec<Vec<u32>> {
    vec![b"hello".iter().map(|&b| b as u32).collect(), (0..40).map(|i| (i * 7 % 250) as u32).collect(), vec![3], vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180]]
}

/// More running sequences than GEMM_MIN_ROWS: decode steps still take the per-row kernels.
#[test]
fn wide_batches_generate_as_one_by_one() {
    let m = tiny_model(&tiny_config(Arch::Llama), 23, GgmlDType::Q8_0);
    let reqs: Vec<Request> = (0..18u32).map(|i| req(&[1 + i, 2 * i + 3, 40 + i], 6 + (i as usize % 3), 0.8, 9)).collect();
    let sched = SchedulerConfig { max_batch: 18, prefill_chunk: 16 };
    let (batched, _) = generate(&m, &ByteVocab, reqs.clone(), &sched, &mut Collect::default()).unwrap();
    for (r, b) in reqs.into_iter().zip(&batched) {
        let (one, _) = generate(&m, &ByteVocab, vec![r], &SchedulerConfig { max_batch: 1, prefill_chunk: 16 }, &mut Collect::default()).unwrap();
        assert_eq!(one[0].tokens, b.tokens);
    }
}

#[test]
fn batched_generation_equals_one_by_one() {
    let m = tiny_model(&tiny_config(Arch::Llama), 21, GgmlDType::Q4_1);
    for temp in [0.0, 0.9] {
        let reqs: Vec<Request> = prompts().iter().enumerate().map(|(i, p)| req(p, 12 + i, temp, 5)).collect();
        let sched = SchedulerConfig { max_batch: 3, prefill_chunk: 16 };
        let (batched, stats) = generate(&m, &ByteVocab, reqs.clone(), &sched, &mut Collect::default()).unwrap();
        assert!(stats.decode_steps > 0);
        for (r, b) in reqs.into_iter().zip(&batched) {
            let (one, _) = generate(&m, &ByteVocab, vec![r], &SchedulerConfig { max_batch: 1, prefill_chunk: 16 }, &mut Collect::default()).unwrap();
            assert_eq!(one[0].tokens, b.tokens, "temperature {temp}");
            assert_eq!(one[0].text, b.text);
        }
    }
}

#[test]
fn seed_controls_sampling() {
    let m = tiny_model(&tiny_config(Arch::Qwen2), 22, GgmlDType::Q8_0);
    let p = &prompts()[0];
    let run = |seed| generate(&m, &ByteVocab, vec![req(p, 20, 1.5, seed)], &SchedulerConfig::default(), &mut Collect::default()).unwrap().0[0].tokens.clone();
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn length_stop_strings_and_streaming() {
    let m = tiny_model(&tiny_config(Arch::Llama), 23, GgmlDType::F32);
    let p = prompts()[1].clone();
    let (full, _) = generate(&m, &ByteVocab, vec![req(&p, 30, 0.0, 0)], &SchedulerConfig::default(), &mut Collect::default()).unwrap();
    let full = &full[0];
    assert_eq!(full.finish_reason, FinishReason::Length);
    assert_eq!(full.tokens.len(), 30);
    // Streamed pieces concatenate to the text.
    let mut sink = Collect::default();
    let (again, _) = generate(&m, &ByteVocab, vec![req(&p, 30, 0.0, 0)], &SchedulerConfig::default(), &mut sink).unwrap();
    let joined: String = sink.0.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(joined, again[0].text);
    // A stop string taken from the middle of the output cuts the text there.
    let text = &full.text;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 12 {
        let stop: String = chars[8..11].iter().collect();
        let cut = text.find(&stop).unwrap();
        let mut r = req(&p, 30, 0.0, 0);
        r.params.stop = vec![stop.clone(), "never-produced-zzz".into()];
        let mut sink = Collect::default();
        let (s, _) = generate(&m, &ByteVocab, vec![r], &SchedulerConfig::default(), &mut sink).unwrap();
        assert_eq!(s[0].finish_reason, FinishReason::StopString);
        assert_eq!(s[0].text, text[..cut]);
        let joined: String = sink.0.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(joined, s[0].text, "streaming must not leak the stop string");
    }
}

#[test]
fn bad_requests() {
    let m = tiny_model(&tiny_config(Arch::Llama), 24, GgmlDType::F32);
    let s = SchedulerConfig::default();
    assert!(matches!(generate(&m, &ByteVocab, vec![], &s, &mut Collect::default()), Err(Error::InvalidArgument(_))));
    assert!(matches!(generate(&m, &ByteVocab, vec![req(&[], 5, 0.0, 0)], &s, &mut Collect::default()), Err(Error::InvalidArgument(_))));
    assert!(matches!(generate(&m, &ByteVocab, vec![req(&[1], 0, 0.0, 0)], &s, &mut Collect::default()), Err(Error::InvalidArgument(_))));
    let long: Vec<u32> = vec![5; 250];
    assert!(matches!(generate(&m, &ByteVocab, vec![req(&long, 10, 0.0, 0)], &s, &mut Collect::default()), Err(Error::ContextLength { .. })));
}

#[test]
fn cancellation_stops_generation() {
    let m = tiny_model(&tiny_config(Arch::Llama), 25, GgmlDType::F32);
    let flag = AtomicBool::new(true);
    let r = generate(&m, &ByteVocab, vec![req(&[1, 2, 3], 50, 0.0, 0)], &SchedulerConfig::default(), &mut CancelFlag(&flag));
    assert!(matches!(r, Err(Error::Interrupted)));
}

#[test]
fn choice_scores_match_step_by_step_log_probs() {
    let m = tiny_model(&tiny_config(Arch::Qwen2), 26, GgmlDType::F32);
    let prompt: Vec<u32> = (1..30).collect();
    let choices = vec![vec![5u32], vec![7, 8, 9], vec![100, 101]];
    let got = score_choices(&m, &prompt, &choices, &SchedulerConfig::default(), &CancelFlag(&AtomicBool::new(false))).unwrap();
    for (c, g) in choices.iter().zip(&got) {
        // Reference: full sequence prompt+choice, logits at every position.
        let mut seq = prompt.clone();
        seq.extend(c);
        let mut cache = KvCache::new(&m.cfg, seq.len());
        let mut ch = [Chunk { cache: &mut cache, tokens: &seq, logits: Logits::All }];
        let all = m.forward(&mut ch).unwrap().remove(0).data;
        let v = m.cfg.vocab_size;
        for (j, &t) in c.iter().enumerate() {
            let row = &all[(prompt.len() - 1 + j) * v..(prompt.len() + j) * v];
            let want = sampler::log_prob(row, t);
            assert!((want - g[j]).abs() < 1e-3, "{want} vs {}", g[j]);
        }
    }
    assert!(matches!(score_choices(&m, &prompt, &[], &SchedulerConfig::default(), &CancelFlag(&AtomicBool::new(false))), Err(Error::InvalidArgument(_))));
}

/// Split scoring: each prompt's scores are those of prefilling its prefix, then the
/// rest (whatever the other prompts are), and close to unsplit scoring.
#[test]
fn score_choices_split_is_per_prompt_and_close_to_unsplit() {
    // Split and unsplit prefill differ only in float summation order (both dense).
    let m = tiny_model(&tiny_config(Arch::Llama), 27, GgmlDType::Q8_0);
    let no = AtomicBool::new(false);
    let sched = SchedulerConfig { max_batch: 1, prefill_chunk: 512 };
    let head: Vec<u32> = (1..25).collect();
    let prompts: Vec<Vec<u32>> = (0..4u32).map(|i| head.iter().copied().chain(40 + i..60 + 3 * i).collect()).collect();
    let splits = vec![24, 24, 10, 24];
    let choices = vec![vec![5u32], vec![7, 8]];
    let all = score_choices_split(&m, &prompts, &splits, &choices, &sched, &CancelFlag(&no)).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = score_choices_split(&m, &prompts[i..=i], &splits[i..=i], &choices, &sched, &CancelFlag(&no)).unwrap();
        assert_eq!(alone[0], all[i], "prompt {i} depends on the batch");
        // By hand: prefix, then the rest, then the choices.
        let mut cache = KvCache::new(&m.cfg, p.len() + 2);
        prefill(&m, &mut cache, &p[..splits[i]], 512, true, &CancelFlag(&no)).unwrap();
        let first = prefill(&m, &mut cache, &p[splits[i]..], 512, true, &CancelFlag(&no)).unwrap();
        assert_eq!(score_after(&m, std::slice::from_ref(&cache), &[first], &choices, &CancelFlag(&no)).unwrap()[0], all[i]);
        let plain = score_choices(&m, p, &choices, &sched, &CancelFlag(&no)).unwrap();
        for (a, b) in plain.iter().flatten().zip(all[i].iter().flatten()) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }
    // A small step budget: groups break up and a long rest is prefilled in chunks.
    let small = SchedulerConfig { max_batch: 1, prefill_chunk: 8 };
    let chunked = score_choices_split(&m, &prompts, &splits, &choices, &small, &CancelFlag(&no)).unwrap();
    for (a, b) in chunked.iter().flatten().flatten().zip(all.iter().flatten().flatten()) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    // A split at or past the end keeps the last token out of the prefix; 0 is plain scoring.
    let end = score_choices_split(&m, &prompts[..1], &[prompts[0].len()], &choices, &sched, &CancelFlag(&no)).unwrap();
    assert_eq!(end[0].len(), 2);
    let zero = score_choices_split(&m, &prompts[..1], &[0], &choices, &sched, &CancelFlag(&no)).unwrap();
    assert_eq!(zero[0], score_choices(&m, &prompts[0], &choices, &sched, &CancelFlag(&no)).unwrap());
    assert!(matches!(score_choices_split(&m, &prompts, &[1], &choices, &sched, &CancelFlag(&no)), Err(Error::InvalidArgument(_))));
    assert!(matches!(score_choices_split(&m, &[], &[], &choices, &sched, &CancelFlag(&no)), Err(Error::InvalidArgument(_))));
}

/// A group of more prompts than GEMM_MIN_ROWS (their logits rows go through one GEMM),
/// and prompts whose rest is a single token: each scores as it does alone, bit for bit.
#[test]
fn score_choices_split_large_groups_equal_alone() {
    let m = tiny_model(&tiny_config(Arch::Llama), 31, GgmlDType::Q4_1);
    let no = AtomicBool::new(false);
    let sched = SchedulerConfig { max_batch: 1, prefill_chunk: 512 };
    let head: Vec<u32> = (1..20).collect();
    let prompts: Vec<Vec<u32>> = (0..40u32).map(|i| head.iter().copied().chain(100 + i..101 + i + i % 4).collect()).collect();
    let splits = vec![head.len(); prompts.len()];
    let choices = vec![vec![5u32], vec![7, 8, 9]];
    let all = score_choices_split(&m, &prompts, &splits, &choices, &sched, &CancelFlag(&no)).unwrap();
    for i in 0..prompts.len() {
        let alone = score_choices_split(&m, &prompts[i..=i], &splits[i..=i], &choices, &sched, &CancelFlag(&no)).unwrap();
        assert_eq!(alone[0], all[i], "prompt {i} depends on the batch");
    }
    // Blocks of 20, as a caller feeding batches would: the same numbers.
    let blocks: Vec<Vec<Vec<f64>>> = (0..2)
        .flat_map(|b| score_choices_split(&m, &prompts[20 * b..20 * b + 20], &splits[..20], &choices, &sched, &CancelFlag(&no)).unwrap())
        .collect();
    assert_eq!(blocks, all);
}

/// JSON mode: whatever the (random) model, the text is a prefix of a JSON
/// object, a complete one when the sequence ended by itself; greedy JSON-mode
/// output is the same batched or alone.
#[test]
fn json_mode_output_is_json() {
    let m = tiny_model(&tiny_config(Arch::Llama), 27, GgmlDType::Q8_0);
    let mut ended = 0;
    for (seed, temp) in [(1u64, 0.0f32), (2, 1.0), (3, 1.5), (4, 0.7)] {
        for p in prompts() {
            let mut r = req(&p, 40, temp, seed);
            r.params.json_object = true;
            let (out, _) = generate(&m, &ByteVocab, vec![r.clone()], &SchedulerConfig::default(), &mut Collect::default()).unwrap();
            let c = &out[0];
            let mut st = json::JsonState::new(true);
            assert!(st.advance(c.text.as_bytes()), "not a JSON prefix: {:?}", c.text);
            if c.finish_reason == FinishReason::Eos {
                ended += 1;
                assert!(st.is_complete());
                assert!(serde_json::from_str::<serde_json::Value>(&c.text).unwrap().is_object());
            }
        }
    }
    let _ = ended; // how many closed depends on the random weights; all of them parsed
    // batched JSON-mode sequences equal their lone runs
    let reqs: Vec<Request> = prompts()
        .iter()
        .map(|p| {
            let mut r = req(p, 20, 0.9, 8);
            r.params.json_object = true;
            r
        })
        .collect();
    let sched = SchedulerConfig { max_batch: 4, prefill_chunk: 16 };
    let (batched, _) = generate(&m, &ByteVocab, reqs.clone(), &sched, &mut Collect::default()).unwrap();
    for (r, b) in reqs.into_iter().zip(&batched) {
        let (one, _) = generate(&m, &ByteVocab, vec![r], &SchedulerConfig { max_batch: 1, prefill_chunk: 16 }, &mut Collect::default()).unwrap();
        assert_eq!(one[0].tokens, b.tokens);
    }
}

/// Schema mode through the whole generation path: every output is a prefix of a
/// document of the schema, and a sequence that ended by itself (EOS) is a
/// complete one, which parses; batched equals alone.
#[test]
fn json_schema_output_follows_the_schema() {
    use std::sync::Arc;
    let m = tiny_model(&tiny_config(Arch::Llama), 27, GgmlDType::Q8_0);
    let text = r#"{"type": "object", "properties": {
        "label": {"enum": ["normal", "abnormal"]},
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2}
    }, "required": ["label", "tags"]}"#;
    let schema = Arc::new(super::schema::Schema::compile(text).unwrap());
    let with_schema = |p: &[u32], n: usize, temp: f32, seed: u64| {
        let mut r = req(p, n, temp, seed);
        r.params.json_schema = Some(schema.clone());
        r
    };
    for (seed, temp) in [(1u64, 0.0f32), (2, 1.0), (3, 1.5), (4, 0.7)] {
        for p in prompts() {
            let r = with_schema(&p, 60, temp, seed);
            let (out, _) = generate(&m, &ByteVocab, vec![r], &SchedulerConfig::default(), &mut Collect::default()).unwrap();
            let c = &out[0];
            let bytes: Vec<u8> = c.tokens.iter().map(|&t| t as u8).collect(); // a cut may end inside a character
            let mut st = super::schema::SchemaState::new(&schema);
            assert!(st.advance(&schema, &bytes), "not a prefix of the schema: {:?}", c.text);
            if c.finish_reason == FinishReason::Eos {
                assert!(st.is_complete(&schema), "{:?}", c.text);
                let v: serde_json::Value = serde_json::from_str(&c.text).unwrap();
                assert!(v["label"] == "normal" || v["label"] == "abnormal", "{v}");
                assert!(v["tags"].as_array().is_some_and(|a| a.len() <= 2), "{v}");
            }
        }
    }
    let reqs: Vec<Request> = prompts().iter().map(|p| with_schema(p, 30, 0.9, 8)).collect();
    let sched = SchedulerConfig { max_batch: 4, prefill_chunk: 16 };
    let (batched, _) = generate(&m, &ByteVocab, reqs.clone(), &sched, &mut Collect::default()).unwrap();
    for (r, b) in reqs.into_iter().zip(&batched) {
        let (one, _) = generate(&m, &ByteVocab, vec![r], &SchedulerConfig { max_batch: 1, prefill_chunk: 16 }, &mut Collect::default()).unwrap();
        assert_eq!(one[0].tokens, b.tokens);
    }
}
