//! Fuzz targets for the GGUF reader, the tokenizer, chat templates and the
//! template tree (issue 19), as a plain program that runs on the stable
//! toolchain (no `cargo fuzz`, no sanitizer runtime): structure-aware inputs
//! (a valid GGUF with its numbers and lengths overwritten by interesting values,
//! token lists and merges with odd entries, templates assembled from Jinja
//! fragments, log lines and mutated parser states) plus random byte mutations,
//! in the spirit of libFuzzer's mutators.
//!
//! ```text
//! cargo run --release --example fuzz -- <gguf|tokenizer|chat_template|template_tree|all> [seconds] [seed]
//! ```
//! A panic is caught, reported with its input and counted; an abort or a hang
//! (a render over 10 s) ends the run: the input being tried is always in
//! `$TMPDIR/loglm-fuzz-<target>.last` first. Exit status 1 when anything was found.
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use loglm::model::{gguf, Model};
use loglm::parse::{Parser, ParserConfig};
use loglm::tokenizer::{ChatMessage, Tokenizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INTERESTING_U64: [u64; 12] =
    [0, 1, 2, 3, 7, 255, 0x7fff_ffff, 0xffff_ffff, 1 << 32, 1 << 40, i64::MAX as u64, u64::MAX];

struct Stats {
    runs: u64,
    panics: Vec<String>,
}

fn last_input_path(target: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loglm-fuzz-{target}.last"))
}

/// Run one input, catching a panic (reported with a short description of the input).
fn run_one(target: &str, stats: &mut Stats, input: &[u8], f: impl FnOnce()) {
    let _ = std::fs::write(last_input_path(target), input);
    stats.runs += 1;
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let saved = std::env::temp_dir().join(format!("loglm-fuzz-{target}-panic-{}.bin", stats.panics.len()));
        let _ = std::fs::write(&saved, input);
        eprintln!("[{target}] PANIC: {msg} (input saved to {})", saved.display());
        stats.panics.push(msg);
    }
}

fn mutate_bytes(rng: &mut StdRng, b: &mut Vec<u8>, header_end: usize) {
    let n = rng.random_range(1..=4);
    for _ in 0..n {
        if b.is_empty() {
            return;
        }
        let hi = header_end.min(b.len()).max(1);
        match rng.random_range(0..6) {
            0 => {
                let i = rng.random_range(0..hi);
                b[i] = rng.random();
            }
            1 => {
                // overwrite an aligned-ish u64 with an interesting value
                let i = rng.random_range(0..hi);
                let v = INTERESTING_U64[rng.random_range(0..INTERESTING_U64.len())].to_le_bytes();
                for (k, x) in v.iter().enumerate() {
                    if i + k < b.len() {
                        b[i + k] = *x;
                    }
                }
            }
            2 => {
                let i = rng.random_range(0..hi);
                let v = (INTERESTING_U64[rng.random_range(0..INTERESTING_U64.len())] as u32).to_le_bytes();
                for (k, x) in v.iter().enumerate() {
                    if i + k < b.len() {
                        b[i + k] = *x;
                    }
                }
            }
            3 => {
                let cut = rng.random_range(0..b.len());
                b.truncate(cut);
            }
            4 => {
                let i = rng.random_range(0..hi);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            _ => {
                let i = rng.random_range(0..hi);
                let len = rng.random_range(1..16).min(b.len() - i);
                let chunk: Vec<u8> = b[i..i + len].to_vec();
                let at = rng.random_range(0..b.len());
                b.splice(at..at, chunk);
            }
        }
    }
}

// ------------------------------------------------------------------ GGUF reader

fn seed_gguf() -> Vec<u8> {
    let (n_layer, d, heads, kv, ff, vocab) = (1usize, 32usize, 2usize, 1usize, 32usize, 40usize);
    let hd = d / heads;
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(n_layer as u32)),
        ("llama.embedding_length".into(), Value::U32(d as u32)),
        ("llama.feed_forward_length".into(), Value::U32(ff as u32)),
        ("llama.attention.head_count".into(), Value::U32(heads as u32)),
        ("llama.attention.head_count_kv".into(), Value::U32(kv as u32)),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-5)),
        ("llama.context_length".into(), Value::U32(64)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
    ];
    let toks: Vec<Value> = (0..vocab).map(|i| Value::String(if i < 26 { ((b'a' + i as u8) as char).to_string() } else { format!("t{i}") })).collect();
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(toks)));
    md.push(("tokenizer.ggml.merges".into(), Value::Array(vec![Value::String("a b".into())])));
    md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(1)));
    md.push(("tokenizer.chat_template".into(), Value::String("{% for m in messages %}{{ m.content }}{% endfor %}".into())));
    let mut rng = StdRng::seed_from_u64(1);
    let mut t = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect();
        let dt = if shape.len() == 2 { GgmlDType::Q8_0 } else { GgmlDType::F32 };
        QTensor::quantize(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap(), dt).unwrap()
    };
    let mut ts: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), t(vec![vocab, d])),
        ("output_norm.weight".into(), t(vec![d])),
    ];
    for (name, shape) in [
        ("attn_norm.weight", vec![d]),
        ("ffn_norm.weight", vec![d]),
        ("attn_q.weight", vec![heads * hd, d]),
        ("attn_k.weight", vec![kv * hd, d]),
        ("attn_v.weight", vec![kv * hd, d]),
        ("attn_output.weight", vec![d, heads * hd]),
        ("ffn_gate.weight", vec![ff, d]),
        ("ffn_up.weight", vec![ff, d]),
        ("ffn_down.weight", vec![d, ff]),
    ] {
        ts.push((format!("blk.0.{name}"), t(shape)));
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = ts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut cur = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut cur, &md_refs, &t_refs).unwrap();
    cur.into_inner()
}

