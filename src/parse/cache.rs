//! Index of verified LLM templates (the template cache of LILAC, Jiang et al. FSE 2024,
//! simplified): templates are bucketed by their first literal token so a line is checked
//! only against templates that can match it; among matches the most specific (most literal
//! characters) wins.
use super::matching::{match_spans, normalize_ws};
use super::FastMap;

#[derive(Clone, Debug, Default)]
pub struct TemplateIndex {
    /// template id -> cluster index
    pub by_tid: FastMap<String, usize>,
    by_first: FastMap<String, Vec<(usize, String, usize)>>,
    wild_first: Vec<(usize, String, usize)>,
}

fn literal_len(t: &str, param: &str) -> usize {
    t.replace(param, "").chars().filter(|c| !c.is_whitespace()).count()
}

impl TemplateIndex {
    pub fn is_empty(&self) -> bool {
        self.by_tid.is_empty()
    }
    pub fn len(&self) -> usize {
        self.by_tid.len()
    }

    /// Register a (normalised) template for cluster `idx`.
    pub fn insert(&mut self, tid: String, template: &str, idx: usize, param: &str) {
        let t = normalize_ws(template);
        let lit = literal_len(&t, param);
        let first = t.split(' ').next().unwrap_or("");
        let entry = (idx, t.clone(), lit);
        if first.is_empty() || first.contains(param) {
            self.wild_first.push(entry);
        } else {
            self.by_first.entry(first.to_string()).or_default().push(entry);
        }
        self.by_tid.insert(tid, idx);
    }

    /// Cluster index of the most specific template matching `line` (normalised).
    pub fn lookup(&self, line_norm: &str, param: &str) -> Option<usize> {
        let first = line_norm.split(' ').next().unwrap_or("");
        let mut best: Option<(usize, usize)> = None; // (literal len, idx)
        let bucket = self.by_first.get(first).map(|v| v.as_slice()).unwrap_or(&[]);
        for (idx, t, lit) in bucket.iter().chain(self.wild_first.iter()) {
            if let Some((bl, bi)) = best {
                if *lit < bl || (*lit == bl && *idx > bi) {
                    continue;
                }
            }
            if match_spans(t, line_norm, param, true).is_some() {
                best = Some((*lit, *idx));
            }
        }
        best.map(|(_, i)| i)
    }
}
