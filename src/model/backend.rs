//! What the generation scheduler needs from a model, and the two models that
//! provide it: the native CPU engine ([`Model`], `forward.rs`) and the candle
//! tensor path ([`DeviceModel`], `device.rs`) used for CUDA.
//!
//! The interface is the one of `Model::forward`: a batch of [`Chunk`]s, each
//! some new tokens plus that sequence's own KV cache, in; the logits each chunk
//! asked for, out. The cache type is an associated type, so the scheduler is
//! generic and monomorphised per backend (no dynamic dispatch in the decode
//! loop); the engine holds either backend in the [`Backend`] enum.
use super::device::{DeviceCache, DeviceModel};
use super::forward::{Chunk, ChunkLogits};
use super::linear::Path;
use super::{Config, KvCache, Model};
use crate::error::Result;

/// A per-sequence key/value cache, whatever memory it lives in.
pub trait SeqCache: Send {
    /// Positions already filled.
    fn len(&self) -> usize;
    /// Positions it can hold.
    fn capacity(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoder-only language model the scheduler can run.
pub trait LanguageModel: Sync {
    type Cache: SeqCache;
    fn config(&self) -> &Config;
    /// Longest sequence (prompt + generated tokens) it accepts.
    fn context_length(&self) -> usize;
    /// An empty cache for `capacity` positions.
    fn new_cache(&self, capacity: usize) -> Result<Self::Cache>;
    /// A copy of the filled part of `cache` in a cache of `capacity` positions.
    fn fork_cache(&self, cache: &Self::Cache, capacity: usize) -> Result<Self::Cache>;
    /// One forward step over the chunks; appends to their caches.
    fn forward_chunks(&self, chunks: &mut [Chunk<'_, Self::Cache>]) -> Result<Vec<ChunkLogits>>;
    /// As `forward_chunks`, with the CPU engine's kernels chosen by `path`
    /// ([`Model::forward_path`]: dense for choice scoring, per-row for batched
    /// decode); the same thing where there is one kind of kernel.
    fn forward_chunks_on(&self, chunks: &mut [Chunk<'_, Self::Cache>], path: Path) -> Result<Vec<ChunkLogits>> {
        let _ = path;
        self.forward_chunks(chunks)
    }
}

impl SeqCache for KvCache {
    fn len(&self) -> usize {
        self.len
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl LanguageModel for Model {
    type Cache = KvCache;
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn context_length(&self) -> usize {
        self.context_length
    }
    fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        Ok(KvCache::new(&self.cfg, capacity))
    }
    fn fork_cache(&self, cache: &KvCache, capacity: usize) -> Result<KvCache> {
        Ok(cache.fork(&self.cfg, capacity))
    }
    fn forward_chunks(&self, chunks: &mut [Chunk<'_, KvCache>]) -> Result<Vec<ChunkLogits>> {
        self.forward(chunks)
    }
    fn forward_chunks_on(&self, chunks: &mut [Chunk<'_, KvCache>], path: Path) -> Result<Vec<ChunkLogits>> {
        self.forward_path(chunks, path)
    }
}

impl SeqCache for DeviceCache {
    fn len(&self) -> usize {
        self.len
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl LanguageModel for DeviceModel {
    type Cache = DeviceCache;
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn context_length(&self) -> usize {
        self.context_length
    }
    fn new_cache(&self, capacity: usize) -> Result<DeviceCache> {
        DeviceCache::new(self, capacity)
    }
    fn fork_cache(&self, cache: &DeviceCache, capacity: usize) -> Result<DeviceCache> {
        cache.fork(self, capacity)
    }
    fn forward_chunks(&self, chunks: &mut [Chunk<'_, DeviceCache>]) -> Result<Vec<ChunkLogits>> {
        self.forward(chunks)
    }
}

/// The model an engine runs: native CPU kernels, or candle tensors on a device.
pub enum Backend {
    Cpu(Model),
    Device(DeviceModel),
}

impl Backend {
    pub fn config(&self) -> &Config {
        match self {
            Backend::Cpu(m) => &m.cfg,
            Backend::Device(m) => &m.cfg,
        }
    }
    pub fn context_length(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.context_length,
            Backend::Device(m) => m.context_length,
        }
    }
    /// CPU threads of the native engine (for the device path: those of candle's CPU ops).
    pub fn threads(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.threads,
            Backend::Device(m) => m.threads,
        }
    }
    /// Element type of the per-sequence KV caches.
    pub fn kv_cache_dtype(&self) -> &'static str {
        match self {
            Backend::Cpu(m) if m.cfg.kv_f16 => "f16",
            _ => "f32",
        }
    }
    /// Bytes of the weight matrices as stored.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.weights.bytes(),
            Backend::Device(m) => m.weight_bytes,
        }
    }
    /// Storage types of the layer matrices ("q4_1", "q8_0", "f32"), sorted.
    pub fn weight_types(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = match self {
            Backend::Cpu(m) => m
                .weights
                .layers
                .iter()
                .flat_map(|l| [l.wq.kind(), l.w_gate.kind(), l.w_down.kind()])
                .collect(),
            Backend::Device(m) => m.weight_types.clone(),
        };
        kinds.sort();
        kinds.dedup();
        kinds
    }
    /// "cpu" for the native engine, else the candle device ("cuda:0", "candle-cpu").
    pub fn device_name(&self) -> String {
        match self {
            Backend::Cpu(_) => "cpu".into(),
            Backend::Device(m) => m.device_name.clone(),
        }
    }
}
