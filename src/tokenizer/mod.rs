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
//!
//! One concept per file (as huggingface/tokenizers splits `added_vocabulary.rs`,
//! `pre_tokenizers/`, `decoders/`):
//! * `gguf_vocab.rs`: the BPE rebuilt from `tokenizer.ggml.*` metadata (the typed
//!   metadata reads are `crate::model::gguf_meta`, shared with the model loader);
//! * `hf_json.rs`: `tokenizer.json` / `tokenizer_config.json` / `generation_config.json`;
//! * `pre_tokenizer.rs`: llama.cpp's pre-tokenizer regexes;
//! * `special_tokens.rs`: the end-of-generation set, control / user-defined
//!   tokens and the partition of text on them;
//! * `decoding.rs`: byte-level pieces, `decode` and the streaming [`DecodeStream`];
//! * `chat_template.rs`: the minijinja environment, rendering, `encode_chat`;
//! * `template_limits.rs`: the limits a template from a model file runs under
//!   (fuel, recursion, string / list / output budgets).
use std::sync::Arc;

use crate::error::{Error, Result};

mod chat_template;
mod decoding;
mod gguf_vocab;
mod hf_json;
mod pre_tokenizer;
mod special_tokens;
mod template_limits;

pub use chat_template::CHATML_TEMPLATE;
pub use decoding::DecodeStream;
pub use template_limits::ChatTemplateLimits;
use chat_template::ChatTemplate;

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

impl Tokenizer {
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
}

#[cfg(test)]
mod tests;
