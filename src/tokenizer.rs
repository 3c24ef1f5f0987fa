//! Tokenizer and chat templates for the generation engine.
//!
//! * **GGUF** ([`Tokenizer::from_gguf_metadata`]): the tokenizer is rebuilt in
//!   memory from the `tokenizer.ggml.*` metadata as a `tokenizers` (HF) byte-level
//!   BPE: vocabulary from `tokens`, ranks from `merges`, and a pre-tokenizer that
//!   reproduces the regexes llama.cpp picks for `tokenizer.ggml.pre`
//!   (`llm_tokenizer_bpe` in llama.cpp `src/llama-vocab.cpp`: smollm/starcoder,
//!   gpt2, qwen2, llama3/llama-bpe, deepseek-coder, falcon, default). An
//!   unknown `pre` value (also deepseek-llm, whose letter class Oniguruma rejects)
//!   falls back to the GPT-2 regex (llama.cpp would refuse to load it). Only `tokenizer.ggml.model == "gpt2"` is supported; SentencePiece
//!   ("llama") GGUF tokenizers give `Error::Tokenizer` asking for a tokenizer.json.
//! * **HF directory** ([`Tokenizer::from_hf_dir`]): `tokenizer.json` via the
//!   `tokenizers` crate, plus `tokenizer_config.json` (chat template, bos/eos,
//!   `add_bos_token`) and `generation_config.json` (extra eos ids).
//!
//! Special tokens are never handed to the `tokenizers` crate as added tokens
//! (it would always split on them). Instead the text is partitioned on them here,
//! exactly like llama.cpp's `tokenizer_st_partition`: token texts longest first,
//! control tokens only when `parse_special` is set, user-defined tokens always.
//! So a log line containing `<|im_end|>` can never inject a control token.
//!
//! End-of-generation ids follow llama.cpp's "eog" set (eos, eot, the text-detected
//! end-of-turn tokens such as `<|im_end|>`/`<|endoftext|>`, and FIM pad/repo/sep).
//!
//! Chat templates are rendered by minijinja with the HF conventions
//! (`trim_blocks`, `lstrip_blocks`, Python string methods via
//! minijinja-contrib `pycompat`, `raise_exception`, `strftime_now`, a Python-style
//! `tojson`). A model without a template falls back to ChatML (`<|im_start|>`…).
//! [`Tokenizer::encode_chat`] parses the template's markup as special tokens but
//! never the message contents.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value as GgufValue;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::{Error, Result};

/// One chat turn: `role` is "system", "user", "assistant" (or "tool").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// llama.cpp token attributes that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    /// control or unknown: matched only with `parse_special`, decodes to "" when skipping specials.
    Control,
    /// user-defined: always matched as a whole, decodes to its text.
    UserDefined,
    /// unused/padding slots: never produced by encode, decode to "".
    Unused,
}

/// ChatML, used when the model ships no chat template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat";

struct ChatTemplate {
    /// `Err(msg)`: the model's template failed to compile; reported on use.
    env: std::result::Result<minijinja::Environment<'static>, String>,
    from_model: bool,
}

struct Inner {
    /// BPE + pre-tokenizer, with no added tokens.
    tk: tokenizers::Tokenizer,
    /// id -> bytes the token stands for (control tokens: their text).
    pieces: Vec<Vec<u8>>,
    kinds: Vec<Kind>,
    /// Tokens matched before BPE, longest text first: (text, id, is_control).
    split_tokens: Vec<(String, u32, bool)>,
    bos: Option<u32>,
    eos: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    bos_text: String,
    eos_text: String,
    chat: ChatTemplate,
}

/// A text tokenizer with its chat template. Cloning is cheap (shared `Arc`).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.inner.bos)
            .field("eog", &self.inner.eog)
            .finish()
    }
}

fn tok_err(msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer(msg.to_string())
}

// ---------------------------------------------------------------------------
// byte-level (GPT-2) mapping

/// GPT-2 `bytes_to_unicode`: byte -> printable char.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

fn char_to_byte_map() -> HashMap<char, u8> {
    byte_to_char_table().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect()
}

