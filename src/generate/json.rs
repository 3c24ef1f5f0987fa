//! JSON mode: a byte-level pushdown recognizer of JSON text (RFC 8259) used as
//! a token mask by the sampler, so that a generation asked for
//! `response_format = {"type": "json_object"}` is a JSON object by
//! construction rather than by retry (the approach of llama.cpp's grammar
//! sampler and of outlines / XGrammar: a token is allowed when its bytes keep
//! the output a prefix of some valid document).
//!
//! [`JsonState::accepts`] feeds a token's bytes to a copy of the state; the
//! sampler first tries the token it would have chosen and computes the full
//! mask only when that token is refused. Once the top-level object is closed
//! only end-of-sequence is allowed. Whitespace between tokens is capped
//! ([`MAX_WS`]) so that a model cannot pad forever.

/// Longest run of whitespace allowed between JSON tokens.
pub const MAX_WS: usize = 8;
/// Deepest nesting allowed.
pub const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Object,
    Array,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// A value must start here (after `:`, `,` in an array, `[`, or at the start).
    Value,
    /// Right after `[`: a value or `]`.
    ArrayFirst,
    /// Right after `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    After,
    /// Inside a string (`key`: an object key).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// `n` hex digits of a `\u` escape still to come.
    Hex { key: bool, left: u8 },
    /// Inside a number; `part` says what may come next.
    Num(NumPart),
    /// Inside `true` / `false` / `null`: the bytes still to come.
    Lit { word: &'static [u8], at: u8 },
    /// The top-level value is complete.
    Done,
}

/// Where a JSON number stands (RFC 8259 grammar), shared with the schema recognizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NumPart {
    /// After `-`: a digit.
    Sign,
    /// After a leading `0`: `.`, `e` or the end.
    Zero,
    /// In the integer digits.
    Int,
    /// After `.`: a digit.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After `e`: sign or digit.
    Exp,
    /// After the exponent sign: a digit.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
}

impl NumPart {
    /// The part after a number's first byte, if `b` can start one.
    pub(super) fn start(b: u8) -> Option<NumPart> {
        match b {
            b'-' => Some(NumPart::Sign),
            b'0' => Some(NumPart::Zero),
            b'1'..=b'9' => Some(NumPart::Int),
            _ => None,
        }
    }

    /// The part after byte `b`, or `None` when `b` does not continue the number
    /// (`integer`: no fraction or exponent allowed).
    pub(super) fn next(self, b: u8, integer: bool) -> Option<NumPart> {
        match (self, b) {
            (NumPart::Sign, b'0') => Some(NumPart::Zero),
            (NumPart::Sign, b'1'..=b'9') => Some(NumPart::Int),
            (NumPart::Int, b'0'..=b'9') => Some(NumPart::Int),
            (NumPart::Zero | NumPart::Int, b'.') if !integer => Some(NumPart::Dot),
            (NumPart::Dot | NumPart::Frac, b'0'..=b'9') => Some(NumPart::Frac),
            (NumPart::Zero | NumPart::Int | NumPart::Frac, b'e' | b'E') if !integer => Some(NumPart::Exp),
            (NumPart::Exp, b'+' | b'-') => Some(NumPart::ExpSign),
            (NumPart::Exp | NumPart::ExpSign | NumPart::ExpDigits, b'0'..=b'9') => Some(NumPart::ExpDigits),
            _ => None,
        }
    }

    /// Whether the number may end here.
    pub(super) fn endable(self) -> bool {
        matches!(self, NumPart::Zero | NumPart::Int | NumPart::Frac | NumPart::ExpDigits)
    }
}

/// Where a generation stands in its JSON document.
#[derive(Clone, Debug)]
pub struct JsonState {
    stack: Vec<Frame>,
    lex: Lex,
    ws: usize,
    /// The top-level value must be an object (`json_object`).
    object_only: bool,
}

impl JsonState {
    /// A state expecting a document; with `object_only`, its top level must be an object.
    pub fn new(object_only: bool) -> Self {
        JsonState { stack: Vec::new(), lex: Lex::Value, ws: 0, object_only }
    }

    /// Whether the document is complete.
    pub fn is_complete(&self) -> bool {
        self.lex == Lex::Done
    }

