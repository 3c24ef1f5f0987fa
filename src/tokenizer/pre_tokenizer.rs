//! Pre-tokenization of GGUF byte-level BPE vocabularies: the regexes llama.cpp
//! picks for each `tokenizer.ggml.pre` value (`llm_tokenizer_bpe` in llama.cpp
//! `src/llama-vocab.cpp`), as a `tokenizers` split sequence ending in ByteLevel.
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::tok_err;
use crate::error::Result;


/// GPT-2 regex; llama.cpp's custom splitter behaves as if `|\s+` closed it.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regex list and `ignore_merges` llama.cpp uses for a `tokenizer.ggml.pre` value.
pub(super) fn pre_regexes(pre: &str) -> (Vec<&'static str>, bool) {
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

pub(super) fn build_pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut seq: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(SplitPattern::Regex((*re).to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| tok_err(format!("bad pre-tokenizer regex {re:?}: {e}")))?;
        seq.push(split.into());
    }
    seq.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(seq).into())
}
