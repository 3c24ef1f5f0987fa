//! Versioned JSON state of a parser (no pickle, unlike drain3's jsonpickle snapshots) and
//! merging of parsers built on separate shards. Each cluster is stored with the tree path
//! it was inserted under, so a loaded tree routes lines exactly like the saved one.
use serde::{Deserialize, Serialize};

use super::miner::{Counters, Parser};
use super::tree::{Change, Cluster, Tree};
use super::{content_id, ParserConfig};

pub const STATE_FORMAT: &str = "loglm.template_miner";
pub const STATE_VERSION: u32 = 1;
/// Most lines a state may count (2^53: exact as a float, far from wrapping).
pub const MAX_LINES: u64 = 1 << 53;

#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    version: u32,
    config: ParserConfig,
    clusters: Vec<Cluster>,
    #[serde(default)]
    counters: Counters,
}

impl Parser {
    /// Serialise to JSON (schema `loglm.template_miner`, version 1).
    pub fn to_json(&self) -> crate::Result<String> {
        let st = State {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            config: self.tree.cfg.clone(),
            clusters: self.tree.clusters.clone(),
            counters: self.counters.clone(),
        };
        Ok(serde_json::to_string(&st)?)
    }

    /// Load from JSON written by [`Parser::to_json`].
    pub fn from_json(s: &str) -> crate::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(s)?;
        let fmt = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if fmt != STATE_FORMAT {
            crate::bail!(InvalidArgument, "not a loglm template miner state (format {:?})", fmt);
        }
        let ver = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0);
        if ver != STATE_VERSION as u64 {
            crate::bail!(InvalidArgument, "unsupported template miner state version {ver} (this loglm reads {STATE_VERSION})");
        }
        let st: State = serde_json::from_value(v)?;
        st.config.validate()?;
        for (i, c) in st.clusters.iter().enumerate() {
            if c.cluster_id != i as u64 + 1 {
                crate::bail!(InvalidArgument, "corrupt state: cluster {} has id {}", i + 1, c.cluster_id);
            }
            // a cluster evicted by the max_clusters bound may be a placeholder of size 0
            // (a drain3 snapshot keeps only the tree branch of what its LRU cache dropped);
            // so may a labelled template no line has matched yet
            if (c.size == 0 && !c.evicted && !(c.labelled && c.llm_template.is_some())) || c.size > MAX_LINES {
                crate::bail!(
                    InvalidArgument,
                    "corrupt state: cluster {} has size {} (allowed: 1 to {MAX_LINES}; 0 only when evicted or labelled)",
                    i + 1,
                    c.size
                );
            }
        }
        // Sizes and counters are added to as lines arrive: their totals must stay far from
        // overflow (a size near 2^64 would silently wrap to 0 on the next line).
        let total = st.clusters.iter().try_fold(0u64, |a, c| a.checked_add(c.size).filter(|&t| t <= MAX_LINES));
        if total.is_none() {
            crate::bail!(InvalidArgument, "corrupt state: the cluster sizes add up to more than {MAX_LINES} lines");
        }
        let k = &st.counters;
        for (name, v) in [
            ("lines", k.lines),
            ("cache_hits", k.cache_hits),
            ("llm_accepted", k.llm_accepted),
            ("llm_rejected", k.llm_rejected),
            ("over_merge_repairs", k.over_merge_repairs),
            ("under_merge_repairs", k.under_merge_repairs),
            ("non_utf8_lines", k.non_utf8_lines),
        ] {
            if v > MAX_LINES {
                crate::bail!(InvalidArgument, "corrupt state: counter {name} is {v} (allowed: 0 to {MAX_LINES})");
            }
        }
        let mut p = Parser { tree: Tree::from_clusters(st.config, st.clusters), index: Default::default(), counters: st.counters };
        p.rebuild_index();
        Ok(p)
    }

    /// Merge another parser (e.g. built on another shard) into this one. Locked clusters are
    /// joined by template id; tree clusters are matched like lines (drain3 similarity) and
    /// generalised. Returns, per cluster of `other` (in id order), the index it went to here.
    pub fn merge(&mut self, other: &Parser) -> crate::Result<Vec<usize>> {
        let (a, b) = (&self.tree.cfg, &other.tree.cfg);
        if a.param_str != b.param_str || a.masking != b.masking || a.extra_delimiters != b.extra_delimiters {
            crate::bail!(InvalidArgument, "cannot merge parsers with different param_str, masking or extra_delimiters");
        }
        let p = self.tree.cfg.param_str.clone();
        let mut map = Vec::with_capacity(other.tree.clusters.len());
        for c in &other.tree.clusters {
            let idx = if let Some(t) = &c.llm_template {
                let tid = content_id(t);
                if let Some(&i) = self.index.by_tid.get(&tid) {
                    let nc = &mut self.tree.clusters[i];
                    nc.size = nc.size.saturating_add(c.size);
                    nc.labelled |= c.labelled;
                    i
                } else {
                    let i = self.tree.create(&c.tokens);
                    let nc = &mut self.tree.clusters[i];
                    nc.size = c.size;
                    nc.llm_template = Some(t.clone());
                    nc.example = c.example.clone();
                    nc.labelled = c.labelled;
                    self.index.insert(tid, t, i, &p);
                    i
                }
            } else {
                match self.tree.search(&c.tokens, self.tree.cfg.sim_th, false) {
                    Some(i) if self.tree.clusters[i].llm_template.is_none() => {
                        let _: Change = self.tree.absorb(i, &c.tokens);
                        let n = &mut self.tree.clusters[i].size;
                        *n = n.saturating_add(c.size.saturating_sub(1));
                        i
                    }
                    _ => {
                        let i = self.tree.create(&c.tokens);
                        self.tree.clusters[i].size = c.size;
                        i
                    }
                }
            };
            map.push(idx);
        }
        let oc = &other.counters;
        let sc = &mut self.counters;
        sc.lines += oc.lines;
        sc.cache_hits += oc.cache_hits;
        sc.llm_accepted += oc.llm_accepted;
        sc.llm_rejected += oc.llm_rejected;
        sc.over_merge_repairs += oc.over_merge_repairs;
        sc.under_merge_repairs += oc.under_merge_repairs;
        sc.non_utf8_lines += oc.non_utf8_lines;
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_routes_identically() {
        let mut a = Parser::new(ParserConfig { max_children: 3, ..Default::default() }).unwrap();
        let lines: Vec<String> = (0..200).map(|i| format!("w{} op{} value {} end", i % 7, i % 5, i)).collect();
        for l in &lines[..100] {
            a.add(l);
        }
        a.accept("the LLM saw this 12", "the LLM saw this <*>");
        let mut b = Parser::from_json(&a.to_json().unwrap()).unwrap();
        assert_eq!(a.tree.clusters, b.tree.clusters);
        for l in &lines[100..] {
            assert_eq!(a.add(l), b.add(l));
        }
        assert_eq!(a.tree.clusters, b.tree.clusters);
        assert_eq!(b.lookup("the LLM saw this 99"), a.lookup("the LLM saw this 99"));
        assert!(Parser::from_json("{\"format\":\"x\"}").is_err());
        assert!(Parser::from_json("{\"format\":\"loglm.template_miner\",\"version\":99}").is_err());
    }
    #[test]
    fn overflowing_cluster_size_is_refused() {
        let mut p = Parser::new(ParserConfig::default()).unwrap();
        p.add("connection from 10.0.0.1 closed");
        let json = p.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for size in [serde_json::json!(u64::MAX), serde_json::json!(0)] {
            let mut bad = v.clone();
            bad["clusters"][0]["size"] = size;
            let err = Parser::from_json(&bad.to_string()).err().expect("refused");
            assert!(err.to_string().contains("size"), "{err}");
        }
        let mut bad = v.clone();
        bad["counters"]["lines"] = serde_json::json!(u64::MAX);
        assert!(Parser::from_json(&bad.to_string()).is_err());
        assert!(Parser::from_json(&json).is_ok());
    }

    #[test]
    fn merge_shards() {
        let mut a = Parser::new(ParserConfig::default()).unwrap();
        let mut b = Parser::new(ParserConfig::default()).unwrap();
        a.add("open file a.txt ok");
        b.add("open file b.txt ok");
        b.add("close socket now");
        let map = a.merge(&b).unwrap();
        assert_eq!(map, vec![0, 1]);
        assert_eq!(a.tree.clusters[0].template(), "open file <*> ok");
        assert_eq!(a.tree.clusters[0].size, 2);
        assert_eq!(a.tree.total_size(), 3);
    }
}