fn fuzz_gguf(deadline: Instant, rng: &mut StdRng, stats: &mut Stats) {
    let seed = seed_gguf();
    // The header (metadata and tensor infos) is where the numbers are.
    let header_end = seed.windows(17).position(|w| w == b"blk.0.ffn_up.weig").map_or(seed.len(), |p| p + 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.gguf");
    while Instant::now() < deadline {
        let mut b = seed.clone();
        mutate_bytes(rng, &mut b, header_end);
        std::fs::write(&path, &b).unwrap();
        run_one("gguf", stats, &b, || {
            let Ok(mut g) = gguf::GgufFile::open(&path) else { return };
            let _ = Tokenizer::from_gguf_metadata(g.metadata()).map(|t| {
                let _ = t.encode("ab ba t1", true, true);
                let _ = t.render_chat(&[ChatMessage::user("ab")], true);
            });
            if let Ok((cfg, w)) = gguf::load(&mut g) {
                if let Ok(m) = Model::new(cfg, w, Some(16), Some(1)) {
                    let mut c = loglm::model::KvCache::new(&m.cfg, 16);
                    let _ = m.forward(&mut [loglm::model::forward::Chunk {
                        cache: &mut c,
                        tokens: &[1, 2, 3],
                        logits: loglm::model::forward::Logits::Last,
                    }]);
                }
            }
        });
    }
}

// ------------------------------------------------------------------ tokenizer

fn random_text(rng: &mut StdRng, max: usize) -> String {
    const PIECES: &[&str] = &[
        "a", "b", "ab", " ", "  ", "\n", "\r\n", "\t", "é", "日本", "\u{0}", "\u{FFFD}", "<|im_end|>", "<|im_start|>",
        "<tool>", "'s", "123", "0x1f", "€", "🦀", "\u{200d}", "\u{F8F0}LOGLM0\u{F8F1}", "{{", "}}", "%", "Ġ",
    ];
    let n = rng.random_range(0..max);
    (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect()
}

fn fuzz_tokenizer(deadline: Instant, rng: &mut StdRng, stats: &mut Stats) {
    let chars: Vec<String> = (0u32..256)
        .filter_map(|b| {
            let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
            printable.then(|| char::from_u32(b).unwrap().to_string())
        })
        .collect();
    while Instant::now() < deadline {
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
        tokens.extend(chars.iter().cloned());
        for _ in 0..rng.random_range(0..20) {
            tokens.push(random_text(rng, 4));
        }
        let n = tokens.len();
        let types: Vec<Value> = (0..n).map(|_| Value::I32(rng.random_range(-1..8))).collect();
        let merges: Vec<Value> = (0..rng.random_range(0..30))
            .map(|_| {
                let a = &tokens[rng.random_range(0..n)];
                let b = &tokens[rng.random_range(0..n)];
                Value::String(if rng.random_bool(0.1) { random_text(rng, 3) } else { format!("{a} {b}") })
            })
            .collect();
        let pre = ["smollm", "gpt2", "qwen2", "llama-bpe", "deepseek-coder", "falcon", "default", "zzz"][rng.random_range(0..8)];
        let mut md = HashMap::new();
        md.insert("tokenizer.ggml.model".to_string(), Value::String("gpt2".into()));
        md.insert("tokenizer.ggml.pre".to_string(), Value::String(pre.into()));
        md.insert("tokenizer.ggml.tokens".to_string(), Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()));
        if rng.random_bool(0.8) {
            md.insert("tokenizer.ggml.token_type".to_string(), Value::Array(types));
        }
        md.insert("tokenizer.ggml.merges".to_string(), Value::Array(merges));
        for key in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if rng.random_bool(0.7) {
                md.insert(key.to_string(), Value::U64(INTERESTING_U64[rng.random_range(0..INTERESTING_U64.len())]));
            }
        }
        let text = random_text(rng, 40);
        let ids: Vec<u32> = (0..rng.random_range(0..20)).map(|_| rng.random_range(0..(n as u32 + 5))).collect();
        run_one("tokenizer", stats, format!("{md:?}\n{text:?}\n{ids:?}").as_bytes(), || {
            let Ok(t) = Tokenizer::from_gguf_metadata(&md) else { return };
            for special in [false, true] {
                if let Ok(enc) = t.encode(&text, rng.random_bool(0.5), special) {
                    let dec = t.decode(&enc, false).unwrap();
                    let _ = dec;
                }
            }
            let _ = t.decode(&ids, true);
            let mut s = t.decode_stream(false);
            for &i in &ids {
                let _ = s.push(i);
            }
            let _ = s.finish();
            let _ = t.encode_chat(&[ChatMessage::system(text.clone()), ChatMessage::user(text.clone())], true);
        });
    }
}

