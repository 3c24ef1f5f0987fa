//! The Drain prefix tree (He et al., "Drain: An Online Log Parsing Approach with Fixed
//! Depth Tree", ICWS 2017), following drain3 0.9.11 `drain.py` step by step: first level
//! keyed by token count, then up to `depth - 2` leading tokens (tokens with digits go to the
//! `<*>` child when `parametrize_numeric_tokens`), `max_children` per node, leaves holding
//! clusters compared by the share of equal non-parameter tokens against `sim_th`.
//! Differences from drain3: with masking on, a `<*>` template position facing a masked
//! `<*>` line token counts half as similar (two variables agree); clusters remember the path they were inserted under (exact
//! save/load), and a cluster may be *locked* to a template proposed by the LLM (then it is
//! never generalised). `max_clusters` is drain3's LRU bound: creating a cluster when
//! `max_clusters` are live evicts the least recently used one (recency moves when a line
//! joins a cluster, not when a cluster is only compared); evicted clusters keep their id
//! and slot but are never matched again, and leave the leaf lists when a cluster is next
//! added there (drain3's `LogClusterCache`).
use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{content_id, FastMap, ParserConfig};

/// Weight of a `<*>` template position facing a masked `<*>` line token in the similarity.
const VAR_WEIGHT: f64 = 0.5;

/// One log cluster (drain3 `LogCluster`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    /// 1-based, in creation order (drain3's `cluster_id`).
    pub cluster_id: u64,
    /// Template tokens (masked line tokens, differing positions replaced by `<*>`).
    pub tokens: Vec<String>,
    /// Number of lines assigned.
    pub size: u64,
    /// Keys of the tree path the cluster was inserted under.
    pub path: Vec<String>,
    /// Template proposed by the LLM and verified; when set the cluster is locked.
    #[serde(default)]
    pub llm_template: Option<String>,
    /// First line seen with the LLM template (few-shot example).
    #[serde(default)]
    pub example: Option<String>,
    /// Evicted by the `max_clusters` LRU bound: kept for its id, never matched again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub evicted: bool,
    /// LRU recency stamp (only with `max_clusters`; larger = more recently used).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_used: u64,
    /// The template came from a labelled example (`Parser::seed`), not from the model:
    /// callers keep it verbatim (no convention rewriting).
    #[serde(default, skip_serializing_if = "is_false")]
    pub labelled: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Cluster {
    /// The template text: the LLM template when locked, else the tree tokens joined by spaces.
    pub fn template(&self) -> String {
        match &self.llm_template {
            Some(t) => t.clone(),
            None => self.tokens.join(" "),
        }
    }
    /// Content-derived id of the current template ("E" + 8 hex digits).
    pub fn template_id(&self) -> String {
        content_id(&self.template())
    }
}

#[derive(Clone, Debug, Default)]
struct Node {
    children: FastMap<String, u32>,
    clusters: Vec<u32>,
}

/// What `add` did to the tree, as drain3's `change_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    TemplateChanged,
    None,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "cluster_created",
            Change::TemplateChanged => "cluster_template_changed",
            Change::None => "none",
        }
    }
}

/// The template tree. Cluster index `i` holds cluster id `i + 1`.
#[derive(Clone, Debug)]
pub struct Tree {
    pub cfg: ParserConfig,
    nodes: Vec<Node>,
    by_len: FastMap<usize, u32>,
    pub clusters: Vec<Cluster>,
    /// LRU order of the live clusters (`last_used` -> index), with `max_clusters` only.
    lru: BTreeMap<u64, u32>,
    tick: u64,
}

impl Tree {
    pub fn new(cfg: ParserConfig) -> Self {
        Tree { cfg, nodes: Vec::new(), by_len: FastMap::default(), clusters: Vec::new(), lru: BTreeMap::new(), tick: 0 }
    }

    /// Number of clusters that are not evicted.
    pub fn live_count(&self) -> usize {
        if self.cfg.max_clusters.is_some() { self.lru.len() } else { self.clusters.len() }
    }

    /// Mark cluster `idx` most recently used (drain3's cache touch); no-op without an LRU bound.
    pub fn touch(&mut self, idx: usize) {
        if self.cfg.max_clusters.is_none() || self.clusters[idx].evicted {
            return;
        }
        let old = self.clusters[idx].last_used;
        if old != 0 {
            self.lru.remove(&old);
        }
        self.tick += 1;
        self.clusters[idx].last_used = self.tick;
        self.lru.insert(self.tick, idx as u32);
    }

