//! A loaded model and its tokenizer, ready to generate: the one object the
//! Python `LogLM` class wraps. Picks the loader from the path (a `.gguf` file
//! or a Hugging Face folder), the tokenizer (an explicit `tokenizer.json`, the
//! folder's own, or the one rebuilt from GGUF metadata), merges LoRA adapters
//! (`model/lora.rs`) and picks the backend: the native CPU engine for "cpu",
//! the candle tensor path (`model/device.rs`) for "cuda" / "cuda:N" in builds
//! with the `cuda` feature. [`Engine::start_loop`] starts the model's engine loop
//! (`generate/engine_loop.rs`), through which the Python handle runs all its work.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::generate::engine_loop::{self, EngineLoop};
use crate::generate::{self, BatchStats, Completion, Request, SchedulerConfig, Sink, TextDecoder, Vocab};
use crate::model::backend::Backend;
use crate::model::device::{self, DeviceModel};
use crate::model::hf::DenseAs;
use crate::model::lora::{self, Adapter, MergeAs};
use crate::model::{gguf, hf, Config, Model};
use crate::tokenizer::{DecodeStream, Tokenizer};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// "cpu" (default), "cuda" or "cuda:N". Undocumented: "candle-cpu" runs the
    /// device code path on candle's CPU backend (tests of the CUDA path without a GPU).
    pub device: String,
    pub threads: Option<usize>,
    /// "auto", "f32" or "q8_0": how dense (safetensors) matrices are kept.
    pub dtype: String,
    pub context_length: Option<usize>,
    /// A `tokenizer.json` overriding the model's own tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// peft LoRA adapter folders merged into the weights, in this order.
    pub adapters: Vec<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: "cpu".into(),
            threads: None,
            dtype: "auto".into(),
            context_length: None,
            tokenizer: None,
            adapters: Vec::new(),
        }
    }
}

pub struct Engine {
    pub backend: Backend,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub format: &'static str,
    pub device: String,
    /// Folders of the LoRA adapters merged into the weights (canonical paths).
    pub adapters: Vec<PathBuf>,
}

/// Normalise a device string and check this build can run on it (the GPU
/// itself is opened later, by [`device::open_device`]).
pub fn check_device(device: &str) -> Result<String> {
    let d = device.trim().to_ascii_lowercase();
    if d == "cpu" || d == "candle-cpu" {
        return Ok(d);
    }
    let is_cuda = d == "cuda" || d.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if !is_cuda {
        return Err(Error::InvalidArgument(format!(
            "unknown device {device:?}: use \"cpu\", \"cuda\" or \"cuda:N\""
        )));
    }
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(format!(
            "device {device:?} asked for, but this build of loglm has no CUDA support; \
             rebuild with `maturin develop --release --features cuda` on a machine with the CUDA toolkit"
        )));
    }
    Ok(d)
}

