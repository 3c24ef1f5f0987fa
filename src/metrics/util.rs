//! Small text helpers shared by the metrics: Python-compatible whitespace
//! (`str.isspace` / `str.split()` semantics) and input checks.
use crate::error::{Error, Result};

/// `str.isspace()` of CPython for one character: Unicode White_Space plus the
/// ASCII information separators U+001C..U+001F that Python also treats as space.
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Byte spans of the tokens of `s.split()` (Python, no argument).
pub fn py_split_spans(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if is_py_space(c) {
            if let Some(st) = start.take() {
                out.push((st, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push((st, s.len()));
    }
    out
}

/// Tokens of Python's `s.split()`.
#[inline]
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// Python's `" ".join(s.split())`.
pub fn py_whitespace_normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for t in py_split(s) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// Error unless `a` is non-empty and `b` has the same length.
pub fn check_pair(what: &str, a: usize, b: usize) -> Result<()> {
    if a == 0 {
        return Err(Error::InvalidArgument(format!("{what}: inputs must not be empty")));
    }
    if a != b {
        return Err(Error::InvalidArgument(format!(
            "{what}: length mismatch: {a} hypotheses/predictions but {b} references/labels"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn split_like_python() {
        assert_eq!(py_split_spans("  ab c\u{1f}d\u{3000}"), vec![(2, 4), (5, 6), (7, 8)]);
        assert_eq!(py_whitespace_normalize(" a\t\tb \n"), "a b");
    }
}