    /// Whether `bytes` may follow what was generated so far.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let mut s = self.clone();
        bytes.iter().all(|&b| s.push(b))
    }

    /// Feed a token's bytes for good; false (state unspecified) if they do not fit.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.push(b))
    }

    fn value_done(&mut self) {
        self.lex = if self.stack.is_empty() { Lex::Done } else { Lex::After };
    }

    fn open(&mut self, f: Frame) -> bool {
        if self.stack.len() >= MAX_DEPTH {
            return false;
        }
        self.stack.push(f);
        self.lex = if f == Frame::Object { Lex::ObjectFirst } else { Lex::ArrayFirst };
        true
    }

    fn close(&mut self, f: Frame) -> bool {
        if self.stack.pop() != Some(f) {
            return false;
        }
        self.value_done();
        true
    }

    /// Start a value with byte `b`.
    fn start_value(&mut self, b: u8) -> bool {
        if self.object_only && self.stack.is_empty() && b != b'{' {
            return false;
        }
        match b {
            b'{' => self.open(Frame::Object),
            b'[' => self.open(Frame::Array),
            b'"' => {
                self.lex = Lex::Str { key: false };
                true
            }
            b'-' | b'0'..=b'9' => match NumPart::start(b) {
                Some(part) => {
                    self.lex = Lex::Num(part);
                    true
                }
                None => false,
            },
            b't' => {
                self.lex = Lex::Lit { word: b"true", at: 1 };
                true
            }
            b'f' => {
                self.lex = Lex::Lit { word: b"false", at: 1 };
                true
            }
            b'n' => {
                self.lex = Lex::Lit { word: b"null", at: 1 };
                true
            }
            _ => false,
        }
    }

    fn push(&mut self, b: u8) -> bool {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.lex {
            Lex::Str { key } => {
                match b {
                    b'"' => {
                        if key {
                            self.lex = Lex::Colon;
                            self.ws = 0;
                        } else {
                            self.value_done();
                            self.ws = 0;
                        }
                    }
                    b'\\' => self.lex = Lex::Escape { key },
                    0..=0x1f => return false,
                    _ => {}
                }
                return true;
            }
            Lex::Escape { key } => {
                self.lex = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Lex::Str { key },
                    b'u' => Lex::Hex { key, left: 4 },
                    _ => return false,
                };
                return true;
            }
            Lex::Hex { key, left } => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                self.lex = if left == 1 { Lex::Str { key } } else { Lex::Hex { key, left: left - 1 } };
                return true;
            }
            Lex::Lit { word, at } => {
                if word.get(at as usize) != Some(&b) {
                    return false;
                }
                if at as usize + 1 == word.len() {
                    self.value_done();
                    self.ws = 0;
                } else {
                    self.lex = Lex::Lit { word, at: at + 1 };
                }
                return true;
            }
            Lex::Num(part) => {
                if let Some(n) = part.next(b, false) {
                    self.lex = Lex::Num(n);
                    return true;
                }
                // The number ends here if it may; the byte then belongs to what follows.
                if !part.endable() {
                    return false;
                }
                // A top-level number would need lookahead to end: JSON mode asks for containers.
                if self.stack.is_empty() {
                    return false;
                }
                self.value_done();
                self.ws = 0;
            }
            _ => {}
        }
        if ws {
            if self.lex == Lex::Done || self.ws >= MAX_WS {
                return false;
            }
            self.ws += 1;
            return true;
        }
        self.ws = 0;
        match self.lex {
            Lex::Value => self.start_value(b),
            Lex::ArrayFirst => {
                if b == b']' {
                    self.close(Frame::Array)
                } else {
                    self.start_value(b)
                }
            }
            Lex::ObjectFirst | Lex::Key => match b {
                b'"' => {
                    self.lex = Lex::Str { key: true };
                    true
                }
                b'}' if self.lex == Lex::ObjectFirst => self.close(Frame::Object),
                _ => false,
            },
            Lex::Colon => {
                if b == b':' {
                    self.lex = Lex::Value;
                    true
                } else {
                    false
                }
            }
            Lex::After => match (self.stack.last(), b) {
                (Some(Frame::Object), b',') => {
                    self.lex = Lex::Key;
                    true
                }
                (Some(Frame::Array), b',') => {
                    self.lex = Lex::Value;
                    true
                }
                (Some(Frame::Object), b'}') => self.close(Frame::Object),
                (Some(Frame::Array), b']') => self.close(Frame::Array),
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(doc: &str, object_only: bool) -> bool {
        let mut s = JsonState::new(object_only);
        s.advance(doc.as_bytes()) && s.is_complete()
    }

    #[test]
    fn documents_are_recognised() {
        for doc in [
            r#"{}"#,
            r#"{"a": 1, "b": [true, false, null, -0.5e+3, "x\"\u00e9\n"], "c": {"d": []}}"#,
            "{\n  \"k\": \"v\"\n}",
            r#"{"n": 0, "m": 10.25, "o": 1E9}"#,
        ] {
            assert!(full(doc, true), "{doc}");
            assert!(serde_json::from_str::<serde_json::Value>(doc).is_ok());
        }
        assert!(full("[1, 2]", false));
        assert!(!full("[1, 2]", true), "json_object wants an object");
    }

    #[test]
    fn invalid_text_is_refused_at_the_first_bad_byte() {
        for bad in [r#"{"a" 1}"#, r#"{a: 1}"#, r#"{"a": 01}"#, r#"{"a": tru}"#, r#"{"a": [1,]}"#, r#"{"a": "\x"}"#,
                    r#"{"a": 1}}"#, r#"{"a": 1} x"#, "{\"a\": \"\u{1}\"}", r#"{"a": -}"#, r#"{"a": 1.}"#] {
            let mut s = JsonState::new(true);
            assert!(!(s.advance(bad.as_bytes()) && s.is_complete()), "{bad}");
        }
        let s = JsonState::new(true);
        assert!(s.accepts(b"{\"") && s.accepts(b" {") && !s.accepts(b"x") && !s.accepts(b""));
        let mut s = JsonState::new(true);
        assert!(s.advance(b"{\"a\":"));
        assert!(!s.accepts(&[b' '; MAX_WS + 1]) && s.accepts(&[b' '; MAX_WS]));
        assert!(s.advance(b"1}") && s.is_complete() && !s.accepts(b" "));
    }

    #[test]
    fn every_accepted_prefix_extends_to_a_document() {
        // Greedy completion of random prefixes: whatever was accepted can still be closed.
        let doc = br#"{"key": [1, {"x": "y\u0041"}, -2.5e3, true], "z": null}"#;
        for cut in 0..doc.len() {
            let mut s = JsonState::new(true);
            assert!(s.advance(&doc[..cut]));
            assert!(s.advance(&doc[cut..]) && s.is_complete());
        }
        assert!(!JsonState::new(true).accepts(b"["));
        let mut s = JsonState::new(true);
        assert!(s.advance(b"{"));
        let deep: Vec<u8> = std::iter::once(b"\"a\":".to_vec()).chain(std::iter::repeat(b"[".to_vec()).take(MAX_DEPTH)).flatten().collect();
        assert!(!s.clone().advance(&deep), "nesting is bounded");
    }
}
