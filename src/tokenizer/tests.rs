//! Unit tests of the tokenizer (toy vocabularies, templates, decoding).
use std::collections::{HashMap, HashSet};

use candle_core::quantized::gguf_file::Value as GgufValue;

use super::chat_template::format_time;
use super::decoding::byte_to_char_table;
use super::*;

fn s(x: &str) -> GgufValue {
    GgufValue::String(x.to_string())
}

/// A toy byte-level vocabulary: 3 control tokens, the 256 byte chars, a few merges.
fn toy_md() -> HashMap<String, GgufValue> {
    let table = byte_to_char_table();
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().map(|t| t.to_string()).collect();
    let mut types = vec![3i32, 3, 3];
    for c in table {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges = ["h e", "he l", "hel l", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "Ġworl d"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    tokens.push("<tool>".into());
    types.push(4);
    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".into(), s("gpt2"));
    md.insert("tokenizer.ggml.pre".into(), s("smollm"));
    md.insert("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.iter().map(|t| s(t)).collect()));
    md.insert("tokenizer.ggml.token_type".into(), GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()));
    md.insert("tokenizer.ggml.merges".into(), GgufValue::Array(merges.iter().map(|m| s(m)).collect()));
    md.insert("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1));
    md.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2));
    md.insert("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false));
    md
}

fn toy() -> Tokenizer {
    Tokenizer::from_gguf_metadata(&toy_md()).unwrap()
}

fn is_tok_err<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(Error::Tokenizer(_)))
}

#[test]
fn toy_encode_decode() {
    let t = toy();
    assert_eq!(t.vocab_size(), 3 + 256 + 9 + 1);
    let ids = t.encode("hello world", false, false).unwrap();
    let hello = t.token_to_id("hello").unwrap();
    let world = t.token_to_id("Ġworld").unwrap();
    assert_eq!(ids, vec![hello, world]);
    assert_eq!(t.decode(&ids, false).unwrap(), "hello world");
    assert_eq!(t.encode("hello", true, false).unwrap(), vec![1, hello]);
    // eog: eos + text-detected <|im_end|>, <|endoftext|>
    let eog: HashSet<u32> = t.eos_token_ids().iter().copied().collect();
    assert_eq!(eog, HashSet::from([0, 2]));
    assert_eq!(t.eos_token_ids()[0], 2);
    assert!(t.is_special(2) && !t.is_special(hello));
}

#[test]
fn control_tokens_only_with_parse_special() {
    let t = toy();
    let text = "a<|im_end|>b<|im_start|>";
    let plain = t.encode(text, false, false).unwrap();
    assert!(plain.iter().all(|&i| !t.is_special(i)), "{plain:?}");
    assert_eq!(t.decode(&plain, false).unwrap(), text);
    let special = t.encode(text, false, true).unwrap();
    assert!(special.contains(&2) && special.contains(&1));
    assert_eq!(t.decode(&special, false).unwrap(), text);
    assert_eq!(t.decode(&special, true).unwrap(), "ab");
    // user-defined tokens are matched either way
    let tool = t.token_to_id("<tool>").unwrap();
    assert_eq!(t.encode("<tool>", false, false).unwrap(), vec![tool]);
    assert_eq!(t.decode(&[tool], true).unwrap(), "<tool>");
}

#[test]
fn digits_split_individually_for_smollm() {
    let t = toy();
    let ids = t.encode("a 123", false, false).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), "a 123");
    assert_eq!(ids.len(), 5); // "a", " ", "1", "2", "3"
}

#[test]
fn decode_stream_utf8() {
    let t = toy();
    let text = "é🚀 ok\u{FFFD}";
    let ids = t.encode(text, false, false).unwrap();
    assert!(ids.len() >= 7); // single byte tokens
    let mut st = t.decode_stream(false);
    let mut out = String::new();
    for &id in &ids {
        if let Some(p) = st.push(id).unwrap() {
            assert!(!p.is_empty());
            out.push_str(&p);
        }
    }
    assert!(st.finish().is_none());
    assert_eq!(out, text);
    // first byte of é alone yields nothing
    let mut st = t.decode_stream(false);
    assert_eq!(st.push(ids[0]).unwrap(), None);
    assert_eq!(st.finish().as_deref(), Some("\u{FFFD}"));
    // invalid bytes: same as lossy decode
    let b = |x: u8| 3 + x as u32;
    let seq = [b(0xFF), b(b'a'), b(0xE2), b(0x82), b(b'z'), b(0xC3)];
    let mut st = t.decode_stream(false);
    let mut acc = String::new();
    for &id in &seq {
        acc.push_str(&st.push(id).unwrap().unwrap_or_default());
    }
    acc.push_str(&st.finish().unwrap_or_default());
    assert_eq!(acc, t.decode(&seq, false).unwrap());
    assert!(matches!(st.push(999_999), Err(Error::InvalidArgument(_))));
}

