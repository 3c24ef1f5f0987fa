//! The parser: the Drain tree (He et al. ICWS 2017, drain3 0.9.11 semantics) plus the cache
//! of LLM-verified templates and the counters. Without a model it is drain3's
//! `TemplateMiner.add_log_message`; with one, the caller (Python) asks [`Parser::lookup`]
//! first, sends misses to the model, and hands the answers to [`Parser::accept`], which
//! verifies each template against its line before it enters the cache (LILAC-style loop).
use super::cache::TemplateIndex;
use super::matching::{is_degenerate, match_spans, normalize_ws, verifies};
use super::tree::{Change, Tree};
use super::{content_id, ParserConfig};
use serde::{Deserialize, Serialize};

/// Work counters (lines, cache hits, LLM traffic, repairs).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub lines: u64,
    /// Lines resolved by an LLM-verified template already in the cache.
    pub cache_hits: u64,
    /// Lines whose model template was accepted.
    pub llm_accepted: u64,
    /// Lines whose model template did not match them (tree template used, line flagged).
    pub llm_rejected: u64,
    /// Tree would have put the line in a locked cluster whose template does not match it.
    pub over_merge_repairs: u64,
    /// Model template equal to a cached one the tree did not find (clusters joined).
    pub under_merge_repairs: u64,
    /// Lines decoded lossily from invalid UTF-8.
    pub non_utf8_lines: u64,
}

/// Outcome of [`Parser::accept`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// New locked cluster created.
    Created(usize),
    /// Joined an existing locked cluster with the same template.
    Joined(usize),
    /// Template does not match the line (or has no literal letter); nothing changed.
    Rejected,
}

#[derive(Clone, Debug)]
pub struct Parser {
    pub tree: Tree,
    pub index: TemplateIndex,
    pub counters: Counters,
}

impl Parser {
    pub fn new(cfg: ParserConfig) -> crate::Result<Self> {
        cfg.validate()?;
        Ok(Parser { tree: Tree::new(cfg), index: TemplateIndex::default(), counters: Counters::default() })
    }

    pub fn cfg(&self) -> &ParserConfig {
        &self.tree.cfg
    }

    fn param(&self) -> &str {
        &self.tree.cfg.param_str
    }

    /// Streaming add (no model): drain3 semantics; clusters locked to an LLM template take
    /// the line only when their template matches it.
    pub fn add(&mut self, line: &str) -> (usize, Change) {
        self.counters.lines += 1;
        let toks = self.tree.tokenize(line);
        let toks: Vec<&str> = toks.iter().map(|c| c.as_ref()).collect();
        if self.index.is_empty() {
            return self.tree.add_tokens(&toks);
        }
        if let Some(i) = self.lookup_tokens(line, &toks) {
            self.counters.cache_hits += 1;
            return (i, self.tree.absorb(i, &toks));
        }
        self.fallback_tokens(&toks)
    }

    fn fallback_tokens(&mut self, toks: &[&str]) -> (usize, Change) {
        match self.tree.search(toks, self.tree.cfg.sim_th, false) {
            Some(i) if self.tree.clusters[i].llm_template.is_none() => (i, self.tree.absorb(i, toks)),
            _ => (self.tree.create(toks), Change::Created),
        }
    }

    /// Tree fallback for a line the model could not parse (counts the line).
    pub fn fallback(&mut self, line: &str) -> (usize, Change) {
        self.counters.lines += 1;
        let toks = self.tree.tokenize(line);
        let toks: Vec<&str> = toks.iter().map(|c| c.as_ref()).collect();
        self.fallback_tokens(&toks)
    }

    /// Cluster of a cached (LLM-verified) template matching the line, without changing anything.
    pub fn lookup(&self, line: &str) -> Option<usize> {
        let toks = self.tree.tokenize(line);
        let toks: Vec<&str> = toks.iter().map(|c| c.as_ref()).collect();
        self.lookup_tokens(line, &toks)
    }

