//! LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
//! Models", 2021; rsLoRA scaling from Kalajdzievski, "A Rank Stabilization
//! Scaling Factor for Fine-Tuning with LoRA", 2023) in the folder layout of
//! Hugging Face `peft`'s `save_pretrained`: `adapter_config.json` +
//! `adapter_model.safetensors`, tensors named like
//! `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`.
//!
//! Adapters are merged into the base weights at load time, as peft's
//! `merge_and_unload` does (`LoraLayer.get_delta_weight`):
//! `W' = W + s * B @ A` with `s = lora_alpha / r`, or `lora_alpha / sqrt(r)`
//! with `use_rslora`, per-module `rank_pattern` / `alpha_pattern` honoured.
//! Several adapters are merged in the order given. Only the touched matrices
//! change: a quantized one (GGUF Q4_1 / Q8_0) is dequantized, the low-rank
//! product added in f32, and the result kept dense f32 or re-encoded as Q8_0
//! (see [`MergeAs`]).
//!
//! Layout: loglm keeps every matrix as `[out, in]` (torch `nn.Linear`). peft's
//! `lora_A` is `[r, in]` and `lora_B` `[out, r]` whatever `fan_in_fan_out`
//! says (that flag only tells peft that the *base* layer stores its weight
//! transposed, GPT-2 `Conv1D` style, so it transposes the delta to match), so
//! the delta on our matrices is `B @ A` either way. llama GGUF files store the
//! q/k rows permuted for interleaved rope (`convert_hf_to_gguf.py`'s
//! `permute`); for such a base the rows of the q/k deltas get the same
//! permutation, so an adapter trained on the Hugging Face model merges the
//! same into either file.
//!
//! Not supported (a clear error instead): DoRA, `modules_to_save`, trained
//! biases (`bias != "none"`, `lora_bias`), targets other than the seven
//! projections of the llama / qwen2 blocks (embeddings, `lm_head`), and
//! non-LoRA peft methods.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::linear::{gemm_strided, Linear, Weight};
use super::quant::{self, QK};
use super::{Config, Layer, RopeStyle, Weights};
use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The seven linear layers of a llama / qwen2 block a LoRA may target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Module {
    pub const ALL: [Module; 7] = [Module::Q, Module::K, Module::V, Module::O, Module::Gate, Module::Up, Module::Down];

    /// peft / transformers module name (`target_modules` entry).
    pub fn hf_name(self) -> &'static str {
        match self {
            Module::Q => "q_proj",
            Module::K => "k_proj",
            Module::V => "v_proj",
            Module::O => "o_proj",
            Module::Gate => "gate_proj",
            Module::Up => "up_proj",
            Module::Down => "down_proj",
        }
    }

    /// Sub-module path inside a transformers decoder layer.
    pub fn hf_path(self) -> &'static str {
        match self {
            Module::Q => "self_attn.q_proj",
            Module::K => "self_attn.k_proj",
            Module::V => "self_attn.v_proj",
            Module::O => "self_attn.o_proj",
            Module::Gate => "mlp.gate_proj",
            Module::Up => "mlp.up_proj",
            Module::Down => "mlp.down_proj",
        }
    }

    /// llama.cpp tensor name (without `blk.N.` and `.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Module::Q => "attn_q",
            Module::K => "attn_k",
            Module::V => "attn_v",
            Module::O => "attn_output",
            Module::Gate => "ffn_gate",
            Module::Up => "ffn_up",
            Module::Down => "ffn_down",
        }
    }

    pub fn from_hf(name: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.hf_name() == name)
    }

    pub fn from_gguf(name: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.gguf_name() == name)
    }

    /// Base weight of layer `i` in a Hugging Face checkpoint.
    pub fn hf_tensor(self, i: usize) -> String {
        format!("model.layers.{i}.{}.weight", self.hf_path())
    }

    /// Base weight of layer `i` in a GGUF file.
    pub fn gguf_tensor(self, i: usize) -> String {
        format!("blk.{i}.{}.weight", self.gguf_name())
    }

    /// `[out, in]` of this matrix for a configuration.
    pub fn shape(self, cfg: &Config) -> (usize, usize) {
        match self {
            Module::Q => (cfg.q_dim(), cfg.n_embd),
            Module::K | Module::V => (cfg.kv_dim(), cfg.n_embd),
            Module::O => (cfg.n_embd, cfg.q_dim()),
            Module::Gate | Module::Up => (cfg.n_ff, cfg.n_embd),
            Module::Down => (cfg.n_embd, cfg.n_ff),
        }
    }

    pub fn linear(self, l: &Layer) -> &Linear {
        match self {
            Module::Q => &l.wq,
            Module::K => &l.wk,
            Module::V => &l.wv,
            Module::O => &l.wo,
            Module::Gate => &l.w_gate,
            Module::Up => &l.w_up,
            Module::Down => &l.w_down,
        }
    }

    pub fn linear_mut(self, l: &mut Layer) -> &mut Linear {
        match self {
            Module::Q => &mut l.wq,
            Module::K => &mut l.wk,
            Module::V => &mut l.wv,
            Module::O => &mut l.wo,
            Module::Gate => &mut l.w_gate,
            Module::Up => &mut l.w_up,
            Module::Down => &mut l.w_down,
        }
    }
}

