//! Batch mode: parallel (rayon) tokenising, masking and tree lookup against a read-only
//! snapshot, then a sequential pass that applies the results in line order. A snapshot
//! result is used only while no cluster with the line's token count has been created or
//! changed since the snapshot (Drain's first tree level is the token count, so other
//! groups cannot change the outcome); otherwise the lookup is redone. The output is
//! therefore identical to adding the lines one by one. Also: reading files with lossy
//! UTF-8 decoding (flagged, never dropped) and loghub log formats
//! (`<Date> <Time> <Level>: <Content>`, logparser's `generate_logformat_regex`).
use std::borrow::Cow;

use rayon::prelude::*;
use regex::Regex;

use super::miner::Parser;
use super::FastMap;

const CHUNK: usize = 1 << 15;

impl Parser {
    /// Add many lines; returns the cluster index of every line (in order). Same result as
    /// calling [`Parser::add`] on each line in turn.
    pub fn add_batch<S: AsRef<str> + Sync>(&mut self, lines: &[S]) -> Vec<u32> {
        let mut out = Vec::with_capacity(lines.len());
        // with LLM templates or an LRU bound (evictions touch other groups) go line by line
        if !self.index.is_empty() || self.tree.cfg.max_clusters.is_some() {
            for l in lines {
                out.push(self.add(l.as_ref()).0 as u32);
            }
            return out;
        }
        for chunk in lines.chunks(CHUNK) {
            // parallel: tokens, lookup against the snapshot and whether the line would
            // change its cluster's template; tokens are kept only when needed below
            let tree = &self.tree;
            let pre: Vec<(usize, Option<usize>, Option<Vec<Cow<str>>>)> = chunk
                .par_iter()
                .map(|l| {
                    let t = tree.tokenize(l.as_ref());
                    let found = tree.search(&t, tree.cfg.sim_th, false);
                    let same = found.is_some_and(|i| tree.would_keep(i, &t));
                    (t.len(), found, if same { None } else { Some(t) })
                })
                .collect();
            let mut dirty: FastMap<usize, ()> = FastMap::default();
            for (l, (n, snap, toks)) in chunk.iter().zip(pre) {
                let idx = match (dirty.contains_key(&n), snap, toks) {
                    // unchanged group, line fits its cluster as is: only the size moves
                    (false, Some(i), None) => {
                        self.tree.clusters[i].size += 1;
                        i
                    }
                    (is_dirty, snap, toks) => {
                        let t = toks.unwrap_or_else(|| self.tree.tokenize(l.as_ref()));
                        let found = if is_dirty { self.tree.search(&t, self.tree.cfg.sim_th, false) } else { snap };
                        match found {
                            None => {
                                dirty.insert(n, ());
                                self.tree.create(&t)
                            }
                            Some(i) => {
                                if self.tree.absorb(i, &t) != super::Change::None {
                                    dirty.insert(n, ());
                                }
                                i
                            }
                        }
                    }
                };
                out.push(idx as u32);
            }
            self.counters.lines += chunk.len() as u64;
        }
        out
    }

    /// Parameters of each line under the (final) template of its cluster.
    pub fn parameters_batch<S: AsRef<str> + Sync>(&self, lines: &[S], clusters: &[u32]) -> Vec<Vec<String>> {
        let templates: Vec<String> = self.tree.clusters.iter().map(|c| c.template()).collect();
        let p = self.tree.cfg.param_str.as_str();
        lines
            .par_iter()
            .zip(clusters.par_iter())
            .map(|(l, &c)| {
                super::matching::extract_parameters(&templates[c as usize], l.as_ref(), p, true).unwrap_or_default()
            })
            .collect()
    }
}

/// Split file bytes into lines (LF or CRLF), decoding invalid UTF-8 lossily.
/// Returns the lines and, per line, whether it was not valid UTF-8.
pub fn split_lines(bytes: &[u8]) -> (Vec<String>, Vec<bool>) {
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if bytes.last() == Some(&b'\n') || bytes.is_empty() {
        pieces.pop();
    }
    let dec: Vec<(String, bool)> = pieces
        .par_iter()
        .map(|p| {
            let p = p.strip_suffix(b"\r").unwrap_or(p);
            match String::from_utf8_lossy(p) {
                Cow::Borrowed(s) => (s.to_string(), false),
                Cow::Owned(s) => (s, true),
            }
        })
        .collect();
    dec.into_iter().unzip()
}

/// Read a log file into lines (see [`split_lines`]).
pub fn read_lines(path: &std::path::Path) -> crate::Result<(Vec<String>, Vec<bool>)> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::from_open(path, e))?;
    Ok(split_lines(&bytes))
}