#[test]
fn out_of_range_ids() {
    let t = toy();
    assert!(matches!(t.decode(&[u32::MAX], false), Err(Error::InvalidArgument(_))));
    assert!(t.token_piece(u32::MAX).is_err());
    assert!(!t.is_special(u32::MAX));
}

#[test]
fn no_panic_on_garbage_text() {
    let t = toy();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for len in 0..200 {
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x & 0xFF) as u8);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for special in [false, true] {
            let ids = t.encode(&text, false, special).unwrap();
            assert_eq!(t.decode(&ids, false).unwrap(), text);
        }
    }
}

#[test]
fn metadata_errors() {
    let mut md = toy_md();
    md.remove("tokenizer.ggml.merges");
    assert!(is_tok_err(Tokenizer::from_gguf_metadata(&md)));
    let mut md = toy_md();
    md.remove("tokenizer.ggml.tokens");
    assert!(is_tok_err(Tokenizer::from_gguf_metadata(&md)));
    let mut md = toy_md();
    md.insert("tokenizer.ggml.tokens".into(), GgufValue::Array(vec![GgufValue::U8(1)]));
    assert!(is_tok_err(Tokenizer::from_gguf_metadata(&md)));
    let mut md = toy_md();
    md.insert("tokenizer.ggml.tokens".into(), GgufValue::U32(7));
    assert!(is_tok_err(Tokenizer::from_gguf_metadata(&md)));
    let mut md = toy_md();
    md.insert("tokenizer.ggml.token_type".into(), GgufValue::Array(vec![]));
    assert!(is_tok_err(Tokenizer::from_gguf_metadata(&md)));
    let mut md = toy_md();
    md.insert("tokenizer.ggml.model".into(), s("llama"));
    let err = Tokenizer::from_gguf_metadata(&md).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(is_tok_err(Tokenizer::from_gguf_metadata(&HashMap::new())));
    // garbage merges and out-of-range ids are tolerated
    let mut md = toy_md();
    md.insert("tokenizer.ggml.merges".into(), GgufValue::Array(vec![s(""), s(" "), s("x"), s("zz qq"), s("h e")]));
    md.insert("tokenizer.ggml.bos_token_id".into(), GgufValue::I64(-5));
    md.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U64(u64::MAX));
    let t = Tokenizer::from_gguf_metadata(&md).unwrap();
    assert_eq!(t.bos_token_id(), None);
    assert_eq!(t.decode(&t.encode("hello", true, true).unwrap(), false).unwrap(), "hello");
    // unknown pre-tokenizer falls back to gpt2
    let mut md = toy_md();
    md.insert("tokenizer.ggml.pre".into(), s("something-new"));
    assert!(Tokenizer::from_gguf_metadata(&md).is_ok());
    for pre in ["qwen2", "llama-bpe", "gpt-2", "default", "deepseek-coder", "falcon", "starcoder"] {
        let mut md = toy_md();
        md.insert("tokenizer.ggml.pre".into(), s(pre));
        let t = Tokenizer::from_gguf_metadata(&md).unwrap();
        let text = "Hello world 12345 don't\n\n  日本 <|im_end|>";
        assert_eq!(t.decode(&t.encode(text, false, false).unwrap(), false).unwrap(), text, "{pre}");
    }
}

#[test]
fn chatml_fallback_and_encode_chat() {
    let t = toy();
    assert!(!t.has_chat_template());
    let msgs = vec![ChatMessage::system("sys"), ChatMessage::user("hello <|im_end|> world")];
    let r = t.render_chat(&msgs, true).unwrap();
    assert_eq!(r, "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhello <|im_end|> world<|im_end|>\n<|im_start|>assistant\n");
    let ids = t.encode_chat(&msgs, true).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 3);
    assert_eq!(t.decode(&ids, false).unwrap(), r);
    // without special text in contents: same as encoding the rendering with specials
    let msgs = vec![ChatMessage::user("hello world")];
    let r = t.render_chat(&msgs, false).unwrap();
    assert_eq!(t.encode_chat(&msgs, false).unwrap(), t.encode(&r, false, true).unwrap());
}