/// Which factor of a LoRA pair a tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `lora_A`, `[r, in]`.
    A,
    /// `lora_B`, `[out, r]`.
    B,
}

/// `(layer, module, part)` of a peft LoRA tensor name, or `None` when the name
/// is not a LoRA factor of one of the seven block projections. Accepted forms:
/// `[base_model.model.]model.layers.N.<self_attn|mlp>.<x>_proj.lora_<A|B>[.<adapter>].weight`.
pub fn parse_tensor_name(name: &str) -> Option<(usize, Module, Part)> {
    let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
    let rest = rest.strip_prefix("model.layers.")?;
    let (idx, rest) = rest.split_once('.')?;
    if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = idx.parse().ok()?;
    let (group, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let module = Module::from_hf(module)?;
    if module.hf_path() != format!("{group}.{}", module.hf_name()) {
        return None;
    }
    let (part, rest) = rest.split_once('.')?;
    let part = match part {
        "lora_A" => Part::A,
        "lora_B" => Part::B,
        _ => return None,
    };
    // `weight`, or `<adapter name>.weight` in raw (unsaved) peft state dicts.
    match rest.split('.').collect::<Vec<_>>().as_slice() {
        ["weight"] => {}
        [adapter, "weight"] if !adapter.is_empty() => {}
        _ => return None,
    }
    Some((layer, module, part))
}

/// The GGUF base tensor a peft LoRA tensor name applies to
/// (`...layers.3.self_attn.q_proj.lora_A.weight` -> `blk.3.attn_q.weight`).
pub fn gguf_target(name: &str) -> Option<String> {
    parse_tensor_name(name).map(|(i, m, _)| m.gguf_tensor(i))
}

/// The Hugging Face base tensor a peft LoRA tensor name applies to.
pub fn hf_target(name: &str) -> Option<String> {
    parse_tensor_name(name).map(|(i, m, _)| m.hf_tensor(i))
}

/// The parts of `adapter_config.json` that matter for merging.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub fan_in_fan_out: bool,
    /// Modules named in `target_modules` (`None`: a regular expression or `"all-linear"`).
    pub target_modules: Option<Vec<Module>>,
    /// `rank_pattern` / `alpha_pattern`: (key, value), matched as peft does.
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
    pub base_model_name_or_path: Option<String>,
}

/// Largest `lora_alpha` accepted: adapters use single or double digits; 1e300
/// would turn every merged weight into infinity.
const MAX_ALPHA: f64 = 1e6;

fn adapter_err(dir: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Adapter(format!("LoRA adapter {}: {msg}", dir.display()))
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
    }
}