    /// Evict least recently used clusters until a new one fits under `max_clusters`.
    fn make_room(&mut self) {
        let Some(m) = self.cfg.max_clusters else { return };
        while self.lru.len() >= m {
            let Some((_, i)) = self.lru.pop_first() else { break };
            let c = &mut self.clusters[i as usize];
            c.evicted = true;
            c.last_used = 0;
        }
    }

    fn max_node_depth(&self) -> usize {
        self.cfg.depth - 2
    }

    /// drain3 `tree_search`: index of the best cluster with similarity >= `sim_th`.
    pub fn search<S: AsRef<str>>(&self, tokens: &[S], sim_th: f64, include_params: bool) -> Option<usize> {
        let n = tokens.len();
        let mut cur = *self.by_len.get(&n)?;
        if n == 0 {
            return self.nodes[cur as usize].clusters.first().map(|&c| c as usize).filter(|&c| !self.clusters[c].evicted);
        }
        let mut depth = 1;
        let p = self.cfg.param_str.as_str();
        for tok in tokens {
            if depth >= self.max_node_depth() || depth == n {
                break;
            }
            let ch = &self.nodes[cur as usize].children;
            cur = match ch.get(tok.as_ref()) {
                Some(&c) => c,
                None => *ch.get(p)?,
            };
            depth += 1;
        }
        self.fast_match(&self.nodes[cur as usize].clusters, tokens, sim_th, include_params)
    }

    fn seq_distance<S: AsRef<str>>(&self, tmpl: &[String], tokens: &[S], include_params: bool) -> (f64, usize) {
        if tmpl.is_empty() {
            return (1.0, 0);
        }
        let p = self.cfg.param_str.as_str();
        let (mut sim, mut params, mut both_var) = (0usize, 0usize, 0usize);
        for (a, b) in tmpl.iter().zip(tokens) {
            if a == p {
                params += 1;
                // both sides are variables (the line token was masked whole): a match
                if self.cfg.masking && !include_params && b.as_ref() == p {
                    both_var += 1;
                }
            } else if a == b.as_ref() {
                sim += 1;
            }
        }
        if include_params {
            sim += params;
        }
        ((sim as f64 + VAR_WEIGHT * both_var as f64) / tmpl.len() as f64, params)
    }

    fn fast_match<S: AsRef<str>>(&self, ids: &[u32], tokens: &[S], sim_th: f64, include_params: bool) -> Option<usize> {
        let (mut best, mut max_sim, mut max_params) = (None, -1.0f64, -1i64);
        for &c in ids {
            if self.clusters[c as usize].evicted {
                continue;
            }
            let (s, pc) = self.seq_distance(&self.clusters[c as usize].tokens, tokens, include_params);
            if s > max_sim || (s == max_sim && pc as i64 > max_params) {
                max_sim = s;
                max_params = pc as i64;
                best = Some(c as usize);
            }
        }
        if max_sim >= sim_th {
            best
        } else {
            None
        }
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(Node::default());
        (self.nodes.len() - 1) as u32
    }

    fn child(&mut self, node: u32, key: &str) -> u32 {
        if let Some(&c) = self.nodes[node as usize].children.get(key) {
            return c;
        }
        let c = self.new_node();
        self.nodes[node as usize].children.insert(key.to_string(), c);
        c
    }

    /// drain3 `add_seq_to_prefix_tree`; records the path taken in the cluster.
    fn insert(&mut self, idx: usize) {
        let n = self.clusters[idx].tokens.len();
        let first = match self.by_len.get(&n) {
            Some(&f) => f,
            None => {
                let f = self.new_node();
                self.by_len.insert(n, f);
                f
            }
        };
        let mut cur = first;
        let mut path = Vec::new();
        if n == 0 {
            self.nodes[cur as usize].clusters = vec![idx as u32];
            return;
        }
        let p = self.cfg.param_str.clone();
        let mut depth = 1;
        let toks = self.clusters[idx].tokens.clone();
        for tok in &toks {
            if depth >= self.max_node_depth() || depth >= n {
                if self.cfg.max_clusters.is_some() {
                    // drain3: stale (evicted) clusters leave the leaf when one is added
                    let clusters = &self.clusters;
                    self.nodes[cur as usize].clusters.retain(|&c| !clusters[c as usize].evicted);
                }
                self.nodes[cur as usize].clusters.push(idx as u32);
                break;
            }
            let nch = self.nodes[cur as usize].children.len();
            let has_p = self.nodes[cur as usize].children.contains_key(&p);
            let key: &str = if self.nodes[cur as usize].children.contains_key(tok.as_str()) {
                tok
            } else if self.cfg.parametrize_numeric_tokens && tok.bytes().any(|b| b.is_ascii_digit()) {
                &p
            } else if has_p {
                if nch < self.cfg.max_children { tok } else { &p }
            } else if nch + 1 < self.cfg.max_children {
                tok
            } else {
                &p
            };
            path.push(key.to_string());
            cur = self.child(cur, key);
            depth += 1;
        }
        self.clusters[idx].path = path;
    }

