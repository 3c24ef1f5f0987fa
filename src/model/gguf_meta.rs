//! Typed reads of GGUF metadata values (`candle_core::quantized::gguf_file::Value`),
//! shared by the model loader (`gguf.rs`) and the tokenizer rebuild
//! (`tokenizer/gguf_vocab.rs`). The GGUF spec (ggml `docs/gguf.md`) lets a
//! writer pick any integer width for a count or an id, so every integer reader
//! here accepts all eight and refuses what does not fit instead of wrapping.
use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

/// A GGUF file's metadata, by key.
pub type Metadata = HashMap<String, Value>;

/// Any GGUF integer as `i64` (a `u64` above `i64::MAX` is `None`).
pub fn value_to_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

/// Any non-negative GGUF integer as `u64` (negative numbers are `None`).
pub fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U64(x) => Some(*x),
        other => value_to_i64(other).and_then(|x| u64::try_from(x).ok()),
    }
}

/// A GGUF float or integer as `f32` (NaN is returned as NaN: callers validate).
pub fn value_to_f32(v: &Value) -> Option<f32> {
    match v {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        other => value_to_i64(other).map(|x| x as f32).or_else(|| value_to_u64(other).map(|x| x as f32)),
    }
}

/// A string value.
pub fn md_str<'a>(md: &'a Metadata, key: &str) -> Option<&'a str> {
    match md.get(key) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// A boolean, or an integer read as `!= 0`.
pub fn md_bool(md: &Metadata, key: &str) -> Option<bool> {
    match md.get(key)? {
        Value::Bool(b) => Some(*b),
        v => value_to_i64(v).map(|x| x != 0),
    }
}

/// A token id: an integer in `0..n_vocab`, else `None`.
pub fn md_id(md: &Metadata, key: &str, n_vocab: usize) -> Option<u32> {
    let v = value_to_u64(md.get(key)?)?;
    (v < n_vocab as u64).then_some(v as u32)
}

/// An array of strings; `Err(message)` when absent, not an array, or holding
/// something else.
pub fn md_str_array<'a>(md: &'a Metadata, key: &str) -> Result<Vec<&'a str>, String> {
    let arr = match md.get(key) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("GGUF metadata {key} is not an array")),
        None => return Err(format!("GGUF metadata has no {key}")),
    };
    arr.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(format!("GGUF metadata {key}[{i}] is not a string")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_every_width_and_no_wrapping() {
        assert_eq!(value_to_u64(&Value::U8(7)), Some(7));
        assert_eq!(value_to_u64(&Value::I32(-1)), None);
        assert_eq!(value_to_u64(&Value::U64(u64::MAX)), Some(u64::MAX));
        assert_eq!(value_to_i64(&Value::U64(u64::MAX)), None);
        assert_eq!(value_to_i64(&Value::I16(-3)), Some(-3));
        assert_eq!(value_to_u64(&Value::F32(1.0)), None);
        assert!(value_to_f32(&Value::F64(f64::NAN)).unwrap().is_nan());
        let mut md = Metadata::new();
        md.insert("id".into(), Value::I64(-1));
        md.insert("big".into(), Value::U32(5));
        assert_eq!(md_id(&md, "id", 10), None);
        assert_eq!(md_id(&md, "big", 5), None);
        assert_eq!(md_id(&md, "big", 6), Some(5));
    }
}