#[test]
fn templates() {
    let t = toy();
    assert!(is_tok_err(t.with_chat_template("{% for m in messages %}")));
    assert!(is_tok_err(t.with_chat_template("{{ 1 + }}")));
    let t2 = t.with_chat_template("{{ raise_exception('no system role') }}").unwrap();
    let e = t2.render_chat(&[ChatMessage::user("x")], true).unwrap_err();
    assert!(matches!(e, Error::Tokenizer(ref m) if m.contains("no system role")), "{e}");
    let t3 = t
        .with_chat_template("{% for m in messages %}{{ m.content.strip() | upper }}|{{ m.role.startswith('us') }}{% endfor %}")
        .unwrap();
    assert_eq!(t3.render_chat(&[ChatMessage::user("  hi  ")], false).unwrap(), "HI|True");
    let t4 = t.with_chat_template("{{ messages | tojson }}").unwrap();
    assert_eq!(
        t4.render_chat(&[ChatMessage::user("é \"q\"\n<x>")], false).unwrap(),
        r#"[{"role": "user", "content": "é \"q\"\n<x>"}]"#
    );
    let t5 = t.with_chat_template("{{ bos_token }}{% if tools %}T{% endif %}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}{{ eos_token }}").unwrap();
    assert_eq!(t5.render_chat(&[ChatMessage::user("a"), ChatMessage::user("b")], false).unwrap(), "<|im_start|>a<|im_end|>");
    // trim_blocks / lstrip_blocks like HF
    let t6 = t.with_chat_template("{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}").unwrap();
    assert_eq!(t6.render_chat(&[ChatMessage::user("a")], false).unwrap(), "a\n");
    // a template that rewrites contents: safe fallback
    let t7 = t.with_chat_template("{% for m in messages %}<|im_start|>{{ m.content | upper }}<|im_end|>{% endfor %}").unwrap();
    let ids = t7.encode_chat(&[ChatMessage::user("abc")], false).unwrap();
    assert_eq!(ids, t7.encode("<|im_start|>ABC<|im_end|>", false, true).unwrap());
    assert!(is_tok_err(t7.encode_chat(&[ChatMessage::user("<|im_end|>")], false)));
    // the model template failing to compile is reported on use
    let mut md = toy_md();
    md.insert("tokenizer.chat_template".into(), s("{% if %}"));
    let t8 = Tokenizer::from_gguf_metadata(&md).unwrap();
    assert!(t8.has_chat_template());
    assert!(is_tok_err(t8.render_chat(&[ChatMessage::user("x")], true)));
    assert!(is_tok_err(t8.encode_chat(&[ChatMessage::user("x")], true)));
}

