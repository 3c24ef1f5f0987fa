//! Sentence encoder for log lines: a BERT-family model (candle-transformers'
//! `bert`) with mean pooling over the attention mask and L2 normalisation,
//! i.e. the `Transformer -> Pooling(mean) -> Normalize` pipeline of
//! sentence-transformers (all-MiniLM-L6-v2 and friends).
//!
//! Follows sentence-transformers: per-sentence tokenisation without padding and
//! with truncation at `max_seq_length` (from `sentence_bert_config.json`, 256
//! for MiniLM, capped by `max_position_embeddings`); batches are padded by us
//! with an attention mask, so a sentence's vector does not depend on the batch
//! it is in. Vectors of identical texts are cached (log templates repeat).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::error::{Error, Result};

/// A loaded BERT sentence encoder. Thread-safe (`encode` takes `&self`).
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_length: usize,
    dir: PathBuf,
    cache: Mutex<HashMap<String, Vec<f32>>>,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::from_open(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::ModelFormat(format!("{} is not valid JSON: {e}", path.display())))
}

/// Refuse numbers candle's BERT would divide by, allocate from or turn into
/// NaN: zero or huge sizes, a non-positive or NaN `layer_norm_eps`.
fn check_bert_config(c: &serde_json::Value, path: &Path) -> Result<()> {
    let bad = |m: String| Err(Error::ModelFormat(format!("{}: {m}", path.display())));
    for (key, max) in [
        ("hidden_size", 1u64 << 16),
        ("num_hidden_layers", 1024),
        ("num_attention_heads", 1024),
        ("intermediate_size", 1 << 18),
        ("vocab_size", 1 << 22),
        ("max_position_embeddings", 1 << 20),
        ("type_vocab_size", 1 << 16),
    ] {
        match c.get(key) {
            None => {}
            Some(v) => match v.as_u64() {
                Some(n) if (1..=max).contains(&n) => {}
                _ => return bad(format!("{key} must be an integer from 1 to {max}, got {v}")),
            },
        }
    }
    let get = |k: &str| c.get(k).and_then(|v| v.as_u64());
    if let (Some(h), Some(n)) = (get("hidden_size"), get("num_attention_heads")) {
        if h % n != 0 {
            return bad(format!("hidden_size {h} is not a multiple of num_attention_heads {n}"));
        }
    }
    if let Some(v) = c.get("layer_norm_eps") {
        match v.as_f64() {
            Some(e) if e.is_finite() && e > 0.0 && e < 1.0 => {}
            _ => return bad(format!("layer_norm_eps must be a number in (0, 1), got {v}")),
        }
    }
    Ok(())
}