    /// Re-insert a cluster under a recorded path (state loading).
    /// An evicted cluster only recreates the nodes of its path (drain3 never deletes
    /// nodes, and they route lines), without joining the leaf.
    fn insert_at_path(&mut self, idx: usize) {
        let evicted = self.clusters[idx].evicted;
        let n = self.clusters[idx].tokens.len();
        let mut cur = match self.by_len.get(&n) {
            Some(&f) => f,
            None => {
                let f = self.new_node();
                self.by_len.insert(n, f);
                f
            }
        };
        if n == 0 {
            if !evicted {
                self.nodes[cur as usize].clusters = vec![idx as u32];
            }
            return;
        }
        let path = self.clusters[idx].path.clone();
        for k in &path {
            cur = self.child(cur, k);
        }
        if !evicted {
            self.nodes[cur as usize].clusters.push(idx as u32);
        }
    }

    /// Create a new cluster from tokens; returns its index.
    pub fn create<S: AsRef<str>>(&mut self, tokens: &[S]) -> usize {
        self.make_room();
        let idx = self.clusters.len();
        self.clusters.push(Cluster {
            cluster_id: idx as u64 + 1,
            tokens: tokens.iter().map(|t| t.as_ref().to_string()).collect(),
            size: 1,
            path: Vec::new(),
            llm_template: None,
            example: None,
            evicted: false,
            last_used: 0,
            labelled: false,
        });
        self.touch(idx);
        self.insert(idx);
        idx
    }

    /// Add matched tokens to cluster `idx` (drain3 `create_template`); locked clusters keep
    /// their template.
    pub fn absorb<S: AsRef<str>>(&mut self, idx: usize, tokens: &[S]) -> Change {
        let p = self.cfg.param_str.clone();
        self.touch(idx);
        let c = &mut self.clusters[idx];
        c.size += 1;
        if c.llm_template.is_some() {
            return Change::None;
        }
        let mut changed = false;
        for (t, l) in c.tokens.iter_mut().zip(tokens) {
            if t != l.as_ref() && *t != p {
                *t = p.clone();
                changed = true;
            }
        }
        if changed {
            Change::TemplateChanged
        } else {
            Change::None
        }
    }

    /// Whether absorbing `tokens` would leave the template of cluster `idx` unchanged.
    pub fn would_keep<S: AsRef<str>>(&self, idx: usize, tokens: &[S]) -> bool {
        let c = &self.clusters[idx];
        c.llm_template.is_some()
            || c.tokens.iter().zip(tokens).all(|(t, l)| t == l.as_ref() || *t == self.cfg.param_str)
    }

    /// drain3 `Drain.add_log_message` on tokenised content.
    pub fn add_tokens<S: AsRef<str>>(&mut self, tokens: &[S]) -> (usize, Change) {
        match self.search(tokens, self.cfg.sim_th, false) {
            None => (self.create(tokens), Change::Created),
            Some(i) => {
                let ch = self.absorb(i, tokens);
                (i, ch)
            }
        }
    }

