//! Decoding: the bytes each token stands for (GPT-2 byte-level mapping,
//! `<0xAB>` byte tokens, SentencePiece `▁`), `decode`, and [`DecodeStream`], the
//! incremental detokenizer that only ever returns complete UTF-8 (HF
//! `tokenizers` `DecodeStream`, llama.cpp `token_to_piece`).
use std::collections::HashMap;

use super::{Kind, Tokenizer};
use crate::error::Result;

// ---------------------------------------------------------------------------
// byte-level (GPT-2) mapping

/// GPT-2 `bytes_to_unicode`: byte -> printable char.
pub(super) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

pub(super) fn char_to_byte_map() -> HashMap<char, u8> {
    byte_to_char_table().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect()
}

/// Byte-level decode of one token text; like HF's ByteLevel decoder, a token
/// holding a char outside the mapping is taken verbatim as UTF-8.
pub(super) fn byte_level_decode(text: &str, map: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => return text.as_bytes().to_vec(),
        }
    }
    out
}

/// `<0xAB>` -> 0xAB.
pub(super) fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// Decode ids to text (invalid UTF-8 becomes U+FFFD). `skip_special` drops
    /// control tokens. An id outside the vocabulary is `Error::InvalidArgument`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_piece(id, skip_special, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub(super) fn append_piece(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) -> Result<()> {
        let piece = self.token_piece(id)?;
        if skip_special && self.inner.kinds[id as usize] == Kind::Control {
            return Ok(());
        }
        out.extend_from_slice(piece);
        Ok(())
    }

    /// An incremental detokenizer for streaming output.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream {
        DecodeStream { tok: self.clone(), skip_special, buf: Vec::new() }
    }
}

// ---------------------------------------------------------------------------
// streaming

/// Incremental detokenizer: `push` returns only complete UTF-8 text, `finish`
/// flushes the rest. The concatenation of all outputs equals
/// `decode(all ids, skip_special)`.
pub struct DecodeStream {
    tok: Tokenizer,
    skip_special: bool,
    buf: Vec<u8>,
}

impl DecodeStream {
    pub fn new(tok: &Tokenizer, skip_special: bool) -> Self {
        tok.decode_stream(skip_special)
    }

    /// Add one token; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.tok.append_piece(id, self.skip_special, &mut self.buf)?;
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.buf) {
                Ok(s) => {
                    out.push_str(s);
                    self.buf.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix was just validated.
                    out.push_str(std::str::from_utf8(&self.buf[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.buf.drain(..valid + bad);
                        }
                        None => {
                            self.buf.drain(..valid);
                            break; // incomplete sequence at the end: wait for more bytes
                        }
                    }
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Flush what is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        Some(s)
    }
}