// ------------------------------------------------------------------ chat templates

fn random_template(rng: &mut StdRng) -> String {
    const FRAGS: &[&str] = &[
        "{% for m in messages %}", "{% endfor %}", "{% if add_generation_prompt %}", "{% endif %}", "{% else %}",
        "{{ m.content }}", "{{ m['role'] }}", "{{ bos_token }}", "{% set ns = namespace(s='ab') %}",
        "{% set ns.s = ns.s ~ ns.s %}", "{% set ns.s = ns.s + ns.s %}", "{{ ns.s|length }}", "{{ ns.s }}",
        "{% for i in range(100000) %}", "{% for j in range(1000) %}", "{{ 'x' * 1000000 }}", "{{ 'x' * 99999999 }}",
        "{{ messages|tojson }}", "{{ messages|tojson(indent=4) }}", "{{ ('a' * 1000)|replace('a', 'bbbb') }}",
        "{{ 'abc'.replace('', '--') }}", "{{ range(100)|join(',') }}", "{{ 'x'|indent(100) }}", "{{ [1,2]*500000 }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}", "{{ f(0) }}", "{% set l = [1] + [2] %}", "{{ l|list }}",
        "{{ raise_exception('no') }}", "{{ strftime_now('%Y-%m-%d') }}", "{{ loop.index }}", "{% break %}",
        "{{ m.content.strip().split(' ')|batch(3)|list }}", "{{ '%s'|format(m) }}", "{{ messages[0] }}",
        "literal text ", "\n", "{#", "#}", "{{", "}}", "{%", "%}", "{{ 1/0 }}", "{{ 2**64 * 2**64 }}",
        "{{ x.y.z }}", "{% include 'chat' %}", "{% extends 'chat' %}", "{% filter upper %}", "{% endfilter %}",
        "{% set c %}cap{% endset %}", "{{ c * 3 }}", "{{ messages|map(attribute='content')|join('|') }}",
    ];
    let n = rng.random_range(1..12);
    (0..n).map(|_| FRAGS[rng.random_range(0..FRAGS.len())]).collect()
}

