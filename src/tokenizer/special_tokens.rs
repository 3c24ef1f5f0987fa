//! Special tokens: the end-of-generation set (llama.cpp's "eog": eos, eot, the
//! text-detected end-of-turn tokens, FIM pad/repo/sep), the promotion of
//! control-looking texts to control, and the partition of text on control /
//! user-defined tokens before BPE (llama.cpp `tokenizer_st_partition`).
use std::collections::HashMap;
use std::sync::Arc;

use super::{tok_err, ChatTemplate, Inner, Kind, Tokenizer};
use crate::error::Result;


/// What the constructors gather before [`Tokenizer::assemble`].
pub(super) struct Parts {
    pub(super) tk: tokenizers::Tokenizer,
    pub(super) texts: Vec<String>,
    pub(super) kinds: Vec<Kind>,
    pub(super) pieces: Vec<Vec<u8>>,
    pub(super) bos: Option<u32>,
    pub(super) eos: Option<u32>,
    pub(super) extra_eog: Vec<u32>,
    pub(super) add_bos: bool,
    pub(super) chat_template: Option<String>,
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
    pub(super) fn assemble(p: Parts) -> Result<Self> {
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

    /// Partition (llama.cpp `tokenizer_st_partition`) then BPE each raw fragment.
    /// Control tokens are not matched where they overlap a `protected` byte range.
    pub(super) fn encode_into(&self, text: &str, parse_special: bool, protected: &[(usize, usize)], out: &mut Vec<u32>) -> Result<()> {
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
}