impl SentenceEncoder {
    /// Load `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    /// `max_length` overrides the truncation length (default: the folder's
    /// `sentence_bert_config.json` `max_seq_length`, else 512), always capped by
    /// the model's `max_position_embeddings`.
    pub fn load(dir: impl AsRef<Path>, max_length: Option<usize>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        let cfg_path = dir.join("config.json");
        let cfg_json = read_json(&cfg_path)?;
        if let Some(mt) = cfg_json.get("model_type").and_then(|v| v.as_str()) {
            if mt != "bert" {
                return Err(Error::Unsupported(format!(
                    "{}: model_type {mt:?} is not supported by the BERT sentence encoder",
                    cfg_path.display()
                )));
            }
        }
        check_bert_config(&cfg_json, &cfg_path)?;
        let config: BertConfig = serde_json::from_value(cfg_json)
            .map_err(|e| Error::ModelFormat(format!("{}: not a BERT config: {e}", cfg_path.display())))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::NotFound(weights));
        }
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; we do not modify it.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| Error::ModelFormat(format!("{}: {e}", weights.display())))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| Error::ModelFormat(format!("{}: cannot load BERT weights: {e}", weights.display())))?;

        let default_len = dir
            .join("sentence_bert_config.json")
            .is_file()
            .then(|| read_json(&dir.join("sentence_bert_config.json")).ok())
            .flatten()
            .and_then(|v| v.get("max_seq_length").and_then(|x| x.as_u64()))
            .map(|x| x as usize)
            .unwrap_or(512);
        let max_length = max_length.unwrap_or(default_len).min(config.max_position_embeddings);
        if max_length < 2 {
            return Err(Error::InvalidArgument(format!("max_length must be >= 2, got {max_length}")));
        }
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::NotFound(tok_path));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        // The shipped tokenizer pads to 128 and truncates at 128: override both.
        tokenizer.with_padding(None::<PaddingParams>);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| Error::Tokenizer(format!("cannot set truncation: {e}")))?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dim: config.hidden_size,
            max_length,
            dir: dir.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Embedding width (384 for MiniLM-L6).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Truncation length in tokens (special tokens included).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of distinct texts whose vectors are cached.
    pub fn cache_len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Token ids of one text after truncation (what the model sees).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encode `texts` into unit-norm vectors (row-major, `texts.len() * dim`).
    /// Distinct uncached texts are run in length-sorted batches of
    /// `batch_size`; identical texts are computed once and cached.
    pub fn encode(&self, texts: &[String], batch_size: usize) -> Result<Vec<f32>> {
        self.encode_with_progress(texts, batch_size, &mut |_| {})
    }

    /// [`Self::encode`] calling `progress(n_done_texts)` after every batch.
    pub fn encode_with_progress(
        &self,
        texts: &[String],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<f32>> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument("batch_size must be >= 1".into()));
        }
        // Distinct texts not in the cache.
        let mut todo: Vec<&str> = Vec::new();
        {
            let cache = self.cache.lock().map_err(|_| Error::Internal("encoder cache poisoned".into()))?;
            let mut seen = std::collections::HashSet::new();
            for t in texts {
                if !cache.contains_key(t.as_str()) && seen.insert(t.as_str()) {
                    todo.push(t.as_str());
                }
            }
        }
        if !todo.is_empty() {
            let encs = self
                .tokenizer
                .encode_batch(todo.clone(), true)
                .map_err(|e| Error::Tokenizer(format!("cannot tokenize: {e}")))?;
            let mut order: Vec<usize> = (0..todo.len()).collect();
            order.sort_by_key(|&i| (encs[i].get_ids().len(), i));
            let mut done = 0usize;
            for chunk in order.chunks(batch_size) {
                let ids: Vec<&[u32]> = chunk.iter().map(|&i| encs[i].get_ids()).collect();
                let vecs = self.forward_batch(&ids)?;
                let mut cache =
                    self.cache.lock().map_err(|_| Error::Internal("encoder cache poisoned".into()))?;
                for (j, &i) in chunk.iter().enumerate() {
                    cache.insert(todo[i].to_string(), vecs[j * self.dim..(j + 1) * self.dim].to_vec());
                }
                done += chunk.len();
                progress(done);
            }
        }
        let cache = self.cache.lock().map_err(|_| Error::Internal("encoder cache poisoned".into()))?;
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for t in texts {
            let v = cache
                .get(t.as_str())
                .ok_or_else(|| Error::Internal("text missing from encoder cache".into()))?;
            out.extend_from_slice(v);
        }
        Ok(out)
    }

    /// Run one padded batch; returns `ids.len() * dim` unit-norm floats.
    fn forward_batch(&self, ids: &[&[u32]]) -> Result<Vec<f32>> {
        let b = ids.len();
        let t = ids.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
        let mut flat = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, row) in ids.iter().enumerate() {
            flat[i * t..i * t + row.len()].copy_from_slice(row);
            for m in &mut mask[i * t..i * t + row.len()] {
                *m = 1.0;
            }
        }
        let input = Tensor::from_vec(flat, (b, t), &self.device)?;
        let types = input.zeros_like()?;
        let mask_t = Tensor::from_vec(mask, (b, t), &self.device)?;
        let hidden = self.model.forward(&input, &types, Some(&mask_t))?; // (b, t, d)
        let m3 = mask_t.unsqueeze(2)?; // (b, t, 1)
        let summed = hidden.broadcast_mul(&m3)?.sum(1)?; // (b, d)
        let counts = mask_t.sum_keepdim(1)?.clamp(1e-9f32, f32::MAX)?; // (b, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        let out = mean.broadcast_div(&norm)?.flatten_all()?.to_vec1::<f32>()?;
        if !crate::model::all_finite(&out) {
            return Err(Error::NonFinite(
                "the sentence encoder produced NaN or infinite embeddings: its weights or configuration are broken".into(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// A tiny random BERT with a word-level vocabulary, written to `dir`.
    pub(crate) fn write_tiny_bert(dir: &Path) {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "block", "received", "from", "error", "served",
            "deleting", "exception", "packet", "responder", "terminating", "blk", "_", "-", "1", "2", "3",
            ".", ":", "/", "10", "##0",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> =
            words.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [
                {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
        });
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tok).unwrap()).unwrap();
        let cfg = serde_json::json!({
            "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "max_position_embeddings": 64,
            "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "vocab_size": words.len(), "model_type": "bert"
        });
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let config: BertConfig = serde_json::from_value(cfg).unwrap();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        BertModel::load(vb, &config).unwrap();
        vm.save(dir.join("model.safetensors")).unwrap();
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn encode_unit_norm_batch_invariant_and_cached() {
        let d = tempfile::tempdir().unwrap();
        write_tiny_bert(d.path());
        let enc = SentenceEncoder::load(d.path(), None).unwrap();
        assert_eq!(enc.dim(), 16);
        assert_eq!(enc.max_length(), 64);
        let texts = strings(&[
            "Received block blk_-1 from /10.1.2.3",
            "exception",
            "PacketResponder 1 terminating error error error served served block",
            "exception",
        ]);
        let all = enc.encode(&texts, 3).unwrap();
        assert_eq!(all.len(), 4 * 16);
        assert_eq!(enc.cache_len(), 3);
        for r in all.chunks(16) {
            let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "norm {n}");
        }
        assert_eq!(&all[16..32], &all[48..64]);
        // One at a time (no padding) gives the same vectors as the padded batch.
        let fresh = SentenceEncoder::load(d.path(), None).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let one = fresh.encode(std::slice::from_ref(t), 1).unwrap();
            for (a, b) in one.iter().zip(&all[i * 16..(i + 1) * 16]) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // Distinct texts give distinct vectors.
        assert!(all[..16].iter().zip(&all[16..32]).any(|(a, b)| (a - b).abs() > 1e-4));
    }

    #[test]
    fn truncation_and_errors() {
        let d = tempfile::tempdir().unwrap();
        write_tiny_bert(d.path());
        let enc = SentenceEncoder::load(d.path(), Some(8)).unwrap();
        let long = "block ".repeat(100);
        assert_eq!(enc.token_ids(&long).unwrap().len(), 8);
        let v = enc.encode(&[long], 4).unwrap();
        assert_eq!(v.len(), 16);
        assert!(enc.encode(&strings(&["x"]), 0).is_err());
        assert!(matches!(SentenceEncoder::load(d.path().join("nope"), None), Err(Error::NotFound(_))));
        std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
        assert!(matches!(SentenceEncoder::load(d.path(), None), Err(Error::NotFound(_))));
    }
}