fn fuzz_chat_template(deadline: Instant, rng: &mut StdRng, stats: &mut Stats, found_hang: &mut Vec<String>) {
    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".to_string(), Value::String("gpt2".into()));
    let toks: Vec<Value> = ["<s>", "</s>", "a", "b"].iter().map(|t| Value::String(t.to_string())).collect();
    md.insert("tokenizer.ggml.tokens".to_string(), Value::Array(toks));
    md.insert("tokenizer.ggml.merges".to_string(), Value::Array(vec![]));
    let base = Tokenizer::from_gguf_metadata(&md).unwrap();
    while Instant::now() < deadline {
        let tpl = random_template(rng);
        let msgs = vec![ChatMessage::system(random_text(rng, 10)), ChatMessage::user(random_text(rng, 30))];
        run_one("chat_template", stats, tpl.as_bytes(), || {
            let Ok(t) = base.with_chat_template(&tpl) else { return };
            let started = Instant::now();
            let _ = t.render_chat(&msgs, true);
            let _ = t.encode_chat(&msgs, false);
            if started.elapsed() > Duration::from_secs(10) {
                eprintln!("[chat_template] HANG-ish: {:?} took {:?}", tpl, started.elapsed());
                found_hang.push(tpl.clone());
            }
        });
    }
}

// ------------------------------------------------------------------ template tree (parse/)

fn fuzz_template_tree(deadline: Instant, rng: &mut StdRng, stats: &mut Stats) {
    while Instant::now() < deadline {
        let lines: Vec<String> = (0..rng.random_range(1..30))
            .map(|_| {
                let mut s = random_text(rng, 12);
                if rng.random_bool(0.5) {
                    s.push_str(&format!(" user{} from 10.0.{}.{} port {}", rng.random_range(0..5), rng.random_range(0..3), rng.random_range(0..255), rng.random_range(0..70000)));
                }
                s
            })
            .collect();
        let flips: Vec<(usize, u8)> = (0..rng.random_range(0..4)).map(|_| (rng.random::<u32>() as usize, rng.random::<u8>())).collect();
        let interesting = INTERESTING_U64[rng.random_range(0..INTERESTING_U64.len())];
        run_one("template_tree", stats, format!("{lines:?}\n{flips:?}").as_bytes(), || {
            let mut p = Parser::new(ParserConfig::default()).unwrap();
            for l in &lines {
                p.add(l);
            }
            let json = p.to_json().unwrap();
            let back = Parser::from_json(&json).unwrap();
            assert_eq!(back.to_json().unwrap(), json, "state round trip");
            // mutate numbers in the state
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
            if let Some(c) = v["clusters"].as_array_mut().and_then(|a| a.first_mut()) {
                c["size"] = serde_json::json!(interesting);
            }
            let mut b = v.to_string().into_bytes();
            for (i, x) in &flips {
                if !b.is_empty() {
                    let n = b.len();
                    b[i % n] = *x;
                }
            }
            if let Ok(s) = std::str::from_utf8(&b) {
                if let Ok(mut q) = Parser::from_json(s) {
                    for l in &lines {
                        q.add(l);
                    }
                    let _ = q.merge(&back);
                }
            }
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args.get(1).map(String::as_str).unwrap_or("all");
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(19);
    // Panics are reported by run_one; keep the default hook quiet.
    std::panic::set_hook(Box::new(|_| {}));
    let targets: Vec<&str> = if target == "all" { vec!["gguf", "tokenizer", "chat_template", "template_tree"] } else { vec![target] };
    let mut found = false;
    for t in &targets {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut stats = Stats { runs: 0, panics: Vec::new() };
        let mut hangs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs / targets.len() as u64);
        match *t {
            "gguf" => fuzz_gguf(deadline, &mut rng, &mut stats),
            "tokenizer" => fuzz_tokenizer(deadline, &mut rng, &mut stats),
            "chat_template" => fuzz_chat_template(deadline, &mut rng, &mut stats, &mut hangs),
            "template_tree" => fuzz_template_tree(deadline, &mut rng, &mut stats),
            other => {
                eprintln!("unknown target {other}");
                std::process::exit(2);
            }
        }
        println!("{t}: {} runs, {} panics, {} slow renders", stats.runs, stats.panics.len(), hangs.len());
        let mut uniq: Vec<&String> = stats.panics.iter().collect();
        uniq.sort();
        uniq.dedup();
        for p in uniq {
            println!("  panic: {p}");
        }
        found |= !stats.panics.is_empty() || !hangs.is_empty();
    }
    std::process::exit(i32::from(found));
}