/// Byte-level decode of one token text; like HF's ByteLevel decoder, a token
/// holding a char outside the mapping is taken verbatim as UTF-8.
fn byte_level_decode(text: &str, map: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => return text.as_bytes().to_vec(),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// pre-tokenizer regexes (llama.cpp llama-vocab.cpp, llm_tokenizer_bpe)

/// GPT-2 regex; llama.cpp's custom splitter behaves as if `|\s+` closed it.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regex list and `ignore_merges` llama.cpp uses for a `tokenizer.ggml.pre` value.
fn pre_regexes(pre: &str) -> (Vec<&'static str>, bool) {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => {
            (vec![RE_LLAMA3], true)
        }
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => (vec![RE_LLAMA3], false),
        "glm4" | "glm5" => (vec![RE_LLAMA3], true),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan" | "solar-open" => {
            (vec![RE_QWEN2], false)
        }
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            (vec![r"\p{N}", RE_GPT2], false)
        }
        "deepseek-coder" => (vec!["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"], false),
        "falcon" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|`]+",
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                "[0-9][0-9][0-9]",
            ],
            false,
        ),
        "" | "default" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            false,
        ),
        // gpt-2, phi-2, mpt, olmo, jais, trillion, exaone4, ... and unknown values.
        _ => (vec![RE_GPT2], false),
    }
}

fn build_pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut seq: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(SplitPattern::Regex((*re).to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| tok_err(format!("bad pre-tokenizer regex {re:?}: {e}")))?;
        seq.push(split.into());
    }
    seq.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(seq).into())
}

// ---------------------------------------------------------------------------
// GGUF metadata helpers

fn md_str<'a>(md: &'a HashMap<String, GgufValue>, key: &str) -> Option<&'a str> {
    match md.get(key) {
        Some(GgufValue::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn value_as_i64(v: &GgufValue) -> Option<i64> {
    Some(match v {
        GgufValue::U8(x) => *x as i64,
        GgufValue::I8(x) => *x as i64,
        GgufValue::U16(x) => *x as i64,
        GgufValue::I16(x) => *x as i64,
        GgufValue::U32(x) => *x as i64,
        GgufValue::I32(x) => *x as i64,
        GgufValue::U64(x) => i64::try_from(*x).ok()?,
        GgufValue::I64(x) => *x,
        _ => return None,
    })
}

fn md_id(md: &HashMap<String, GgufValue>, key: &str, n_vocab: usize) -> Option<u32> {
    let v = value_as_i64(md.get(key)?)?;
    (v >= 0 && (v as u64) < n_vocab as u64).then_some(v as u32)
}

fn md_bool(md: &HashMap<String, GgufValue>, key: &str) -> Option<bool> {
    match md.get(key)? {
        GgufValue::Bool(b) => Some(*b),
        v => value_as_i64(v).map(|x| x != 0),
    }
}

fn md_str_array<'a>(md: &'a HashMap<String, GgufValue>, key: &str) -> Result<Vec<&'a str>> {
    let arr = match md.get(key) {
        Some(GgufValue::Array(a)) => a,
        Some(_) => return Err(tok_err(format!("GGUF metadata {key} is not an array"))),
        None => return Err(tok_err(format!("GGUF metadata has no {key}; cannot build the tokenizer"))),
    };
    arr.iter()
        .enumerate()
        .map(|(i, v)| match v {
            GgufValue::String(s) => Ok(s.as_str()),
            _ => Err(tok_err(format!("GGUF metadata {key}[{i}] is not a string"))),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// construction

/// What the constructors gather before [`Tokenizer::assemble`].
struct Parts {
    tk: tokenizers::Tokenizer,
    texts: Vec<String>,
    kinds: Vec<Kind>,
    pieces: Vec<Vec<u8>>,
    bos: Option<u32>,
    eos: Option<u32>,
    extra_eog: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

/// Token texts llama.cpp marks as end-of-generation (and control).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
];
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Other control-looking texts llama.cpp promotes to control (FIM, eom).
const CONTROL_TEXTS: &[&str] = &[
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>",
];

impl Tokenizer {
    /// Build from the metadata of a GGUF file (`Content::read(..)?.metadata`).
    pub fn from_gguf_metadata(md: &HashMap<String, GgufValue>) -> Result<Self> {
        let model = md_str(md, "tokenizer.ggml.model").unwrap_or("");
        match model {
            "gpt2" => {}
            "" => return Err(tok_err("GGUF metadata has no tokenizer.ggml.model; supply a tokenizer.json")),
            "llama" => {
                return Err(tok_err(
                    "GGUF tokenizer model 'llama' (SentencePiece) is not supported from GGUF metadata; supply a tokenizer.json",
                ))
            }
            other => {
                return Err(tok_err(format!(
                    "GGUF tokenizer model '{other}' is not supported (only 'gpt2' byte-level BPE); supply a tokenizer.json"
                )))
            }
        }
        let tokens = md_str_array(md, "tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            return Err(tok_err("GGUF tokenizer.ggml.tokens is empty"));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(tok_err("GGUF vocabulary too large"));
        }
        let merges_raw = md_str_array(md, "tokenizer.ggml.merges")?;
        let n = tokens.len();
        let types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(a)) if a.len() == n => a.iter().map(|v| value_as_i64(v).unwrap_or(1)).collect(),
            Some(_) => return Err(tok_err("GGUF tokenizer.ggml.token_type does not match the token list")),
            None => vec![1; n],
        };
        let pre = md_str(md, "tokenizer.ggml.pre").unwrap_or("default");

        let c2b = char_to_byte_map();
        let mut kinds = Vec::with_capacity(n);
        let mut pieces = Vec::with_capacity(n);
        let mut vocab: ahash::AHashMap<String, u32> = ahash::AHashMap::with_capacity(n);
        for (i, (&text, &ty)) in tokens.iter().zip(types.iter()).enumerate() {
            // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            let kind = match ty {
                2 | 3 => Kind::Control,
                4 => Kind::UserDefined,
                5 => Kind::Unused,
                _ => Kind::Normal,
            };
            let piece = match kind {
                Kind::Normal => {
                    if ty == 6 {
                        parse_byte_token(text).map(|b| vec![b]).unwrap_or_else(|| byte_level_decode(text, &c2b))
                    } else {
                        byte_level_decode(text, &c2b)
                    }
                }
                Kind::Control | Kind::UserDefined => text.as_bytes().to_vec(),
                Kind::Unused => Vec::new(),
            };
            kinds.push(kind);
            pieces.push(piece);
            vocab.insert(text.to_string(), i as u32); // last duplicate wins, as in llama.cpp
        }

        let mut merges = Vec::with_capacity(merges_raw.len());
        for m in merges_raw {
            // llama.cpp: split at the first space after position 0.
            let pos = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(p, _)| p);
            let Some(pos) = pos else { continue };
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            if a.is_empty() || b.is_empty() || !vocab.contains_key(a) || !vocab.contains_key(b) {
                continue;
            }
            if !vocab.contains_key(&format!("{a}{b}")) {
                continue; // HF BPE cannot express a merge into a non-token
            }
            merges.push((a.to_string(), b.to_string()));
        }

        let (regexes, ignore_merges) = pre_regexes(pre);
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| tok_err(format!("cannot build BPE from GGUF metadata: {e}")))?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        tk.with_pre_tokenizer(Some(build_pre_tokenizer(&regexes)?));
        tk.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));

        let default_add_bos = matches!(
            pre,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "tekken" | "chameleon"
        );
        let mut bos = md_id(md, "tokenizer.ggml.bos_token_id", n);
        if matches!(pre, "chatglm-bpe" | "glm4" | "glm5") {
            bos = None;
        }
        let eos = md_id(md, "tokenizer.ggml.eos_token_id", n);
        let extra_eog: Vec<u32> = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
            .iter()
            .filter_map(|k| md_id(md, k, n))
            .collect();
        let add_bos = md_bool(md, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos) && bos.is_some();
        let chat_template = md_str(md, "tokenizer.chat_template").map(str::to_string);

        Self::assemble(Parts {
            tk,
            texts: tokens.iter().map(|s| s.to_string()).collect(),
            kinds,
            pieces,
            bos,
            eos,
            extra_eog,
            add_bos,
            chat_template,
        })
    }

    /// Load a Hugging Face tokenizer directory: `tokenizer.json`, plus
    /// `tokenizer_config.json` and `generation_config.json` when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        let cfg = dir.join("tokenizer_config.json");
        let gen = dir.join("generation_config.json");
        Self::from_file(
            &dir.join("tokenizer.json"),
            cfg.is_file().then_some(cfg.as_path()),
            gen.is_file().then_some(gen.as_path()),
        )
    }

    /// Load an explicit `tokenizer.json`, with optional `tokenizer_config.json`
    /// and `generation_config.json`.
    pub fn from_file(tokenizer_json: &Path, tokenizer_config: Option<&Path>, generation_config: Option<&Path>) -> Result<Self> {
        let read_json = |p: &Path| -> Result<serde_json::Value> {
            let s = std::fs::read_to_string(p).map_err(|e| Error::from_open(p, e))?;
            serde_json::from_str(&s).map_err(|e| tok_err(format!("{}: invalid JSON: {e}", p.display())))
        };
        let mut tj = read_json(tokenizer_json)?;
        let cfg = tokenizer_config.map(read_json).transpose()?;
        let gen = generation_config.map(read_json).transpose()?;
        Self::from_hf_json(&mut tj, cfg.as_ref(), gen.as_ref())
    }

    fn from_hf_json(
        tj: &mut serde_json::Value,
        cfg: Option<&serde_json::Value>,
        gen: Option<&serde_json::Value>,
    ) -> Result<Self> {
        use serde_json::Value as J;
        let obj = tj.as_object_mut().ok_or_else(|| tok_err("tokenizer.json is not a JSON object"))?;
        // Added tokens are matched by us, not by the tokenizers crate.
        let added = obj.insert("added_tokens".into(), J::Array(vec![])).unwrap_or(J::Null);
        // The post-processor tells whether a BOS is added by default.
        let post_bos = post_processor_bos(obj.get("post_processor"));
        let decoder_is_byte_level = json_mentions_type(obj.get("decoder"), "ByteLevel");
        let json = serde_json::to_string(&*tj)?;
        let tk: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| tok_err(format!("cannot load tokenizer.json: {e}")))?;

        let vocab = tokenizers::Model::get_vocab(tk.get_model());
        let mut added_list: Vec<(String, u32, bool)> = Vec::new();
        if let J::Array(a) = &added {
            for t in a {
                let (Some(id), Some(content)) = (t.get("id").and_then(J::as_u64), t.get("content").and_then(J::as_str)) else {
                    continue;
                };
                let Ok(id) = u32::try_from(id) else { continue };
                let special = t.get("special").and_then(J::as_bool).unwrap_or(false);
                added_list.push((content.to_string(), id, special));
            }
        }
        let n = vocab
            .values()
            .copied()
            .chain(added_list.iter().map(|t| t.1))
            .max()
            .map(|m| m as usize + 1)
            .unwrap_or(0);
        if n == 0 {
            return Err(tok_err("tokenizer.json has an empty vocabulary"));
        }
        if n > 4_000_000 {
            return Err(tok_err("tokenizer.json vocabulary ids are implausibly large"));
        }
        let mut texts = vec![String::new(); n];
        let mut kinds = vec![Kind::Unused; n];
        for (t, &id) in &vocab {
            texts[id as usize] = t.clone();
            kinds[id as usize] = Kind::Normal;
        }
        for (t, id, special) in &added_list {
            texts[*id as usize] = t.clone();
            kinds[*id as usize] = if *special { Kind::Control } else { Kind::UserDefined };
        }
        let c2b = char_to_byte_map();
        let pieces = texts
            .iter()
            .zip(kinds.iter())
            .map(|(t, k)| match k {
                Kind::Normal if decoder_is_byte_level => byte_level_decode(t, &c2b),
                Kind::Normal => parse_byte_token(t).map(|b| vec![b]).unwrap_or_else(|| t.replace('\u{2581}', " ").into_bytes()),
                Kind::Control | Kind::UserDefined => t.as_bytes().to_vec(),
                Kind::Unused => Vec::new(),
            })
            .collect();

        let token_text = |v: Option<&J>| -> Option<String> {
            match v? {
                J::String(s) => Some(s.clone()),
                J::Object(o) => o.get("content").and_then(J::as_str).map(str::to_string),
                _ => None,
            }
        };
        let id_of = |text: &str| -> Option<u32> {
            added_list.iter().find(|t| t.0 == text).map(|t| t.1).or_else(|| vocab.get(text).copied())
        };
        let bos = cfg.and_then(|c| token_text(c.get("bos_token"))).and_then(|t| id_of(&t)).or(post_bos);
        let eos = cfg.and_then(|c| token_text(c.get("eos_token"))).and_then(|t| id_of(&t));
        let add_bos = match cfg.and_then(|c| c.get("add_bos_token")).and_then(J::as_bool) {
            Some(b) => b,
            None => post_bos.is_some(),
        } && bos.is_some();
        let mut extra_eog = Vec::new();
        if let Some(g) = gen.and_then(|g| g.get("eos_token_id")) {
            let ids: Vec<&J> = match g {
                J::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            extra_eog.extend(ids.into_iter().filter_map(J::as_u64).filter(|&i| (i as usize) < n).map(|i| i as u32));
        }
        let chat_template = cfg.and_then(|c| match c.get("chat_template")? {
            J::String(s) => Some(s.clone()),
            J::Array(list) => {
                let pick = |name: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(J::as_str) == Some(name))
                        .and_then(|t| t.get("template").and_then(J::as_str))
                };
                pick("default").or_else(|| list.first().and_then(|t| t.get("template").and_then(J::as_str))).map(str::to_string)
            }
            _ => None,
        });
        Self::assemble(Parts { tk, texts, kinds, pieces, bos, eos, extra_eog, add_bos, chat_template })
    }

    fn assemble(p: Parts) -> Result<Self> {
        let Parts { tk, texts, mut kinds, pieces, bos, eos, extra_eog, add_bos, chat_template } = p;
        // Text-detected tokens, like llama.cpp (first id wins for eot/fim, all ids for eog).
        let mut by_text: HashMap<&str, u32> = HashMap::new();
        for (i, t) in texts.iter().enumerate() {
            by_text.entry(t.as_str()).or_insert(i as u32);
        }
        let find_first = |list: &[&str]| -> Option<u32> {
            // llama.cpp walks an unordered map; take the lowest id among matches.
            list.iter().filter_map(|t| by_text.get(t).copied()).min()
        };
        let mut eog: Vec<u32> = Vec::new();
        let push = |v: &mut Vec<u32>, id: u32| {
            if !v.contains(&id) {
                v.push(id)
            }
        };
        if let Some(e) = eos {
            push(&mut eog, e);
        }
        for list in [FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS] {
            if let Some(id) = find_first(list) {
                push(&mut eog, id);
            }
        }
        let mut has = HashMap::new();
        for (i, t) in texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                push(&mut eog, i as u32);
                has.insert(t.as_str(), i as u32);
            }
        }
        if let Some(id) = find_first(EOT_TEXTS) {
            push(&mut eog, id);
        }
        for id in extra_eog {
            push(&mut eog, id);
        }
        // o200k_harmony / solar-open: "<|end|>" is not end-of-generation there.
        if let Some(&end) = has.get("<|end|>") {
            let call = has.contains_key("<|call|>") || has.contains_key("<|calls|>");
            if (has.contains_key("<|return|>") && call) || (call && has.contains_key("<|flush|>")) {
                eog.retain(|&i| i != end);
                kinds[end as usize] = Kind::UserDefined;
            }
        }
        // gemma4/plamo: "</s>" is a normal token there.
        let eog_has = |t: &str| eog.iter().any(|&i| texts[i as usize] == t);
        if eog_has("<|tool_response>") || eog_has("<|plamo:eos|>") {
            eog.retain(|&i| texts[i as usize] != "</s>");
        }
        // Promote control-looking tokens (detected by text) to control, as llama.cpp does.
        for &id in &eog {
            let t = texts[id as usize].as_str();
            if [EOG_TEXTS, FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS].iter().any(|l| l.contains(&t)) {
                kinds[id as usize] = Kind::Control;
            }
        }
        for t in CONTROL_TEXTS {
            if let Some(&id) = by_text.get(t) {
                kinds[id as usize] = Kind::Control;
            }
        }
        let mut split_tokens: Vec<(String, u32, bool)> = texts
            .iter()
            .enumerate()
            .filter(|(i, t)| !t.is_empty() && matches!(kinds[*i], Kind::Control | Kind::UserDefined))
            .map(|(i, t)| (t.clone(), i as u32, kinds[i] == Kind::Control))
            .collect();
        split_tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        let text_of = |id: Option<u32>| id.and_then(|i| texts.get(i as usize)).cloned().unwrap_or_default();
        let bos_text = text_of(bos);
        let eos_text = text_of(eos);
        let chat = ChatTemplate::new(chat_template.as_deref());
        Ok(Self {
            inner: Arc::new(Inner {
                tk,
                pieces,
                kinds,
                split_tokens,
                bos,
                eos,
                eog,
                add_bos,
                bos_text,
                eos_text,
                chat,
            }),
        })
    }

    /// Replace the chat template (e.g. a user-supplied one). A template that does
    /// not compile gives `Error::Tokenizer`.
    pub fn with_chat_template(&self, template: &str) -> Result<Self> {
        let env = build_env(template).map_err(tok_err)?;
        let old = &self.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                tk: old.tk.clone(),
                pieces: old.pieces.clone(),
                kinds: old.kinds.clone(),
                split_tokens: old.split_tokens.clone(),
                bos: old.bos,
                eos: old.eos,
                eog: old.eog.clone(),
                add_bos: old.add_bos,
                bos_text: old.bos_text.clone(),
                eos_text: old.eos_text.clone(),
                chat: ChatTemplate { env: Ok(env), from_model: true },
            }),
        })
    }

    // -----------------------------------------------------------------------
    // accessors

    pub fn vocab_size(&self) -> usize {
        self.inner.pieces.len()
    }
    pub fn bos_token_id(&self) -> Option<u32> {
        self.inner.bos
    }
    /// The model's own eos id (`tokenizer.ggml.eos_token_id`).
    pub fn eos_token_id(&self) -> Option<u32> {
        self.inner.eos
    }
    /// Every id that ends generation (llama.cpp's eog set), the eos id first.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.inner.eog
    }
    pub fn is_eos(&self, id: u32) -> bool {
        self.inner.eog.contains(&id)
    }
    /// Whether the model wants a BOS token in front of a prompt.
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }
    /// Control/unknown tokens and unused slots: the ids `skip_special` drops.
    pub fn is_special(&self, id: u32) -> bool {
        matches!(self.inner.kinds.get(id as usize), Some(Kind::Control | Kind::Unused))
    }
    /// Whether the model ships a chat template (otherwise ChatML is used).
    pub fn has_chat_template(&self) -> bool {
        self.inner.chat.from_model
    }
    /// The id of a token by its exact text (e.g. `"<|im_end|>"`), if any.
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        if let Some(t) = self.inner.split_tokens.iter().find(|t| t.0 == text) {
            return Some(t.1);
        }
        self.inner.tk.token_to_id(text)
    }

    /// The raw bytes token `id` stands for (a control token: its text). Bytes of
    /// a multi-byte character may be split over several tokens.
    pub fn token_piece(&self, id: u32) -> Result<&[u8]> {
        self.inner
            .pieces
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::InvalidArgument(format!("token id {id} out of range (vocab size {})", self.vocab_size())))
    }

    // -----------------------------------------------------------------------
    // encode / decode

    /// Encode `text`. With `parse_special == false` the text of a control token
    /// (`<|im_end|>`) is tokenized as plain text; user-defined tokens are still
    /// matched (as llama.cpp and HF do). `add_bos` prepends the BOS id when the
    /// model has one (pass [`Tokenizer::add_bos`] for the model's default).
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_bos {
            if let Some(b) = self.inner.bos {
                out.push(b);
            }
        }
        self.encode_into(text, parse_special, &[], &mut out)?;
        Ok(out)
    }

    /// Partition (llama.cpp `tokenizer_st_partition`) then BPE each raw fragment.
    /// Control tokens are not matched where they overlap a `protected` byte range.
    fn encode_into(&self, text: &str, parse_special: bool, protected: &[(usize, usize)], out: &mut Vec<u32>) -> Result<()> {
        enum Frag {
            Raw(usize, usize),
            Tok(u32),
        }
        let mut frags = vec![Frag::Raw(0, text.len())];
        if !text.is_empty() {
            for (tok, id, is_control) in &self.inner.split_tokens {
                if *is_control && !parse_special {
                    continue;
                }
                if !text.contains(tok.as_str()) {
                    continue;
                }
                let mut next = Vec::with_capacity(frags.len() + 2);
                for f in frags {
                    let Frag::Raw(start, end) = f else {
                        next.push(f);
                        continue;
                    };
                    let mut left = start;
                    let mut pos = start;
                    while pos < end {
                        let Some(rel) = text[pos..end].find(tok.as_str()) else { break };
                        let m = pos + rel;
                        let m_end = m + tok.len();
                        if *is_control && protected.iter().any(|&(ps, pe)| m < pe && m_end > ps) {
                            // skip this occurrence: advance one char
                            pos = m + text[m..].chars().next().map_or(1, char::len_utf8);
                            continue;
                        }
                        if m > left {
                            next.push(Frag::Raw(left, m));
                        }
                        next.push(Frag::Tok(*id));
                        left = m_end;
                        pos = m_end;
                    }
                    if left < end {
                        next.push(Frag::Raw(left, end));
                    }
                }
                frags = next;
            }
        }
        for f in frags {
            match f {
                Frag::Tok(id) => out.push(id),
                Frag::Raw(s, e) => {
                    if s >= e {
                        continue;
                    }
                    let enc = self
                        .inner
                        .tk
                        .encode_fast(&text[s..e], false)
                        .map_err(|err| tok_err(format!("tokenization failed: {err}")))?;
                    out.extend_from_slice(enc.get_ids());
                }
            }
        }
        Ok(())
    }

    /// Decode ids to text (invalid UTF-8 becomes U+FFFD). `skip_special` drops
    /// control tokens. An id outside the vocabulary is `Error::InvalidArgument`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_piece(id, skip_special, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn append_piece(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) -> Result<()> {
        let piece = self.token_piece(id)?;
        if skip_special && self.inner.kinds[id as usize] == Kind::Control {
            return Ok(());
        }
        out.extend_from_slice(piece);
        Ok(())
    }

    /// An incremental detokenizer for streaming output.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream {
        DecodeStream { tok: self.clone(), skip_special, buf: Vec::new() }
    }

    // -----------------------------------------------------------------------
    // chat

    fn render_values(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let env = match &self.inner.chat.env {
            Ok(env) => env,
            Err(msg) => return Err(tok_err(format!("invalid chat template: {msg}"))),
        };
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| tok_err(format!("invalid chat template: {e}")))?;
        let ctx = minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.inner.bos_text.as_str(),
            eos_token => self.inner.eos_text.as_str(),
            tools => minijinja::Value::from(()),
        };
        tmpl.render(ctx).map_err(|e| tok_err(format!("chat template rendering failed: {}", describe_jinja_error(&e))))
    }

    /// Render the chat prompt as text.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_values(messages, add_generation_prompt)
    }

    /// Render and tokenize a chat prompt: the template's markup is parsed for
    /// special tokens, the message contents never are. Without special-token text
    /// in the contents the ids equal llama.cpp tokenizing the rendered prompt with
    /// `special=true`. A BOS is prepended when [`Tokenizer::add_bos`] and the
    /// prompt does not already start with it.
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let real = self.render_values(messages, add_generation_prompt)?;
        // Render again with sentinels in place of the contents, to learn where they go.
        let sentinel = |i: usize| format!("\u{F8F0}LOGLM{i}\u{F8F1}");
        let masked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage { role: m.role.clone(), content: sentinel(i) })
            .collect();
        let layout = self.render_values(&masked, add_generation_prompt)?;
        let mut rebuilt = String::with_capacity(real.len());
        let mut ranges = Vec::new();
        let mut rest = layout.as_str();
        while let Some(p) = rest.find("\u{F8F0}LOGLM") {
            rebuilt.push_str(&rest[..p]);
            let after = &rest[p + "\u{F8F0}LOGLM".len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let idx: Option<usize> = after[..digits].parse().ok();
            let closed = after[digits..].starts_with('\u{F8F1}');
            match (idx, closed) {
                (Some(i), true) if i < messages.len() => {
                    let s = rebuilt.len();
                    rebuilt.push_str(&messages[i].content);
                    ranges.push((s, rebuilt.len()));
                    rest = &after[digits + '\u{F8F1}'.len_utf8()..];
                }
                _ => {
                    rebuilt.push_str(&rest[p..p + '\u{F8F0}'.len_utf8()]);
                    rest = &rest[p + '\u{F8F0}'.len_utf8()..];
                }
            }
        }
        rebuilt.push_str(rest);

        let mut ids = Vec::new();
        if rebuilt == real {
            self.encode_into(&real, true, &ranges, &mut ids)?;
        } else {
            // The template transforms contents; we cannot tell markup from content.
            let injected = messages.iter().any(|m| {
                self.inner.split_tokens.iter().any(|(t, _, ctl)| *ctl && m.content.contains(t.as_str()))
            });
            if injected {
                return Err(tok_err(
                    "a chat message contains special-token text and the chat template rewrites message contents, \
                     so it cannot be encoded safely",
                ));
            }
            self.encode_into(&real, true, &[], &mut ids)?;
        }
        if let (true, Some(b)) = (self.inner.add_bos, self.inner.bos) {
            if ids.first() != Some(&b) {
                ids.insert(0, b);
            }
        }
        Ok(ids)
    }
}

/// `<0xAB>` -> 0xAB.
fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn json_mentions_type(v: Option<&serde_json::Value>, ty: &str) -> bool {
    match v {
        Some(serde_json::Value::Object(o)) => {
            o.get("type").and_then(|t| t.as_str()) == Some(ty)
                || o.values().any(|x| json_mentions_type(Some(x), ty))
        }
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| json_mentions_type(Some(x), ty)),
        _ => false,
    }
}

/// BOS id from a `TemplateProcessing` post-processor whose single template
/// starts with a special token.
fn post_processor_bos(v: Option<&serde_json::Value>) -> Option<u32> {
    let v = v?;
    if v.get("type")?.as_str()? == "Sequence" {
        return v.get("processors")?.as_array()?.iter().find_map(|p| post_processor_bos(Some(p)));
    }
    if v.get("type")?.as_str()? != "TemplateProcessing" {
        return None;
    }
    let first = v.get("single")?.as_array()?.first()?;
    let name = first.get("SpecialToken")?.get("id")?.as_str()?;
    let ids = v.get("special_tokens")?.get(name)?.get("ids")?.as_array()?;
    ids.first()?.as_u64().and_then(|i| u32::try_from(i).ok())
}

// ---------------------------------------------------------------------------
// streaming

/// Incremental detokenizer: `push` returns only complete UTF-8 text, `finish`
/// flushes the rest. The concatenation of all outputs equals
/// `decode(all ids, skip_special)`.
pub struct DecodeStream {
    tok: Tokenizer,
    skip_special: bool,
    buf: Vec<u8>,
}

impl DecodeStream {
    pub fn new(tok: &Tokenizer, skip_special: bool) -> Self {
        tok.decode_stream(skip_special)
    }

    /// Add one token; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.tok.append_piece(id, self.skip_special, &mut self.buf)?;
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.buf) {
                Ok(s) => {
                    out.push_str(s);
                    self.buf.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix was just validated.
                    out.push_str(std::str::from_utf8(&self.buf[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.buf.drain(..valid + bad);
                        }
                        None => {
                            self.buf.drain(..valid);
                            break; // incomplete sequence at the end: wait for more bytes
                        }
                    }
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Flush what is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        Some(s)
    }
}

// ---------------------------------------------------------------------------
// chat template environment

impl ChatTemplate {
    fn new(source: Option<&str>) -> Self {
        match source {
            Some(src) if !src.trim().is_empty() => ChatTemplate { env: build_env(src), from_model: true },
            _ => ChatTemplate { env: build_env(CHATML_TEMPLATE), from_model: false },
        }
    }
}

fn describe_jinja_error(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn build_env(source: &str) -> std::result::Result<minijinja::Environment<'static>, String> {
    use minijinja::{Environment, ErrorKind, Value};
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
    });
    env.add_function("strftime_now", |fmt: String| -> String { strftime_now(&fmt) });
    env.add_filter("tojson", tojson_filter);
    env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(|e| describe_jinja_error(&e))?;
    Ok(env)
}

/// Python `json.dumps(x, ensure_ascii=False, indent=indent)` as HF's `tojson`.
fn tojson_filter(value: minijinja::Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<i64> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent.map(|i| i.clamp(0, 64) as usize), 0, &mut out)?;
    Ok(out)
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(v: &minijinja::Value, indent: Option<usize>, depth: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    if depth > 128 {
        return Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, "tojson: nesting too deep"));
    }
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                out.push_str(&i.to_string());
            } else if let Ok(f) = f64::try_from(v.clone()) {
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else if f.is_finite() {
                    out.push_str(&f.to_string());
                } else {
                    out.push_str(if f.is_nan() { "NaN" } else if f > 0.0 { "Infinity" } else { "-Infinity" });
                }
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => write_json_str(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<minijinja::Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<minijinja::Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                match k.as_str() {
                    Some(s) => write_json_str(s, out),
                    None => write_json_str(&k.to_string(), out),
                }
                out.push_str(": ");
                let val = v.get_item(k)?;
                write_json(&val, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => write_json_str(&v.to_string(), out),
    }
    Ok(())
}

/// Minimal `strftime` over the current UTC time (HF's `strftime_now`).
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_time(secs, fmt)
}

fn format_time(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let month = MONTHS[(m - 1) as usize];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match it.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o)
                }
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", (tod / 60) % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o)
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
}
