//! A Hugging Face tokenizer folder: `tokenizer.json` through the `tokenizers`
//! crate (its added tokens taken out and matched by `special_tokens.rs`), plus
//! `tokenizer_config.json` (chat template, bos/eos, `add_bos_token`) and
//! `generation_config.json` (extra eos ids), as `transformers`'
//! `PreTrainedTokenizerFast` reads them.
use std::path::Path;

use super::decoding::{byte_level_decode, char_to_byte_map, parse_byte_token};
use super::special_tokens::Parts;
use super::{tok_err, Kind, Tokenizer};
use crate::error::{Error, Result};

impl Tokenizer {
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
            let bytes = crate::model::hf::read_bounded(p, crate::model::hf::MAX_JSON_BYTES).map_err(|e| match e {
                Error::ModelFormat(m) => tok_err(m),
                other => other,
            })?;
            serde_json::from_slice(&bytes).map_err(|e| tok_err(format!("{}: invalid JSON: {e}", p.display())))
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
        // Padding and truncation settings in the file are for batched training
        // inputs: applied to a prompt they would silently pad or cut it.
        obj.insert("padding".into(), J::Null);
        obj.insert("truncation".into(), J::Null);
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
