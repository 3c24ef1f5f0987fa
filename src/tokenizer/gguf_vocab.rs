//! The tokenizer of a GGUF file, rebuilt in memory from its `tokenizer.ggml.*`
//! metadata as a `tokenizers` byte-level BPE: vocabulary from `tokens`, ranks
//! from `merges`, token types and ids as llama.cpp reads them
//! (`llama_vocab::impl::load` in llama.cpp `src/llama-vocab.cpp`).
use candle_core::quantized::gguf_file::Value as GgufValue;
use tokenizers::models::bpe::BPE;

use super::decoding::{byte_level_decode, char_to_byte_map, parse_byte_token};
use super::pre_tokenizer::{build_pre_tokenizer, pre_regexes};
use super::special_tokens::Parts;
use super::{tok_err, Kind, Tokenizer};
use crate::error::Result;
use crate::model::gguf_meta::{self, md_bool, md_id, md_str, value_to_i64, Metadata};

/// Most tokens a GGUF vocabulary may hold (the largest real ones have ~260k).
const MAX_VOCAB: usize = crate::model::limits::MAX_VOCAB;

/// `tokenizer.ggml.<key>` as a list of strings, with the tokenizer's messages.
fn md_str_array<'a>(md: &'a Metadata, key: &str) -> Result<Vec<&'a str>> {
    if !md.contains_key(key) {
        return Err(tok_err(format!("GGUF metadata has no {key}; cannot build the tokenizer")));
    }
    gguf_meta::md_str_array(md, key).map_err(tok_err)
}

impl Tokenizer {
    /// Build from the metadata of a GGUF file (`Content::read(..)?.metadata`).
    pub fn from_gguf_metadata(md: &Metadata) -> Result<Self> {
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
        if tokens.len() > MAX_VOCAB {
            return Err(tok_err(format!("GGUF vocabulary too large: {} tokens (at most {MAX_VOCAB})", tokens.len())));
        }
        let merges_raw = md_str_array(md, "tokenizer.ggml.merges")?;
        let n = tokens.len();
        let types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(a)) if a.len() == n => a.iter().map(|v| value_to_i64(v).unwrap_or(1)).collect(),
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
}
