//! Matching a template with `<*>` wildcards against a raw line, and parameter extraction.
//!
//! Same semantics as drain3's `TemplateMiner.extract_parameters` with `exact_matching=False`
//! (template escaped, each `<*>` a lazy `.+?`, whitespace runs equivalent, anchored at both
//! ends), implemented as a linear glob scan instead of a regex: literal pieces are placed
//! leftmost in order, which decides existence of a match exactly for `*`-only patterns.

/// Collapse whitespace runs to one space and trim (drain3 splits on whitespace).
pub fn normalize_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, t) in s.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// Byte spans `(start, end)` of the parameters of `line` under `template`, both already
/// whitespace-normalised; `None` when the line does not match.
pub fn match_spans(template: &str, line: &str, param: &str, allow_empty: bool) -> Option<Vec<(usize, usize)>> {
    let parts: Vec<&str> = template.split(param).collect();
    let min = if allow_empty { 0 } else { 1 };
    if parts.len() == 1 {
        return if template == line { Some(Vec::new()) } else { None };
    }
    let first = parts[0];
    let last = parts[parts.len() - 1];
    if !line.starts_with(first) {
        return None;
    }
    let mut pos = first.len();
    let mut spans = Vec::with_capacity(parts.len() - 1);
    for mid in &parts[1..parts.len() - 1] {
        let from = pos + min;
        if from > line.len() {
            return None;
        }
        // search on bytes; literal pieces are valid UTF-8 so hits are char boundaries
        let hay = &line.as_bytes()[from..];
        let found = find_bytes(hay, mid.as_bytes())?;
        let start = from + found;
        spans.push((pos, start));
        pos = start + mid.len();
    }
    // last star then the suffix
    if line.len() < pos + min + last.len() || !line.ends_with(last) {
        return None;
    }
    let end = line.len() - last.len();
    if end < pos + min {
        return None;
    }
    spans.push((pos, end));
    Some(spans)
}

/// Whether a model's `template` (whitespace-normalised) verifies against the `line` it
/// was proposed for: it matches, and no `<*>` glued to a word of the template matches
/// empty text there. `exceptions<*>` or `<*>ms` over nothing stands for no variable of the
/// line (and a template of such a ghost plus constants kept from the line would split one
/// event into a template per value); `(<*>)` or `user=<*> ` over nothing is an empty
/// value, as loghub's own templates have them.
pub fn verifies(template: &str, line: &str, param: &str) -> bool {
    if match_spans(template, line, param, false).is_some() {
        return true;
    }
    let Some(spans) = match_spans(template, line, param, true) else {
        return false;
    };
    let parts: Vec<&str> = template.split(param).collect();
    !spans.iter().enumerate().any(|(i, &(s, e))| {
        s == e
            && (parts[i].chars().next_back().is_some_and(char::is_alphanumeric)
                || parts.get(i + 1).and_then(|p| p.chars().next()).is_some_and(char::is_alphanumeric))
    })
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    let f = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1].iter().position(|&c| c == f) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Parameters of `line` under `template` (whitespace-insensitive), `None` on mismatch.
pub fn extract_parameters(template: &str, line: &str, param: &str, allow_empty: bool) -> Option<Vec<String>> {
    let t = normalize_ws(template);
    let l = normalize_ws(line);
    let spans = match_spans(&t, &l, param, allow_empty)?;
    // spans may cut inside a multi-byte char only if a literal does; literals are
    // whole UTF-8 strings so slicing is safe, but guard anyway
    spans
        .into_iter()
        .map(|(a, b)| l.get(a..b).map(str::to_string))
        .collect()
}

/// Does `template` match `line`?
pub fn template_matches(template: &str, line: &str, param: &str, allow_empty: bool) -> bool {
    match_spans(&normalize_ws(template), &normalize_ws(line), param, allow_empty).is_some()
}

/// Whether a template is too general to cache: its literal text (without the
/// placeholders) holds no letter, so it describes a shape (`<*>`, `<*>=<*>`, `<*> <*>:<*>`)
/// that lines of many events share, not an event. No template of the loghub-2k ground
/// truths (original or corrected, seven systems) is one.
pub fn is_degenerate(template: &str, param: &str) -> bool {
    !template.replace(param, "").chars().any(char::is_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;
    const P: &str = "<*>";
    #[test]
    fn matches_and_extracts() {
        assert_eq!(
            extract_parameters("Received block <*> of size <*> from /<*>", "Received  block blk_1 of size 67108864 from /10.0.0.1", P, false),
            Some(vec!["blk_1".into(), "67108864".into(), "10.0.0.1".into()])
        );
        assert_eq!(extract_parameters("a <*> b", "a b", P, false), None);
        assert_eq!(extract_parameters("a <*> b", "a x y b", P, false), Some(vec!["x y".into()]));
        assert_eq!(extract_parameters("x=<*>", "x=", P, true), Some(vec!["".into()]));
        assert_eq!(extract_parameters("x=<*>", "x=", P, false), None);
        assert_eq!(extract_parameters("<*><*>", "ab", P, false), Some(vec!["a".into(), "b".into()]));
        assert_eq!(extract_parameters("<*><*>", "a", P, false), None);
        assert!(template_matches("no params", "no   params", P, false));
        assert!(!template_matches("no params", "no params!", P, false));
        assert!(template_matches("<*>:<*>", "h:1:2", P, false));
        assert!(!template_matches("ab<*>ba", "aba", P, true));
        assert!(template_matches("é <*> ü", "é ☃ ü", P, false));
        assert!(is_degenerate("<*> <*>", P));
        assert!(is_degenerate("<*>=<*>", P));
        assert!(is_degenerate("<*> (<*>) <*>:<*>", P));
        assert!(!is_degenerate("<*> a", P));
        assert!(!is_degenerate("<*>=<*> état", P));
    }
}