/// A loghub log format such as `<Date> <Time> <Pid> <Level> <Component>: <Content>`.
#[derive(Clone, Debug)]
pub struct LogFormat {
    pub headers: Vec<String>,
    re: Regex,
    content: usize,
}

impl LogFormat {
    pub fn new(format: &str) -> crate::Result<Self> {
        let hdr = Regex::new(r"<([^<>]+)>").unwrap();
        let mut pat = String::from("^");
        let mut headers = Vec::new();
        let mut last = 0;
        for m in hdr.captures_iter(format) {
            let whole = m.get(0).unwrap();
            let lit = &format[last..whole.start()];
            pat.push_str(&literal_pattern(lit));
            let name = m[1].to_string();
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
                crate::bail!(InvalidArgument, "log_format header <{name}> must be letters, digits or _");
            }
            if headers.contains(&name) {
                crate::bail!(InvalidArgument, "log_format header <{name}> appears twice");
            }
            pat.push_str(&format!("(?P<{name}>.*?)"));
            headers.push(name);
            last = whole.end();
        }
        pat.push_str(&literal_pattern(&format[last..]));
        pat.push('$');
        let content = match headers.iter().position(|h| h == "Content") {
            Some(c) => c,
            None => crate::bail!(InvalidArgument, "log_format must contain <Content>, got {format:?}"),
        };
        let re = Regex::new(&pat).map_err(|e| crate::Error::InvalidArgument(format!("bad log_format: {e}")))?;
        Ok(LogFormat { headers, re, content })
    }

    /// Header values of a line, `None` when it does not fit the format.
    pub fn fields(&self, line: &str) -> Option<Vec<String>> {
        let c = self.re.captures(line)?;
        Some(self.headers.iter().map(|h| c.name(h).map_or("", |m| m.as_str()).to_string()).collect())
    }

    /// Split many lines: per line the header values (the whole line as Content and empty
    /// headers when it does not fit) and whether it fitted.
    pub fn split_many(&self, lines: &[String]) -> (Vec<Vec<String>>, Vec<bool>) {
        lines
            .par_iter()
            .map(|l| match self.fields(l) {
                Some(f) => (f, true),
                None => {
                    let mut f = vec![String::new(); self.headers.len()];
                    f[self.content] = l.clone();
                    (f, false)
                }
            })
            .unzip()
    }

    pub fn content_index(&self) -> usize {
        self.content
    }
}

fn literal_pattern(lit: &str) -> String {
    let mut out = String::new();
    let mut in_space = false;
    for ch in lit.chars() {
        if ch == ' ' {
            if !in_space {
                out.push_str(r"\s+");
            }
            in_space = true;
        } else {
            in_space = false;
            out.push_str(&regex::escape(&ch.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::ParserConfig;
    use super::*;

    #[test]
    fn batch_equals_sequential() {
        let mut lines = Vec::new();
        for i in 0..100_000u64 {
            let k = (i.wrapping_mul(2654435761) >> 7) % 50;
            lines.push(format!("svc{} event {} id {} took {} ms", k % 9, k, i, i % 13));
            if i % 17 == 0 {
                lines.push(format!("rare kind{} {} happened at node{}", i % 23, "x".repeat((i % 5) as usize), i));
            }
        }
        let cfg = ParserConfig { max_children: 5, ..Default::default() };
        let mut a = Parser::new(cfg.clone()).unwrap();
        let seq: Vec<u32> = lines.iter().map(|l| a.add(l).0 as u32).collect();
        let mut b = Parser::new(cfg).unwrap();
        let par = b.add_batch(&lines);
        assert_eq!(seq, par);
        assert_eq!(a.tree.clusters, b.tree.clusters);
        assert_eq!(a.counters, b.counters);
    }

    #[test]
    fn lines_and_formats() {
        let (l, bad) = split_lines(b"a\r\n\xffb\n\nlast");
        assert_eq!(l, vec!["a", "\u{fffd}b", "", "last"]);
        assert_eq!(bad, vec![false, true, false, false]);
        assert_eq!(split_lines(b"").0.len(), 0);
        assert_eq!(split_lines(b"\n").0, vec![""]);
        let f = LogFormat::new("<Date> <Time> <Level>: <Content>").unwrap();
        assert_eq!(f.fields("081109 203615  INFO: hello: world").unwrap(), vec!["081109", "203615", "INFO", "hello: world"]);
        assert!(f.fields("nonsense").is_none());
        assert!(LogFormat::new("<Date>").is_err());
    }
}