    fn lookup_tokens(&self, line: &str, toks: &[&str]) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let norm = normalize_ws(line);
        if let Some(i) = self.tree.search(toks, self.tree.cfg.sim_th, false) {
            if let Some(t) = &self.tree.clusters[i].llm_template {
                if match_spans(t, &norm, self.param(), true).is_some() {
                    return Some(i);
                }
            }
        }
        self.index.lookup(&norm, self.param())
    }

    /// Lookup and, on a hit, count the line into its cluster.
    pub fn hit(&mut self, line: &str) -> Option<usize> {
        let i = self.lookup(line)?;
        self.counters.lines += 1;
        self.counters.cache_hits += 1;
        let toks = self.tree.tokenize(line);
        let toks: Vec<&str> = toks.iter().map(|c| c.as_ref()).collect();
        self.tree.absorb(i, &toks);
        Some(i)
    }

    /// The whitespace-normalised template and line when the template may be cached for the
    /// line: it matches it, and it holds a literal letter (a template without one is never
    /// cached, even for a line where it is technically right: once cached, `<*>` or
    /// `<*>=<*>` matches every later line of that shape, whatever its event).
    fn verified(&self, line: &str, template: &str) -> Option<(String, String)> {
        let p = &self.tree.cfg.param_str;
        let tmpl = normalize_ws(template);
        let norm = normalize_ws(line);
        (!is_degenerate(&tmpl, p) && verifies(&tmpl, &norm, p)).then_some((tmpl, norm))
    }

    /// Verify a model template for `line`; on success count the line into the cluster of
    /// that template (created if new, locked, registered in the cache).
    pub fn accept(&mut self, line: &str, template: &str) -> Accept {
        let Some((tmpl, norm)) = self.verified(line, template) else {
            self.counters.llm_rejected += 1;
            return Accept::Rejected;
        };
        let toks = self.tree.tokenize(line);
        let toks: Vec<&str> = toks.iter().map(|c| c.as_ref()).collect();
        let tree_pick = self.tree.search(&toks, self.tree.cfg.sim_th, false);
        let tid = content_id(&tmpl);
        self.counters.lines += 1;
        self.counters.llm_accepted += 1;
        if let Some(&i) = self.index.by_tid.get(&tid) {
            if tree_pick != Some(i) {
                self.counters.under_merge_repairs += 1;
            }
            self.tree.absorb(i, &toks);
            return Accept::Joined(i);
        }
        if let Some(j) = tree_pick {
            if self.tree.clusters[j].llm_template.is_some() {
                self.counters.over_merge_repairs += 1;
            }
        }
        Accept::Created(self.create_locked(&toks, tmpl, norm, tid))
    }

    /// A new cluster locked to the verified template `tmpl` (its tokens when they align with
    /// the line's), with `norm` as its few-shot example, registered in the cache.
    fn create_locked(&mut self, toks: &[&str], tmpl: String, norm: String, tid: String) -> usize {
        let ttoks: Vec<&str> = tmpl.split(' ').collect();
        let i = if ttoks.len() == toks.len() { self.tree.create(&ttoks) } else { self.tree.create(toks) };
        self.index.insert(tid, &tmpl, i, &self.tree.cfg.param_str);
        let c = &mut self.tree.clusters[i];
        c.llm_template = Some(tmpl);
        c.example = Some(norm);
        i
    }

    /// Register a labelled (line, template) example as a trusted cached template: verified
    /// like a model template (it must match its line and hold a literal letter), but no line
    /// is counted (the cluster starts empty) and the cluster is marked `labelled`. A template
    /// already cached joins (and marks) its cluster.
    pub fn seed(&mut self, line: &str, template: &str) -> Accept {
        let Some((tmpl, norm)) = self.verified(line, template) else {
            return Accept::Rejected;
        };
        let tid = content_id(&tmpl);
        if let Some(&i) = self.index.by_tid.get(&tid) {
            self.tree.clusters[i].labelled = true;
            return Accept::Joined(i);
        }
        let toks = self.tree.tokenize(line);
        let toks: Vec<&str> = toks.iter().map(|c| c.as_ref()).collect();
        let i = self.create_locked(&toks, tmpl, norm, tid);
        let c = &mut self.tree.clusters[i];
        c.size = 0;
        c.labelled = true;
        Accept::Created(i)
    }

    /// Up to `k` (example line, template) pairs of cached templates most similar to `line`
    /// (share of common tokens), for few-shot prompting. Labelled templates are not shown:
    /// the model imitates its own accepted answers better than labels written in another
    /// hand (issue 16, chosen on the loghub training lines).
    pub fn similar_examples(&self, line: &str, k: usize) -> Vec<(String, String)> {
        if k == 0 || self.index.is_empty() {
            return Vec::new();
        }
        let toks = self.tree.tokenize(line);
        let set: std::collections::HashSet<&str> = toks.iter().map(|c| c.as_ref()).collect();
        let mut scored: Vec<(f64, usize)> = Vec::new();
        for (i, c) in self.tree.clusters.iter().enumerate() {
            if c.llm_template.is_none() || c.labelled {
                continue;
            }
            let common = c.tokens.iter().filter(|t| set.contains(t.as_str())).count();
            let denom = c.tokens.len().max(set.len()).max(1);
            scored.push((common as f64 / denom as f64, i));
        }
        scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(k)
            .map(|(_, i)| {
                let c = &self.tree.clusters[i];
                (c.example.clone().unwrap_or_default(), c.template())
            })
            .collect()
    }

    /// Rebuild the template cache from locked clusters (after loading or merging).
    pub fn rebuild_index(&mut self) {
        let p = self.tree.cfg.param_str.clone();
        let mut idx = TemplateIndex::default();
        for (i, c) in self.tree.clusters.iter().enumerate() {
            if let Some(t) = &c.llm_template {
                idx.insert(content_id(t), t, i, &p);
            }
        }
        self.index = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn p() -> Parser {
        Parser::new(ParserConfig::default()).unwrap()
    }
    #[test]
    fn drain_behaviour() {
        let mut m = p();
        let (a, c) = m.add("connected to host 10.0.0.1 now");
        assert_eq!(c, Change::Created);
        let (b, c) = m.add("connected to host 10.0.0.2 now");
        assert_eq!((a, c), (b, Change::None));
        let (b, c) = m.add("connected from host 10.0.0.2 now");
        assert_eq!((b, c), (a, Change::TemplateChanged));
        assert_eq!(m.tree.clusters[a].template(), "connected <*> host <*> now");
        assert_eq!(m.tree.clusters[a].size, 3);
        let (d, _) = m.add("something else entirely here");
        assert_ne!(a, d);
    }
    #[test]
    fn seeded_templates_are_trusted_and_count_no_line() {
        let mut m = p();
        let i = match m.seed("Received connection request /10.10.34.11:45307", "Received connection request /<*>:<*>") {
            Accept::Created(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!((m.counters.lines, m.counters.llm_accepted, m.tree.clusters[i].size), (0, 0, 0));
        assert!(m.tree.clusters[i].labelled);
        // a template that does not match its line, or has no literal letter, is not seeded
        assert_eq!(m.seed("Received connection request", "Sent <*>"), Accept::Rejected);
        assert_eq!(m.seed("anything", "<*>"), Accept::Rejected);
        assert_eq!(m.counters.llm_rejected, 0);
        // later lines hit it, in streaming and in batch mode
        let (j, c) = m.add("Received connection request /10.10.34.13:37177");
        assert_eq!((j, c), (i, Change::None));
        assert_eq!(m.add_batch(&["Received connection request /10.10.34.12:3888"]), vec![i as u32]);
        assert_eq!(m.tree.clusters[i].size, 2);
        assert_eq!(m.tree.clusters[i].template(), "Received connection request /<*>:<*>");
        // seeding a template the model already gave marks that cluster
        let k = match m.accept("took 5 ms", "took <*> ms") {
            Accept::Created(k) => k,
            other => panic!("{other:?}"),
        };
        assert!(!m.tree.clusters[k].labelled);
        assert_eq!(m.seed("took 7 ms", "took <*> ms"), Accept::Joined(k));
        assert!(m.tree.clusters[k].labelled);
        // labelled templates are no few-shot examples
        assert!(m.similar_examples("Received connection request /10.0.0.1:1", 3).is_empty());
        assert!(m.seed("closed 1 ms", "closed <*> ms") != Accept::Rejected);
        assert!(matches!(m.accept("opened 5 ms", "opened <*> ms"), Accept::Created(_)));
        let shots = m.similar_examples("opened 9 ms", 3);
        assert_eq!(shots, vec![("opened 5 ms".to_string(), "opened <*> ms".to_string())]);
    }
    #[test]
    fn empty_wildcards_glued_to_words_are_rejected() {
        let mut m = p();
        // a wildcard that matches nothing in its own line, next to a word
        assert_eq!(m.accept("199680 double-hummer alignment exceptions", "199680 double-hummer alignment exceptions<*>"), Accept::Rejected);
        assert_eq!(m.accept("took ms", "took <*>ms"), Accept::Rejected);
        assert_eq!(m.counters.llm_rejected, 2);
        // empty values between delimiters are fine (loghub: `connection from <*> (<*>) at ...`)
        assert!(matches!(m.accept("connection from 1.2.3.4 () at noon", "connection from <*> (<*>) at <*>"), Accept::Created(_)));
        assert!(matches!(m.accept("user= uid=0 gone", "user=<*> uid=<*> gone"), Accept::Created(_)));
        assert_eq!(m.counters.llm_accepted, 2);
    }
    #[test]
    fn llm_cache() {
        let mut m = p();
        assert_eq!(m.lookup("Failed password for invalid user bob from 1.2.3.4"), None);
        assert_eq!(m.accept("Failed password for invalid user bob from 1.2.3.4", "Failed password for <*> from <*>"), Accept::Created(0));
        assert_eq!(m.accept("x y", "z <*>"), Accept::Rejected);
        assert_eq!(m.accept("x y", "<*> <*>"), Accept::Rejected);
        // different token count: found through the index, not the tree
        assert_eq!(m.hit("Failed password for root from 5.6.7.8"), Some(0));
        assert_eq!(m.tree.clusters[0].size, 2);
        assert_eq!(m.accept("Failed password for root from 9.9.9.9", "Failed password for <*> from <*>"), Accept::Joined(0));
        assert_eq!(m.counters.llm_rejected, 2);
        let ex = m.similar_examples("Failed password for x from y", 3);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].1, "Failed password for <*> from <*>");
        // fallback never joins a locked cluster
        let (i, c) = m.fallback("Failed password for root from");
        assert_eq!(c, Change::Created);
        assert_ne!(i, 0);
    }
}
