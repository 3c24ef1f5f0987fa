//! Tokenising and masking of obvious variables before the template tree sees a line.
//!
//! Follows drain3's `LogMasker` idea (mask with `<*>` before Drain, He et al. ICWS 2017),
//! but with hand-written byte scanners instead of regexes, for throughput. A whitespace
//! token is split into `prefix core suffix`, where prefix/suffix are brackets, quotes and
//! trailing punctuation; a core that contains a digit (numbers, hex, IPs with ports,
//! paths, UUIDs, block ids, job/attempt ids, times) is replaced by the parameter string.
//! `key=value` and `Key:value` keep their key. Masked text always replaces a non-empty
//! substring of the token, so a masked template still matches the raw line.
use std::borrow::Cow;

/// Split a line into whitespace tokens, after turning every `extra_delimiters` string
/// into a space (drain3's `get_content_as_tokens`).
pub fn split_tokens<'a>(line: &'a str, extra_delimiters: &[String]) -> Vec<Cow<'a, str>> {
    if extra_delimiters.is_empty() {
        return line.split_whitespace().map(Cow::Borrowed).collect();
    }
    let mut s = line.to_string();
    for d in extra_delimiters {
        if !d.is_empty() {
            s = s.replace(d.as_str(), " ");
        }
    }
    s.split_whitespace().map(|t| Cow::Owned(t.to_string())).collect()
}

#[inline]
fn is_open(b: u8) -> bool {
    matches!(b, b'(' | b'[' | b'{' | b'<' | b'"' | b'\'' | b'`')
}
#[inline]
fn is_close(b: u8) -> bool {
    matches!(b, b')' | b']' | b'}' | b'>' | b'"' | b'\'' | b'`' | b',' | b';' | b'.' | b':' | b'!' | b'?')
}

/// Mask one token. Returns the token unchanged (borrowed) when it holds no digit.
pub fn mask_token<'a>(tok: &'a str, param: &str) -> Cow<'a, str> {
    let b = tok.as_bytes();
    if !b.iter().any(u8::is_ascii_digit) || tok == param {
        return Cow::Borrowed(tok);
    }
    let mut s = 0;
    while s < b.len() && is_open(b[s]) {
        s += 1;
    }
    let mut e = b.len();
    while e > s && is_close(b[e - 1]) {
        e -= 1;
    }
    if s >= e {
        return Cow::Borrowed(tok);
    }
    let core = &tok[s..e];
    let masked = mask_core(core, param);
    match masked {
        None => Cow::Borrowed(tok),
        Some(m) => {
            let mut out = String::with_capacity(tok.len());
            out.push_str(&tok[..s]);
            out.push_str(&m);
            out.push_str(&tok[e..]);
            Cow::Owned(out)
        }
    }
}

/// Mask the core of a token; `None` when it is kept as is.
fn mask_core(core: &str, param: &str) -> Option<String> {
    let b = core.as_bytes();
    if !b.iter().any(u8::is_ascii_digit) {
        return None;
    }
    if core.contains(param) {
        return None; // already a template token (e.g. merging templates)
    }
    // key=value (the key keeps no digit): keep the key, mask the value
    if let Some(p) = core.find('=') {
        let (k, v) = (&core[..p], &core[p + 1..]);
        if !k.is_empty() && !k.bytes().any(|c| c.is_ascii_digit()) {
            if v.is_empty() {
                return None;
            }
            let mv = mask_token(v, param);
            return match mv {
                Cow::Borrowed(_) => None,
                Cow::Owned(m) => Some(format!("{k}={m}")),
            };
        }
    }
    // Key:value where Key is a word of letters (PendingReds:0), not host:port
    if let Some(p) = core.find(':') {
        let k = &core[..p];
        if p > 0 && k.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_' || c == b'-') && p + 1 < core.len() {
            let mv = mask_token(&core[p + 1..], param);
            return match mv {
                Cow::Borrowed(_) => None,
                Cow::Owned(m) => Some(format!("{k}:{m}")),
            };
        }
    }
    Some(param.to_string())
}

/// Tokenise and (optionally) mask a line.
pub fn tokenize<'a>(line: &'a str, extra_delimiters: &[String], mask: bool, param: &str) -> Vec<Cow<'a, str>> {
    let toks = split_tokens(line, extra_delimiters);
    if !mask {
        return toks;
    }
    toks.into_iter()
        .map(|t| match t {
            Cow::Borrowed(s) => mask_token(s, param),
            Cow::Owned(s) => Cow::Owned(mask_token(&s, param).into_owned()),
        })
        .collect()
}

/// A whole line masked for a text model (the collaborative detector's sentence encoder,
/// `loglm.collab.mask_line`): each whitespace token masked as [`mask_token`] masks it for
/// the template tree, joined by single spaces, and a run of tokens masked to `param` kept
/// as one (`081109 203615 148 INFO` becomes `<*> INFO`: one variable to the encoder).
pub fn mask_line(line: &str, param: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut after_param = false;
    for tok in line.split_whitespace() {
        let m = mask_token(tok, param);
        let is_param = m == param;
        if is_param && after_param {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&m);
        after_param = is_param;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    const P: &str = "<*>";
    fn m(t: &str) -> String {
        mask_token(t, P).into_owned()
    }
    #[test]
    fn masks_obvious_variables() {
        assert_eq!(m("blk_-6952295868487656571"), "<*>");
        assert_eq!(m("/10.250.19.102:54106"), "<*>");
        assert_eq!(m("(10.0.0.1:80),"), "(<*>),");
        assert_eq!(m("size=123"), "size=<*>");
        assert_eq!(m("uid=0"), "uid=<*>");
        assert_eq!(m("PendingReds:0"), "PendingReds:<*>");
        assert_eq!(m("0x0b85eee0,"), "<*>,");
        assert_eq!(m("[12345]"), "[<*>]");
        assert_eq!(m("123e4567-e89b-12d3-a456-426614174000"), "<*>");
        assert_eq!(m("terminating"), "terminating");
        assert_eq!(m("ruser="), "ruser=");
        assert_eq!(m("<*>"), "<*>");
        assert_eq!(m("(HWID=1973)"), "(HWID=<*>)");
    }
    #[test]
    fn tokenizes_with_delimiters() {
        let t = tokenize("a,b  c 12", &[",".to_string()], true, P);
        assert_eq!(t, vec!["a", "b", "c", "<*>"]);
        assert!(tokenize("   ", &[], true, P).is_empty());
    }
    #[test]
    fn masks_a_line_for_the_encoder() {
        let line = "081109 203615 148 INFO dfs.DataNode: Receiving block blk_-12 src: /10.0.0.1:500";
        assert_eq!(mask_line(line, P), "<*> INFO dfs.DataNode: Receiving block <*> src: <*>");
        assert_eq!(mask_line("  size=12   uid=0 <*> 7 done ", P), "size=<*> uid=<*> <*> done");
        assert_eq!(mask_line("no variables here", P), "no variables here");
        assert_eq!(mask_line(" \t ", P), "");
    }
}