    /// Tokenise + mask a line with this tree's settings.
    pub fn tokenize<'a>(&self, line: &'a str) -> Vec<Cow<'a, str>> {
        super::masking::tokenize(line, &self.cfg.extra_delimiters, self.cfg.masking, &self.cfg.param_str)
    }

    /// drain3 `Drain.match`: perfect match (sim 1.0 counting params) or `None`.
    /// `full_search` is drain3's strategy: "never", "fallback" or "always".
    pub fn match_tokens<S: AsRef<str>>(&self, tokens: &[S], full_search: &str) -> Option<usize> {
        let full = || {
            let ids: Vec<u32> = (0..self.clusters.len())
                .filter(|&i| self.clusters[i].tokens.len() == tokens.len() && !self.clusters[i].evicted)
                .map(|i| i as u32)
                .collect();
            self.fast_match(&ids, tokens, 1.0, true)
        };
        if full_search == "always" {
            return full();
        }
        if let Some(c) = self.search(tokens, 1.0, true) {
            return Some(c);
        }
        if full_search == "never" {
            return None;
        }
        full()
    }

    /// Rebuild a tree from clusters (state loading); clusters must be ordered by id.
    pub fn from_clusters(cfg: ParserConfig, clusters: Vec<Cluster>) -> Self {
        let mut t = Tree::new(cfg);
        t.clusters = clusters;
        for i in 0..t.clusters.len() {
            t.insert_at_path(i);
        }
        if t.cfg.max_clusters.is_some() {
            // LRU order from the saved stamps (ties and missing stamps: by id)
            let mut live: Vec<usize> = (0..t.clusters.len()).filter(|&i| !t.clusters[i].evicted).collect();
            live.sort_by_key(|&i| (t.clusters[i].last_used, i));
            for c in t.clusters.iter_mut() {
                c.last_used = 0;
            }
            for i in live {
                t.touch(i);
            }
            t.make_room_for_existing();
        } else {
            for c in t.clusters.iter_mut() {
                c.last_used = 0;
            }
        }
        t
    }

    /// After loading: evict down to `max_clusters` live clusters.
    fn make_room_for_existing(&mut self) {
        let Some(m) = self.cfg.max_clusters else { return };
        while self.lru.len() > m {
            let Some((_, i)) = self.lru.pop_first() else { break };
            let c = &mut self.clusters[i as usize];
            c.evicted = true;
            c.last_used = 0;
        }
    }

    /// Lines seen so far.
    pub fn total_size(&self) -> u64 {
        self.clusters.iter().filter(|c| !c.evicted).map(|c| c.size).sum()
    }
}

#[cfg(test)]
mod lru_tests {
    use super::*;

    fn tree(max: Option<usize>) -> Tree {
        Tree::new(ParserConfig { masking: false, max_clusters: max, ..Default::default() })
    }

    #[test]
    fn lru_evicts_least_recently_used_like_drain3() {
        let mut t = tree(Some(2));
        let add = |t: &mut Tree, l: &str| {
            let toks: Vec<&str> = l.split_whitespace().collect();
            t.add_tokens(&toks)
        };
        assert_eq!(add(&mut t, "a b c").0, 0);
        assert_eq!(add(&mut t, "x y").0, 1);
        assert_eq!(add(&mut t, "a b d").0, 0); // touches cluster 1: cluster 2 is now the oldest
        assert_eq!(add(&mut t, "p q r s"), (2, Change::Created));
        assert!(t.clusters[1].evicted && !t.clusters[0].evicted);
        assert_eq!(t.live_count(), 2);
        // an evicted cluster is never matched again: a fitting line creates a new one
        assert_eq!(add(&mut t, "x y"), (3, Change::Created));
        assert!(t.clusters[0].evicted);
        assert_eq!(t.total_size(), 2);
        // the leaf holding evicted ids is cleaned when a cluster is added there
        let leaf = t.by_len[&2];
        assert!(t.nodes[leaf as usize].children.values().all(|&n| t.nodes[n as usize]
            .clusters.iter().all(|&c| !t.clusters[c as usize].evicted)));
        // unbounded trees never evict
        let mut u = tree(None);
        for l in ["a", "b c", "d e f", "g h i j"] {
            add(&mut u, l);
        }
        assert_eq!(u.live_count(), 4);
        assert!(u.clusters.iter().all(|c| !c.evicted && c.last_used == 0));
    }

    #[test]
    fn lru_order_survives_reload() {
        let mut t = tree(Some(3));
        for l in ["a 1", "b 2 x", "c 3 y z"] {
            let toks: Vec<&str> = l.split_whitespace().collect();
            t.add_tokens(&toks);
        }
        t.add_tokens(&["a", "1"]); // a is now the newest
        let mut r = Tree::from_clusters(t.cfg.clone(), t.clusters.clone());
        r.add_tokens(&["new", "one", "two", "three", "four"]);
        assert!(r.clusters[1].evicted && !r.clusters[0].evicted && !r.clusters[2].evicted);
        // the evicted cluster's node is kept: "b 9 x" goes there (and finds nothing) instead
        // of falling back to a wildcard child
        let r2 = Tree::from_clusters(r.cfg.clone(), r.clusters.clone());
        assert_eq!(r2.nodes.len(), r.nodes.len());
    }
}