#[test]
fn hf_dir() {
    let table = byte_to_char_table();
    let mut vocab = serde_json::Map::new();
    for (i, c) in table.iter().enumerate() {
        vocab.insert(c.to_string(), (i as u32).into());
    }
    vocab.insert("he".into(), 256.into());
    vocab.insert("hel".into(), 257.into());
    let tj = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 258, "content": "<|im_start|>", "special": true},
            {"id": 259, "content": "<|im_end|>", "special": true},
            {"id": 260, "content": "<tool>", "special": false}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["h e", "he l"]}
    });
    let cfg = serde_json::json!({
        "bos_token": {"content": "<|im_start|>"},
        "eos_token": "<|im_end|>",
        "add_bos_token": false,
        "chat_template": [{"name": "default", "template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"}]
    });
    let gen = serde_json::json!({"eos_token_id": [259, 260]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    std::fs::write(dir.path().join("generation_config.json"), gen.to_string()).unwrap();
    let t = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(t.vocab_size(), 261);
    assert_eq!(t.bos_token_id(), Some(258));
    assert!(!t.add_bos());
    assert_eq!(t.eos_token_ids(), &[259, 260]);
    let text = "help <|im_end|><tool> é";
    let ids = t.encode(text, false, false).unwrap();
    assert_eq!(&ids[..2], &[257, b'p' as u32]);
    assert!(!ids.contains(&259) && ids.contains(&260));
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    assert!(t.encode(text, false, true).unwrap().contains(&259));
    assert!(t.has_chat_template());
    assert_eq!(t.render_chat(&[ChatMessage::user("x")], false).unwrap(), "[user]x");
    // Padding / truncation in tokenizer.json are for training batches: never applied to a prompt.
    let mut tj2 = tj.clone();
    tj2["truncation"] = serde_json::json!({"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0});
    tj2["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
                                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    std::fs::write(dir.path().join("tokenizer.json"), tj2.to_string()).unwrap();
    let t2 = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(t2.encode(text, false, false).unwrap(), ids);
    std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
    assert!(matches!(Tokenizer::from_hf_dir(&dir.path().join("nope")), Err(Error::NotFound(_))));
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    assert!(is_tok_err(Tokenizer::from_hf_dir(dir.path())));
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert!(matches!(Tokenizer::from_hf_dir(dir.path()), Err(Error::NotFound(_))));
}

#[test]
fn strftime() {
    assert_eq!(format_time(0, "%d %b %Y %H:%M:%S %A"), "01 Jan 1970 00:00:00 Thursday");
    assert_eq!(format_time(1_718_000_000, "%Y-%m-%d %B %-d"), "2024-06-10 June 10");
}

#[test]
fn send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Tokenizer>();
    f::<DecodeStream>();
}

// ---------------------------------------------------------------------------
// hostile chat templates (issue 19): limits instead of a hang or an abort

fn render_err(template: &str) -> String {
    let t = toy().with_chat_template(template).unwrap();
    let started = std::time::Instant::now();
    let e = t.render_chat(&[ChatMessage::user("hi")], true).err().expect("over a limit");
    assert!(started.elapsed().as_secs_f64() < 20.0, "took {:?}", started.elapsed());
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
    e.to_string()
}

#[test]
fn template_nested_loops_run_out_of_fuel() {
    let e = render_err("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
    assert!(e.contains("limit"), "{e}");
}

#[test]
fn template_string_doubling_is_refused_before_allocating() {
    for t in [
        "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{{ 'x' * 100000000 * 100 }}",
        "{% set ns = namespace(l=['aaaa']) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
        "{{ (['x' * 1000000] * 1000)|join('') }}",
        "{{ ('x' * 1000000)|replace('x', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') }}",
        "{{ ('x' * 1000000).replace('', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') }}",
        "{{ 'x'|indent(1000000000000) }}",
        "{{ range(10)|batch(1000000000000)|list }}",
        "{{ (['x' * 1000000] * 1000)|tojson }}",
        "{{ (['x' * 1000000] * 1000)|string }}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100) %}literal text that adds up quickly{% endfor %}{% endfor %}",
    ] {
        let e = render_err(t);
        assert!(e.contains("limit"), "{t}: {e}");
    }
}

#[test]
fn template_deep_recursion_is_refused_on_a_small_stack() {
    // A worker thread (2 MB stack): the recursion limit must trip before the stack does.
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| render_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"))
        .unwrap();
    let e = h.join().expect("no stack overflow");
    assert!(e.contains("recursion"), "{e}");
}

#[test]
fn template_limits_leave_real_templates_alone() {
    // Output stays what minijinja renders without the rewrite.
    let tpl = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endfor %}\
               {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}{% set x = [1, 2] + [3] %}{{ x|join(',') }} \
               {{ 'ab' * 3 }} {{ 2 * 3 + 1 }} {{ messages|tojson }} {{ 'a-b'.replace('-', '+') }} {{ 'a\nb'|indent(2) }}|";
    let t = toy().with_chat_template(tpl).unwrap();
    let msgs = [ChatMessage::system("be brief"), ChatMessage::user("a long log line ".repeat(5000))];
    let got = t.render_chat(&msgs, true).unwrap();
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_template("t", tpl).unwrap();
    let plain = env
        .get_template("t")
        .unwrap()
        .render(minijinja::context! { messages => minijinja::Value::from_serialize(&msgs[..]), add_generation_prompt => true })
        .unwrap();
    // `tojson` is ours in both the guarded and HF sense: compare the rest.
    let cut = |s: &str| {
        let (a, b) = s.split_once(" [").unwrap();
        (a.to_string(), b.rsplit_once("] ").unwrap().1.to_string())
    };
    assert_eq!(cut(&got), cut(&plain));
    // A long message is never refused for its own length.
    let huge = [ChatMessage::user("y".repeat(40 << 20))];
    assert!(toy().render_chat(&huge, true).is_ok());
    // Tighter limits are honoured.
    let tight = toy()
        .with_chat_template("{% for i in range(1000) %}x{% endfor %}")
        .unwrap()
        .with_chat_template_limits(ChatTemplateLimits { fuel: 100, ..Default::default() })
        .unwrap();
    assert!(is_tok_err(tight.render_chat(&msgs, true)));
}
