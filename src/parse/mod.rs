//! Streaming template-tree log parser (issue 5): a Drain tree (He et al. ICWS 2017,
//! following drain3 0.9.11) with masking of obvious variables, content-derived template
//! ids, a parallel deterministic batch mode, versioned JSON state and shard merging, and
//! the cache side of the LLM-in-the-loop parser (LILAC-style template cache: lines that
//! match a verified template are hits; the rest are sent to the model by the caller).
//!
//! Submodules: [`masking`] (tokens and variable masks), [`tree`] (the Drain tree),
//! [`matching`] (template vs line, parameters), [`state`] (JSON state, merge),
//! [`batch`] (rayon batch mode, file reading, loghub log formats), [`cache`] (index of
//! LLM templates), [`miner`] (the parser: tree + cache + counters).
pub mod batch;
pub mod cache;
pub mod masking;
pub mod matching;
pub mod miner;
pub mod state;
pub mod tree;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

pub use miner::{Counters, Parser};
pub use tree::{Change, Cluster, Tree};

/// FNV-1a, 64 bit: stable across runs and machines (std's hasher is randomised).
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        if self.0 == 0 { FNV_OFFSET } else { self.0 }
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// FNV-1a 64 of the bytes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Template id derived from the template text alone: `"E"` + 8 hex digits of the folded
/// FNV-1a 64 hash of the whitespace-normalised template. Equal templates built on separate
/// machines get the same id.
pub fn content_id(template: &str) -> String {
    let h = fnv1a64(matching::normalize_ws(template).as_bytes());
    format!("E{:08x}", (h ^ (h >> 32)) as u32)
}

/// Parser settings (drain3's `TemplateMinerConfig` subset plus masking).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ParserConfig {
    pub sim_th: f64,
    pub depth: usize,
    pub max_children: usize,
    pub param_str: String,
    pub parametrize_numeric_tokens: bool,
    pub extra_delimiters: Vec<String>,
    /// Mask obvious variables (numbers, hex, IPs, ids, paths with digits) before the tree.
    pub masking: bool,
    /// drain3's `drain_max_clusters`: at most this many live clusters, the least recently
    /// used one evicted when a new one is created (`None`: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clusters: Option<usize>,
}

impl Default for ParserConfig {
    fn default() -> Self {
        ParserConfig {
            sim_th: 0.4,
            depth: 4,
            max_children: 100,
            param_str: "<*>".into(),
            parametrize_numeric_tokens: true,
            extra_delimiters: Vec::new(),
            masking: true,
            max_clusters: None,
        }
    }
}

impl ParserConfig {
    pub fn validate(&self) -> crate::Result<()> {
        if self.depth < 3 {
            crate::bail!(InvalidArgument, "depth must be at least 3, got {}", self.depth);
        }
        if !(0.0..=1.0).contains(&self.sim_th) {
            crate::bail!(InvalidArgument, "sim_th must be in [0, 1], got {}", self.sim_th);
        }
        if self.max_children < 2 {
            crate::bail!(InvalidArgument, "max_children must be at least 2, got {}", self.max_children);
        }
        if self.max_clusters == Some(0) {
            crate::bail!(InvalidArgument, "max_clusters must be at least 1 (or None for unbounded)");
        }
        if self.param_str.is_empty() || self.param_str.chars().any(char::is_whitespace) {
            crate::bail!(InvalidArgument, "param_str must be non-empty without spaces, got {:?}", self.param_str);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn content_id_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(content_id("a  <*>"), content_id("a <*>"));
        assert_ne!(content_id("a <*>"), content_id("b <*>"));
        assert_eq!(content_id("x").len(), 9);
    }
    #[test]
    fn config_validation() {
        assert!(ParserConfig::default().validate().is_ok());
        let c = ParserConfig { depth: 2, ..Default::default() };
        assert!(c.validate().is_err());
    }
}