impl Engine {
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Engine> {
        let device = check_device(&opts.device)?;
        // Open the GPU before reading weights: a missing driver fails fast.
        let candle_device = if device == "cpu" { None } else { Some(device::open_device(&device)?) };
        if !path.exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        let dense_as = match opts.dtype.to_ascii_lowercase().as_str() {
            "auto" | "f32" | "float32" | "f16" | "bf16" => DenseAs::F32,
            "q8_0" => DenseAs::Q8_0,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "dtype {other:?} not understood: use \"auto\", \"f32\" or \"q8_0\""
                )))
            }
        };
        let dtype = opts.dtype.to_ascii_lowercase();
        // Adapters are read (and checked on their own) before the base model,
        // so that a bad adapter fails fast.
        let adapters = opts.adapters.iter().map(|p| Adapter::load(p)).collect::<Result<Vec<_>>>()?;
        let (cfg, mut weights, tokenizer, format) = if path.is_dir() {
            // With adapters, read f32 and quantize after the merge (one rounding, not two).
            let load_as = if adapters.is_empty() { dense_as } else { DenseAs::F32 };
            let (cfg, weights) = hf::load(path, load_as)?;
            let tok = match &opts.tokenizer {
                Some(t) => Tokenizer::from_file(t, Some(&path.join("tokenizer_config.json")), None)?,
                None => {
                    if !path.join("tokenizer.json").is_file() {
                        return Err(Error::Tokenizer(format!(
                            "{} has no tokenizer.json; pass tokenizer=\"path/to/tokenizer.json\"",
                            path.display()
                        )));
                    }
                    Tokenizer::from_hf_dir(path)?
                }
            };
            (cfg, weights, tok, "safetensors")
        } else {
            let mut g = gguf::GgufFile::open(path)?;
            gguf::arch_of(&g)?;
            let tok = match &opts.tokenizer {
                Some(t) => Tokenizer::from_file(t, None, None)?,
                None => Tokenizer::from_gguf_metadata(g.metadata())?,
            };
            let (cfg, weights) = gguf::load(&mut g)?;
            (cfg, weights, tok, "gguf")
        };
        if !adapters.is_empty() {
            let merge_as = match (format, dense_as) {
                ("safetensors", _) => MergeAs::F32,
                (_, DenseAs::Q8_0) => MergeAs::Q8_0,
                _ if dtype == "auto" => MergeAs::Auto,
                _ => MergeAs::F32,
            };
            lora::merge(&cfg, &mut weights, &adapters, merge_as)?;
            if format == "safetensors" && dense_as == DenseAs::Q8_0 {
                hf::quantize_dense(&mut weights);
            }
        }
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                cfg.vocab_size
            )));
        }
        // Dequantized prefill copies cost 4 bytes a weight: skip them for big models.
        let dense_bytes = weights.params().saturating_mul(4);
        let allow_dense = match std::env::var("LOGLM_DENSE_PREFILL").ok().as_deref() {
            Some("0") => false,
            Some("1") => true,
            _ => dense_bytes <= 8 << 30,
        };
        weights.set_allow_dense(allow_dense);
        let model = Model::new(cfg, weights, opts.context_length, opts.threads)?;
        let adapters = adapters.into_iter().map(|a| a.path).collect();
        let (backend, device) = match candle_device {
            None => (Backend::Cpu(model), device),
            Some((dev, name)) => (Backend::Device(DeviceModel::from_model(model, dev, name.clone())?), name),
        };
        Ok(Engine { backend, tokenizer, path: path.to_path_buf(), format, device, adapters })
    }

    pub fn config(&self) -> &Config {
        self.backend.config()
    }

    /// Check a request against the model before any work starts.
    pub fn check_request(&self, r: &Request) -> Result<()> {
        match &self.backend {
            Backend::Cpu(m) => generate::check_request(m, r),
            Backend::Device(m) => generate::check_request(m, r),
        }
    }

    /// Logits of every position of `tokens` (`[len, vocab]`, row-major).
    pub fn logits(&self, tokens: &[u32], prefill_chunk: usize, sink: &dyn Sink) -> Result<Vec<f32>> {
        match &self.backend {
            Backend::Cpu(m) => generate::logits(m, tokens, prefill_chunk, sink),
            Backend::Device(m) => generate::logits(m, tokens, prefill_chunk, sink),
        }
    }

    /// Log-probabilities of each token of each choice, continuing `prompt`.
    pub fn score_choices(
        &self,
        prompt: &[u32],
        choices: &[Vec<u32>],
        sched: &SchedulerConfig,
        sink: &dyn Sink,
    ) -> Result<Vec<Vec<f64>>> {
        match &self.backend {
            Backend::Cpu(m) => generate::score_choices(m, prompt, choices, sched, sink),
            Backend::Device(m) => generate::score_choices(m, prompt, choices, sched, sink),
        }
    }

    /// [`generate::score_choices_split`]: many prompts, each with a shared-prefix length.
    pub fn score_choices_split(
        &self,
        prompts: &[Vec<u32>],
        splits: &[usize],
        choices: &[Vec<u32>],
        sched: &SchedulerConfig,
        sink: &dyn Sink,
    ) -> Result<Vec<Vec<Vec<f64>>>> {
        match &self.backend {
            Backend::Cpu(m) => generate::score_choices_split(m, prompts, splits, choices, sched, sink),
            Backend::Device(m) => generate::score_choices_split(m, prompts, splits, choices, sched, sink),
        }
    }

    /// Start this model's engine loop ([`engine_loop`]): the thread that runs
    /// every generation and scoring request submitted to the returned handle.
    pub fn start_loop(self: &Arc<Self>) -> Result<EngineLoop> {
        let e = self.clone();
        EngineLoop::spawn("loglm-engine", move |rx, st| match &e.backend {
            Backend::Cpu(m) => engine_loop::run(m, &e.tokenizer, rx, &st),
            Backend::Device(m) => engine_loop::run(m, &e.tokenizer, rx, &st),
        })
    }

    pub fn generate(
        &self,
        requests: Vec<Request>,
        sched: &SchedulerConfig,
        sink: &mut dyn Sink,
    ) -> Result<(Vec<Completion>, BatchStats)> {
        match &self.backend {
            Backend::Cpu(m) => generate::generate(m, &self.tokenizer, requests, sched, sink),
            Backend::Device(m) => generate::generate(m, &self.tokenizer, requests, sched, sink),
        }
    }
}

struct StreamDecoder(DecodeStream);

impl TextDecoder for StreamDecoder {
    fn push(&mut self, id: u32) -> Result<String> {
        Ok(self.0.push(id)?.unwrap_or_default())
    }
    fn finish(&mut self) -> Result<String> {
        Ok(self.0.finish().unwrap_or_default())
    }
}

impl Vocab for Tokenizer {
    fn is_eos(&self, id: u32) -> bool {
        Tokenizer::is_eos(self, id)
    }
    fn decoder(&self) -> Box<dyn TextDecoder> {
        Box::new(StreamDecoder(self.decode_stream(true)))
    }
    fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        if self.is_special(id) {
            None
        } else {
            self.token_piece(id).ok()
        }
    }
}