impl AdapterConfig {
    /// Parse and check a peft `adapter_config.json` (`dir` is for messages).
    pub fn from_json(c: &Value, dir: &Path) -> Result<Self> {
        let err = |m: String| adapter_err(dir, m);
        let obj = c.as_object().ok_or_else(|| err(format!("{CONFIG_FILE} is not a JSON object")))?;
        if let Some(t) = obj.get("peft_type") {
            let t = t.as_str().unwrap_or("");
            if !t.eq_ignore_ascii_case("lora") {
                return Err(err(format!(
                    "peft_type is {t:?}; loglm merges LoRA adapters only (peft_type \"LORA\")"
                )));
            }
        }
        if truthy(obj.get("use_dora")) {
            return Err(err("DoRA adapters (use_dora=true) are not supported; train a plain LoRA".into()));
        }
        if truthy(obj.get("modules_to_save")) {
            return Err(err(format!(
                "modules_to_save={} is not supported: loglm merges only the low-rank matrices, \
                 fully trained modules would be lost; train without modules_to_save",
                obj["modules_to_save"]
            )));
        }
        match obj.get("bias") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" => {}
            Some(other) => {
                return Err(err(format!(
                    "bias={other} is not supported (only bias=\"none\"): trained biases are not merged"
                )))
            }
        }
        for (key, what) in [
            ("lora_bias", "a bias on lora_B (lora_bias=true)"),
            ("layer_replication", "layer_replication"),
            ("trainable_token_indices", "trainable_token_indices"),
            ("target_parameters", "target_parameters"),
            ("use_qalora", "QA-LoRA (use_qalora=true)"),
            ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens), which cannot be merged,"),
            ("arrow_config", "Arrow routing (arrow_config)"),
            ("use_bdlora", "block-diagonal LoRA (use_bdlora)"),
            ("monteclora_config", "MonteCLoRA (monteclora_config)"),
            ("kasa_config", "KaSA (kasa_config)"),
        ] {
            if truthy(obj.get(key)) {
                return Err(err(format!("{what} is not supported")));
            }
        }
        let r = match obj.get("r") {
            None => 8,
            Some(v) => v.as_u64().filter(|&r| r > 0).ok_or_else(|| err(format!("r must be a positive integer, got {v}")))?
                as usize,
        };
        let lora_alpha = match obj.get("lora_alpha") {
            None => 8.0,
            Some(v) => v.as_f64().ok_or_else(|| err(format!("lora_alpha must be a number, got {v}")))?,
        };
        if !(lora_alpha.is_finite() && lora_alpha.abs() <= MAX_ALPHA) {
            return Err(err(format!("lora_alpha {lora_alpha} is out of range (a finite number of magnitude <= {MAX_ALPHA})")));
        }
        let target_modules = match obj.get("target_modules") {
            None | Some(Value::Null) => None,
            Some(Value::String(_)) => None,
            Some(Value::Array(a)) => {
                let mut mods = Vec::new();
                for v in a {
                    let s = v.as_str().ok_or_else(|| err(format!("target_modules entry {v} is not a string")))?;
                    // peft matches a target name against the end of the module path.
                    let last = s.rsplit('.').next().unwrap_or(s);
                    match Module::from_hf(last) {
                        Some(m) => mods.push(m),
                        None => {
                            return Err(err(format!(
                                "target module {s:?} is not supported: loglm merges LoRA into {} only",
                                Module::ALL.map(|m| m.hf_name()).join(", ")
                            )))
                        }
                    }
                }
                Some(mods)
            }
            Some(other) => return Err(err(format!("target_modules must be a list of names, got {other}"))),
        };
        let pattern = |key: &str| -> Result<Vec<(String, Value)>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(o)) => Ok(o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                Some(other) => Err(err(format!("{key} must be an object, got {other}"))),
            }
        };
        let rank_pattern = pattern("rank_pattern")?
            .into_iter()
            .map(|(k, v)| match v.as_u64().filter(|&x| x > 0) {
                Some(x) => Ok((k, x as usize)),
                None => Err(err(format!("rank_pattern[{k:?}] must be a positive integer, got {v}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let alpha_pattern = pattern("alpha_pattern")?
            .into_iter()
            .map(|(k, v)| match v.as_f64() {
                Some(x) => Ok((k, x)),
                None => Err(err(format!("alpha_pattern[{k:?}] must be a number, got {v}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        for k in rank_pattern.iter().map(|(k, _)| k).chain(alpha_pattern.iter().map(|(k, _)| k)) {
            pattern_regex(k).map_err(|e| err(format!("pattern {k:?} is not a usable regular expression: {e}")))?;
        }
        Ok(AdapterConfig {
            r,
            lora_alpha,
            use_rslora: obj.get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            fan_in_fan_out: obj.get("fan_in_fan_out").and_then(Value::as_bool).unwrap_or(false),
            target_modules,
            rank_pattern,
            alpha_pattern,
            base_model_name_or_path: obj.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// (r, alpha) of one module (`model.layers.N.self_attn.q_proj`), after
    /// `rank_pattern` / `alpha_pattern` (peft `get_pattern_key`: the first key
    /// `k` for which `(^|.*\.)k$` matches the module name).
    pub fn rank_alpha(&self, module_key: &str) -> (usize, f64) {
        fn first<T: Copy>(pattern: &[(String, T)], key: &str) -> Option<T> {
            pattern
                .iter()
                .find(|(k, _)| pattern_regex(k).map(|re| re.is_match(key)).unwrap_or(false))
                .map(|(_, v)| *v)
        }
        (
            first(&self.rank_pattern, module_key).unwrap_or(self.r),
            first(&self.alpha_pattern, module_key).unwrap_or(self.lora_alpha),
        )
    }

    /// The merge scale of a module of rank `r` with `alpha`.
    pub fn scale(&self, r: usize, alpha: f64) -> f32 {
        if self.use_rslora {
            (alpha / (r as f64).sqrt()) as f32
        } else {
            (alpha / r as f64) as f32
        }
    }
}

fn pattern_regex(key: &str) -> std::result::Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!(r"^(?:(?:.*\.)?)(?:{key})$"))
}

/// One LoRA pair, ready to merge: `delta = scale * B @ A`.
#[derive(Clone, Debug)]
pub struct LoraPair {
    pub layer: usize,
    pub module: Module,
    pub rank: usize,
    pub scale: f32,
    /// `[rank, in]`, row-major.
    pub a: Vec<f32>,
    pub a_shape: (usize, usize),
    /// `[out, rank]`, row-major.
    pub b: Vec<f32>,
    pub b_shape: (usize, usize),
}

/// A loaded adapter: its folder, configuration and pairs (sorted by layer, module).
#[derive(Clone, Debug)]
pub struct Adapter {
    pub path: PathBuf,
    pub config: AdapterConfig,
    pub pairs: Vec<LoraPair>,
}

fn tensor_2d(t: &Tensor, name: &str, dir: &Path) -> Result<((usize, usize), Vec<f32>)> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => {}
        other => {
            return Err(adapter_err(dir, format!("tensor {name} has dtype {other:?}; only f32, f16 and bf16 are supported")))
        }
    }
    let dims = t.dims();
    if dims.len() != 2 {
        return Err(adapter_err(dir, format!("tensor {name} has shape {dims:?}, expected a matrix")));
    }
    let shape = (dims[0], dims[1]);
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if !crate::model::all_finite(&v) {
        return Err(adapter_err(dir, format!("tensor {name} holds NaN or infinite values")));
    }
    Ok((shape, v))
}

impl Adapter {
    /// Read a peft adapter folder (or its `adapter_config.json` /
    /// `adapter_model.safetensors` path) and check it on its own: names,
    /// ranks, configuration. Shapes against a model are checked by [`merge`].
    pub fn load(path: &Path) -> Result<Adapter> {
        let dir: PathBuf = if path.is_file()
            && matches!(path.file_name().and_then(|n| n.to_str()), Some(CONFIG_FILE) | Some(WEIGHTS_FILE))
        {
            path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
        } else {
            path.to_path_buf()
        };
        if !dir.exists() {
            return Err(Error::AdapterNotFound(format!("LoRA adapter folder not found: {}", dir.display())));
        }
        if !dir.is_dir() {
            return Err(adapter_err(
                &dir,
                format!("not a folder; pass the folder peft's save_pretrained wrote ({CONFIG_FILE} + {WEIGHTS_FILE})"),
            ));
        }
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(Error::AdapterNotFound(format!(
                "LoRA adapter {}: {CONFIG_FILE} not found (is this a peft adapter folder?)",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::from_open(&cfg_path, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| adapter_err(&dir, format!("{CONFIG_FILE} is not valid JSON: {e}")))?;
        let config = AdapterConfig::from_json(&json, &dir)?;
        let st_path = dir.join(WEIGHTS_FILE);
        if !st_path.is_file() {
            if dir.join("adapter_model.bin").is_file() {
                return Err(adapter_err(
                    &dir,
                    format!("only {WEIGHTS_FILE} is read, not the pickled adapter_model.bin; \
                             save the adapter with save_pretrained(..., safe_serialization=True)"),
                ));
            }
            return Err(Error::AdapterNotFound(format!("LoRA adapter {}: {WEIGHTS_FILE} not found", dir.display())));
        }
        let bytes = std::fs::read(&st_path).map_err(|e| Error::from_open(&st_path, e))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            adapter_err(&dir, format!("{WEIGHTS_FILE} is not a valid safetensors file (truncated or corrupt?): {e}"))
        })?;
        Self::from_tensors(&dir, config, &tensors)
    }

    /// Build the pairs from named tensors (`dir` is for messages).
    pub fn from_tensors(dir: &Path, config: AdapterConfig, tensors: &HashMap<String, Tensor>) -> Result<Adapter> {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        /// (tensor name, shape, values) of lora_A and lora_B.
        type Half = Option<(String, (usize, usize), Vec<f32>)>;
        let mut halves: BTreeMap<(usize, Module), [Half; 2]> = BTreeMap::new();
        for name in names {
            if name.contains("lora_magnitude_vector") {
                return Err(adapter_err(dir, format!("tensor {name} belongs to a DoRA adapter, which is not supported")));
            }
            let Some((layer, module, part)) = parse_tensor_name(name) else {
                let hint = if name.contains("lora_embedding") || name.contains("embed_tokens") || name.contains("lm_head") {
                    " (embedding / lm_head adapters and modules_to_save are not supported)"
                } else if name.ends_with(".bias") {
                    " (LoRA biases are not supported)"
                } else {
                    ""
                };
                return Err(adapter_err(
                    dir,
                    format!(
                        "unknown tensor {name:?}{hint}: expected LoRA factors of {} named like \
                         base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight",
                        Module::ALL.map(|m| m.hf_name()).join(", ")
                    ),
                ));
            };
            if let Some(mods) = &config.target_modules {
                if !mods.contains(&module) {
                    return Err(adapter_err(
                        dir,
                        format!("tensor {name} is for {} which is not in target_modules", module.hf_name()),
                    ));
                }
            }
            let (shape, v) = tensor_2d(&tensors[name], name, dir)?;
            let slot = &mut halves.entry((layer, module)).or_default()[part as usize];
            if slot.is_some() {
                return Err(adapter_err(dir, format!("two tensors for {name} (several adapter names in one file?)")));
            }
            *slot = Some((name.clone(), shape, v));
        }
        if halves.is_empty() {
            return Err(adapter_err(dir, format!("{WEIGHTS_FILE} holds no LoRA tensors")));
        }
        let mut pairs = Vec::with_capacity(halves.len());
        for ((layer, module), [a, b]) in halves {
            let key = format!("model.layers.{layer}.{}", module.hf_path());
            let (Some((an, a_shape, a)), Some((bn, b_shape, b))) = (a, b) else {
                return Err(adapter_err(dir, format!("{key} has only one of lora_A / lora_B")));
            };
            if a_shape.0 != b_shape.1 {
                return Err(adapter_err(
                    dir,
                    format!("{an} has shape {a_shape:?} and {bn} {b_shape:?}: their ranks differ"),
                ));
            }
            let rank = a_shape.0;
            let (r, alpha) = config.rank_alpha(&key);
            if rank != r {
                return Err(adapter_err(dir, format!("{an} has rank {rank} but {CONFIG_FILE} says r={r}")));
            }
            let scale = config.scale(r, alpha);
            if !scale.is_finite() || alpha.abs() > MAX_ALPHA {
                return Err(adapter_err(dir, format!("{key}: lora_alpha {alpha} gives the merge scale {scale}, out of range")));
            }
            pairs.push(LoraPair { layer, module, rank, scale, a, a_shape, b, b_shape });
        }
        Ok(Adapter { path: dir.to_path_buf(), config, pairs })
    }

    fn mismatch_hint(&self) -> String {
        match &self.config.base_model_name_or_path {
            Some(b) if !b.is_empty() => format!(" (the adapter was trained for {b:?}; is it the same base model?)"),
            _ => " (was it trained for this base model?)".to_string(),
        }
    }

    /// Check every pair against a model configuration.
    pub fn check(&self, cfg: &Config) -> Result<()> {
        for p in &self.pairs {
            if p.layer >= cfg.n_layer {
                return Err(adapter_err(
                    &self.path,
                    format!(
                        "has weights for layer {} but the model has {} layers{}",
                        p.layer,
                        cfg.n_layer,
                        self.mismatch_hint()
                    ),
                ));
            }
            let (out, inp) = p.module.shape(cfg);
            if p.a_shape.1 != inp || p.b_shape.0 != out {
                return Err(adapter_err(
                    &self.path,
                    format!(
                        "shape mismatch for {} ({}): lora_A is {:?} and lora_B {:?}, but the base matrix is \
                         [{out}, {inp}] (lora_A must be [r, {inp}], lora_B [{out}, r]){}",
                        p.module.hf_tensor(p.layer),
                        p.module.gguf_tensor(p.layer),
                        p.a_shape,
                        p.b_shape,
                        self.mismatch_hint()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// How merged matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeAs {
    /// Like the base: dense stays dense f32, a quantized matrix is re-encoded
    /// as Q8_0 (its error is far below that of the Q4 source).
    Auto,
    /// Dense f32 (exact; 4 bytes a weight).
    F32,
    /// Q8_0 whenever the row length allows it.
    Q8_0,
}

/// Swap the rows of a q/k matrix from Hugging Face (`rotate_half`) order to
/// llama.cpp's interleaved order: `convert_hf_to_gguf.py`'s `permute`
/// (`reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)`).
pub fn permute_rows_for_interleaved_rope(m: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; m.len()];
    for h in 0..n_head {
        for i in 0..half {
            for t in 0..2 {
                let dst = h * hd + 2 * i + t;
                let src = h * hd + t * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&m[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// What a merge did.
#[derive(Clone, Debug, Default)]
pub struct MergeStats {
    /// Matrices changed.
    pub matrices: usize,
    /// LoRA pairs added (a matrix touched by two adapters counts twice).
    pub pairs: usize,
}

/// Merge `adapters`, in order, into `weights`. Everything is checked before
/// any matrix changes, so an error leaves the weights as they were.
pub fn merge(cfg: &Config, weights: &mut Weights, adapters: &[Adapter], merge_as: MergeAs) -> Result<MergeStats> {
    for a in adapters {
        a.check(cfg)?;
    }
    if weights.layers.len() != cfg.n_layer {
        return Err(Error::Internal("weights and configuration disagree on the layer count".into()));
    }
    let mut by_matrix: BTreeMap<(usize, Module), Vec<&LoraPair>> = BTreeMap::new();
    for a in adapters {
        for p in &a.pairs {
            by_matrix.entry((p.layer, p.module)).or_default().push(p);
        }
    }
    let mut stats = MergeStats::default();
    for ((layer, module), pairs) in by_matrix {
        let lin = module.linear_mut(&mut weights.layers[layer]);
        let (out, inp) = (lin.out_dim, lin.in_dim);
        let was_dense = matches!(lin.weight, Weight::F32(_));
        let mut w = match std::mem::replace(&mut lin.weight, Weight::F32(Vec::new())) {
            Weight::F32(v) => v,
            q => {
                let tmp = Linear::new(out, inp, q);
                let mut v = vec![0f32; out * inp];
                for (r, row) in v.chunks_mut(inp).enumerate() {
                    tmp.row_f32(r, row);
                }
                v
            }
        };
        for p in pairs {
            let mut b: Vec<f32> = p.b.iter().map(|x| x * p.scale).collect();
            if cfg.rope_style == RopeStyle::Interleaved && matches!(module, Module::Q | Module::K) {
                let heads = if module == Module::Q { cfg.n_head } else { cfg.n_head_kv };
                b = permute_rows_for_interleaved_rope(&b, out, p.rank, heads);
            }
            let mut delta = vec![0f32; out * inp];
            // delta[out, in] = b[out, r] @ a[r, in]
            gemm_strided(out, inp, p.rank, &mut delta, inp, &b, p.rank, 1, &p.a, inp, 1);
            quant::axpy(1.0, &delta, &mut w);
            stats.pairs += 1;
        }
        let q8 = match merge_as {
            MergeAs::F32 => false,
            MergeAs::Q8_0 => true,
            MergeAs::Auto => !was_dense,
        } && inp % QK == 0;
        let weight = if q8 {
            let mut blocks = Vec::new();
            quant::quantize_q8_0(&w, &mut blocks);
            Weight::Q8_0(blocks)
        } else {
            Weight::F32(w)
        };
        let allow_dense = lin.allow_dense;
        *lin = Linear::new(out, inp, weight);
        lin.allow_dense = allow_dense;
        stats.matrices += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
