//! JSON Schema mode: a subset of JSON Schema compiled to a byte-level
//! pushdown recognizer, used as a token mask by the sampler exactly as
//! [`super::json`] is for `json_object`, so that a generation asked for
//! `response_format = {"type": "json_schema", ...}` is a document of that
//! schema by construction (constrained decoding, not retries).
//!
//! Supported (anything else is refused by [`Schema::compile`] with a message
//! naming the keyword, since the schema is untrusted input):
//! - `type`: `object`, `array`, `string`, `number`, `integer`, `boolean`,
//!   `null`, or a list of them (one of the types);
//! - objects: `properties`, `required`, `additionalProperties` (absent or
//!   `false`: only the declared properties are generated). Properties come in
//!   their declared order; the required ones always, the optional ones may be
//!   skipped;
//! - arrays: `items` (required), `minItems`, `maxItems`;
//! - strings: `minLength`, `maxLength` (in characters);
//! - `enum` and `const` of scalars (strings, numbers, booleans, null), written
//!   as their canonical JSON text (`1.0` stays `1.0`);
//! - `anyOf` whose branches start with different characters (e.g. a string or
//!   null, an object or an array; not two objects);
//! - annotations (`title`, `description`, `default`, `examples`, `$schema`,
//!   `$id`, `$comment`) are ignored.
//!
//! Compilation is bounded ([`MAX_SCHEMA_BYTES`], [`MAX_SCHEMA_DEPTH`],
//! [`MAX_NODES`], [`MAX_PROPERTIES`], [`MAX_ENUM`], [`MAX_LITERAL_BYTES`]);
//! whitespace between tokens is capped as in JSON mode ([`MAX_WS`]) and
//! numbers at [`MAX_NUMBER_BYTES`], so a model cannot pad forever. Strings
//! are valid UTF-8 by construction (a token cannot split a character wrongly).
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

pub use super::json::MAX_WS;
use super::json::{JsonState, NumPart};

/// Longest schema text accepted.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Deepest nesting of schemas (objects, arrays, anyOf).
pub const MAX_SCHEMA_DEPTH: usize = 16;
/// Most schema nodes in one schema.
pub const MAX_NODES: usize = 1024;
/// Most properties of one object.
pub const MAX_PROPERTIES: usize = 128;
/// Most values of one `enum` (and branches of one `anyOf`).
pub const MAX_ENUM: usize = 256;
/// Longest `enum` / `const` value or property name, as JSON text.
pub const MAX_LITERAL_BYTES: usize = 256;
/// Longest number, in bytes of JSON text.
pub const MAX_NUMBER_BYTES: u8 = 24;
/// Longest integer, in bytes of JSON text (fits a 64-bit integer).
pub const MAX_INTEGER_BYTES: u8 = 19;
/// Largest `minItems` / `maxItems` / `minLength` / `maxLength`.
pub const MAX_COUNT: u64 = 1 << 20;

/// A JSON value that keeps the order of object members (the declared order
/// of `properties`), for reading schemas.
enum V {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<V>),
    Obj(Vec<(String, V)>),
}

impl<'de> Deserialize<'de> for V {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<V, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = V;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<V, E> {
                Ok(V::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<V, E> {
                Ok(V::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<V, E> {
                Ok(V::Num(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<V, E> {
                serde_json::Number::from_f64(v).map(V::Num).ok_or_else(|| E::custom("non-finite number"))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<V, E> {
                Ok(V::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<V, E> {
                Ok(V::Str(v))
            }
            fn visit_unit<E>(self) -> std::result::Result<V, E> {
                Ok(V::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<V, E> {
                Ok(V::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<V, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element()? {
                    out.push(v);
                }
                Ok(V::Arr(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<V, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, V>()? {
                    if out.iter().any(|(x, _)| *x == k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.push((k, v));
                }
                Ok(V::Obj(out))
            }
        }
        d.deserialize_any(Vis)
    }
}

impl V {
    fn kind(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "a boolean",
            V::Num(_) => "a number",
            V::Str(_) => "a string",
            V::Arr(_) => "an array",
            V::Obj(_) => "an object",
        }
    }

    /// Canonical JSON text of a scalar.
    fn literal(&self) -> Option<Vec<u8>> {
        Some(match self {
            V::Null => b"null".to_vec(),
            V::Bool(true) => b"true".to_vec(),
            V::Bool(false) => b"false".to_vec(),
            V::Num(n) => n.to_string().into_bytes(),
            V::Str(s) => serde_json::to_string(s).ok()?.into_bytes(),
            V::Arr(_) | V::Obj(_) => return None,
        })
    }

    /// Whether a scalar is an instance of JSON Schema type `t`.
    fn is_type(&self, t: &str) -> bool {
        match (self, t) {
            (V::Null, "null") | (V::Bool(_), "boolean") | (V::Str(_), "string") | (V::Num(_), "number") => true,
            (V::Num(n), "integer") => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Prop {
    /// The property name as JSON text, quotes included.
    key: Vec<u8>,
    value: u32,
    required: bool,
}

#[derive(Debug)]
enum Node {
    Str { min: u32, max: Option<u32> },
    Num { integer: bool },
    /// One of these JSON texts (enum, const, boolean, null), sorted.
    Lit(Vec<Vec<u8>>),
    Obj(Vec<Prop>),
    Arr { items: u32, min: u32, max: Option<u32> },
    /// Branches with disjoint first bytes.
    AnyOf(Vec<u32>),
}

/// A compiled schema (shared by every sequence that uses it).
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<Node>,
    /// The bytes that may start a value of each node.
    first: Vec<[bool; 256]>,
    root: u32,
}

const ANNOTATIONS: [&str; 9] =
    ["title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs", "definitions"];
const KEYWORDS: [&str; 12] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "enum",
    "const",
    "anyOf",
];

fn get<'a>(m: &'a [(String, V)], k: &str) -> Option<&'a V> {
    m.iter().find(|(x, _)| x == k).map(|(_, v)| v)
}

fn count(m: &[(String, V)], k: &str, at: &str) -> Result<Option<u32>, String> {
    match get(m, k) {
        None => Ok(None),
        Some(V::Num(n)) => match n.as_u64() {
            Some(c) if c <= MAX_COUNT => Ok(Some(c as u32)),
            _ => Err(format!("{at}.{k} must be an integer in [0, {MAX_COUNT}]")),
        },
        Some(v) => Err(format!("{at}.{k} must be an integer, not {}", v.kind())),
    }
}

struct Compiler {
    nodes: Vec<Node>,
    first: Vec<[bool; 256]>,
}

impl Compiler {
    fn add(&mut self, mut n: Node, at: &str) -> Result<u32, String> {
        if let Node::Lit(c) = &mut n {
            // Sorted: the literals that share a matched prefix are a contiguous range.
            c.sort();
            c.dedup();
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(format!("{at}: the schema has more than {MAX_NODES} parts"));
        }
        let mut f = [false; 256];
        match &n {
            Node::Str { .. } => f[b'"' as usize] = true,
            Node::Num { .. } => {
                for b in b"-0123456789" {
                    f[*b as usize] = true;
                }
            }
            Node::Lit(c) => {
                for l in c {
                    f[l[0] as usize] = true;
                }
            }
            Node::Obj(_) => f[b'{' as usize] = true,
            Node::Arr { .. } => f[b'[' as usize] = true,
            Node::AnyOf(bs) => {
                for &b in bs {
                    for (i, x) in self.first[b as usize].iter().enumerate() {
                        if *x && f[i] {
                            return Err(format!(
                                "{at}: anyOf branches must start differently (one string-like, one number-like, \
                                 one object, one array, ...); two of them can start with {:?}",
                                i as u8 as char
                            ));
                        }
                        f[i] |= *x;
                    }
                }
            }
        }
        self.nodes.push(n);
        self.first.push(f);
        Ok(self.nodes.len() as u32 - 1)
    }

    fn literals(&self, vals: &[V], t: Option<&[&str]>, at: &str) -> Result<Vec<Vec<u8>>, String> {
        if vals.is_empty() {
            return Err(format!("{at} must not be empty"));
        }
        if vals.len() > MAX_ENUM {
            return Err(format!("{at} has {} values; at most {MAX_ENUM}", vals.len()));
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        for v in vals {
            let Some(l) = v.literal() else {
                return Err(format!("{at}: values must be strings, numbers, booleans or null, not {}", v.kind()));
            };
            if let Some(ts) = t {
                if !ts.iter().any(|t| v.is_type(t)) {
                    return Err(format!("{at}: value {} is not of type {}", String::from_utf8_lossy(&l), ts.join(" or ")));
                }
            }
            if l.len() > MAX_LITERAL_BYTES {
                return Err(format!("{at}: a value is longer than {MAX_LITERAL_BYTES} bytes"));
            }
            if !out.contains(&l) {
                out.push(l);
            }
        }
        Ok(out)
    }

    fn node(&mut self, v: &V, at: &str, depth: usize) -> Result<u32, String> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!("{at}: schemas nest deeper than {MAX_SCHEMA_DEPTH}"));
        }
        let m = match v {
            V::Obj(m) => m,
            V::Bool(_) => return Err(format!("{at}: boolean schemas are not supported; give an object")),
            other => return Err(format!("{at}: a schema must be an object, not {}", other.kind())),
        };
        for (k, _) in m {
            if !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
                return Err(format!(
                    "{at}: keyword {k:?} is not supported (supported: {}; annotations such as title and \
                     description are ignored)",
                    KEYWORDS.join(", ")
                ));
            }
        }
        let types: Option<Vec<&str>> = match get(m, "type") {
            None => None,
            Some(V::Str(s)) => Some(vec![s.as_str()]),
            Some(V::Arr(a)) => {
                let mut ts = Vec::new();
                for t in a {
                    let V::Str(s) = t else {
                        return Err(format!("{at}.type must be a string or a list of strings"));
                    };
                    if ts.contains(&s.as_str()) {
                        return Err(format!("{at}.type lists {s:?} twice"));
                    }
                    ts.push(s.as_str());
                }
                if ts.is_empty() {
                    return Err(format!("{at}.type must not be empty"));
                }
                Some(ts)
            }
            Some(other) => return Err(format!("{at}.type must be a string or a list of strings, not {}", other.kind())),
        };
        if let Some(ts) = &types {
            for t in ts {
                if !["object", "array", "string", "number", "integer", "boolean", "null"].contains(t) {
                    return Err(format!("{at}.type {t:?} is not a JSON Schema type"));
                }
            }
        }
        if let Some(any) = get(m, "anyOf") {
            if types.is_some() || get(m, "enum").is_some() || get(m, "const").is_some() {
                return Err(format!("{at}: anyOf cannot be combined with type, enum or const here"));
            }
            let V::Arr(bs) = any else {
                return Err(format!("{at}.anyOf must be a list of schemas"));
            };
            if bs.is_empty() || bs.len() > MAX_ENUM {
                return Err(format!("{at}.anyOf must have 1 to {MAX_ENUM} schemas"));
            }
            let mut ids = Vec::new();
            for (i, b) in bs.iter().enumerate() {
                let id = self.node(b, &format!("{at}.anyOf[{i}]"), depth + 1)?;
                match &self.nodes[id as usize] {
                    Node::AnyOf(inner) => ids.extend(inner.iter().copied()),
                    _ => ids.push(id),
                }
            }
            return if ids.len() == 1 { Ok(ids[0]) } else { self.add(Node::AnyOf(ids), at) };
        }
        if let Some(c) = get(m, "const") {
            if get(m, "enum").is_some() {
                return Err(format!("{at}: give enum or const, not both"));
            }
            let l = self.literals(std::slice::from_ref(c), types.as_deref(), &format!("{at}.const"))?;
            return self.add(Node::Lit(l), at);
        }
        if let Some(e) = get(m, "enum") {
            let V::Arr(vals) = e else {
                return Err(format!("{at}.enum must be a list"));
            };
            let l = self.literals(vals, types.as_deref(), &format!("{at}.enum"))?;
            return self.add(Node::Lit(l), at);
        }
        let types = match types {
            Some(t) => t,
            None if get(m, "properties").is_some() => vec!["object"],
            None if get(m, "items").is_some() => vec!["array"],
            None => return Err(format!("{at}: a schema needs a type (or enum, const, anyOf)")),
        };
        let mut ids = Vec::new();
        for t in &types {
            let id = self.typed(m, t, at, depth)?;
            ids.push(id);
        }
        if ids.len() == 1 {
            Ok(ids[0])
        } else {
            self.add(Node::AnyOf(ids), at)
        }
    }

    fn typed(&mut self, m: &[(String, V)], t: &str, at: &str, depth: usize) -> Result<u32, String> {
        let node = match t {
            "null" => Node::Lit(vec![b"null".to_vec()]),
            "boolean" => Node::Lit(vec![b"true".to_vec(), b"false".to_vec()]),
            "number" => Node::Num { integer: false },
            "integer" => Node::Num { integer: true },
            "string" => {
                let min = count(m, "minLength", at)?.unwrap_or(0);
                let max = count(m, "maxLength", at)?;
                if max.is_some_and(|x| x < min) {
                    return Err(format!("{at}: maxLength is below minLength"));
                }
                Node::Str { min, max }
            }
            "array" => {
                let Some(items) = get(m, "items") else {
                    return Err(format!("{at}: an array schema needs items (a schema)"));
                };
                let min = count(m, "minItems", at)?.unwrap_or(0);
                let max = count(m, "maxItems", at)?;
                if max.is_some_and(|x| x < min) {
                    return Err(format!("{at}: maxItems is below minItems"));
                }
                let items = self.node(items, &format!("{at}.items"), depth + 1)?;
                Node::Arr { items, min, max }
            }
            "object" => {
                match get(m, "additionalProperties") {
                    None | Some(V::Bool(false)) => {}
                    Some(_) => {
                        return Err(format!(
                            "{at}.additionalProperties must be false (only the declared properties are generated)"
                        ))
                    }
                }
                let props: &[(String, V)] = match get(m, "properties") {
                    None => &[],
                    Some(V::Obj(p)) => p,
                    Some(other) => return Err(format!("{at}.properties must be an object, not {}", other.kind())),
                };
                if props.len() > MAX_PROPERTIES {
                    return Err(format!("{at}: {} properties; at most {MAX_PROPERTIES}", props.len()));
                }
                let mut required: Vec<&str> = Vec::new();
                match get(m, "required") {
                    None => {}
                    Some(V::Arr(r)) => {
                        for x in r {
                            let V::Str(s) = x else {
                                return Err(format!("{at}.required must be a list of property names"));
                            };
                            if !props.iter().any(|(k, _)| k == s) {
                                return Err(format!("{at}.required names {s:?}, which is not in properties"));
                            }
                            if !required.contains(&s.as_str()) {
                                required.push(s);
                            }
                        }
                    }
                    Some(_) => return Err(format!("{at}.required must be a list of property names")),
                }
                let mut out = Vec::new();
                for (k, v) in props {
                    let key = serde_json::to_string(k).map_err(|e| e.to_string())?.into_bytes();
                    if key.len() > MAX_LITERAL_BYTES {
                        return Err(format!("{at}: property name longer than {MAX_LITERAL_BYTES} bytes"));
                    }
                    let value = self.node(v, &format!("{at}.properties.{k}"), depth + 1)?;
                    out.push(Prop { key, value, required: required.contains(&k.as_str()) });
                }
                Node::Obj(out)
            }
            other => return Err(format!("{at}.type {other:?} is not a JSON Schema type")),
        };
        self.add(node, at)
    }
}

impl Schema {
    /// Compile a schema given as JSON text; the error says what is wrong or unsupported.
    pub fn compile(text: &str) -> std::result::Result<Schema, String> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(format!("the schema is longer than {MAX_SCHEMA_BYTES} bytes"));
        }
        let v: V = serde_json::from_str(text).map_err(|e| format!("the schema is not valid JSON: {e}"))?;
        let mut c = Compiler { nodes: Vec::new(), first: Vec::new() };
        let root = c.node(&v, "schema", 0)?;
        Ok(Schema { nodes: c.nodes, first: c.first, root })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// `next`: index of the first property that may still come.
    Obj { node: u32, next: u16 },
    /// `count`: elements started.
    Arr { node: u32, count: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// A value of this node starts here.
    Value(u32),
    /// Right after `{`.
    ObjFirst,
    /// After `,` in an object.
    Key,
    /// Inside a property name: `pos` bytes matched; `alive`: the properties
    /// (bits, at most [`MAX_PROPERTIES`]) whose JSON text starts with them.
    KeyLit { alive: u128, pos: u16 },
    /// After a property name: `:`, then a value of the node.
    Colon(u32),
    /// Right after `[`.
    ArrFirst,
    /// After a value inside a container.
    After,
    /// Inside a string: `len` characters so far, `cont` UTF-8 continuation bytes due.
    Str { node: u32, len: u32, cont: u8 },
    Escape { node: u32, len: u32 },
    Hex { node: u32, len: u32, left: u8, d: bool },
    Num { integer: bool, part: NumPart, len: u8 },
    /// Inside one of a node's literals: `pos` bytes matched, shared by the
    /// literals `lo..hi` (the node's literals are sorted).
    Lit { node: u32, lo: u16, hi: u16, pos: u16 },
    Done,
}

/// Where a generation stands in a document of a [`Schema`].
#[derive(Clone, Debug)]
pub struct SchemaState {
    stack: Vec<Frame>,
    lex: Lex,
    ws: usize,
}

/// The literals of `c[lo..hi]` (which share their first `pos` bytes) whose next byte is `b`:
/// a contiguous range found by binary search, so a step costs O(log n) whatever the enum.
fn lit_step(c: &[Vec<u8>], lo: u16, hi: u16, pos: u16, b: u8) -> Option<(u16, u16)> {
    let (lo, pos) = (lo as usize, pos as usize);
    let range = &c[lo..hi as usize];
    // Within the range, a literal that ends at `pos` sorts first, then by the byte at `pos`.
    let key = |x: &Vec<u8>| x.get(pos).map_or(-1, |&v| v as i32);
    let a = range.partition_point(|x| key(x) < b as i32);
    let z = range.partition_point(|x| key(x) <= b as i32);
    (a < z).then(|| ((lo + a) as u16, (lo + z) as u16))
}

/// Whether a literal of `c[lo..hi]` is complete at `pos` bytes (it is the first of the range).
fn lit_exact(c: &[Vec<u8>], lo: u16, pos: u16) -> bool {
    c[lo as usize].len() == pos as usize
}

/// Whether a literal of `c[lo..hi]` goes on after `pos` bytes (then the last one does).
fn lit_extends(c: &[Vec<u8>], hi: u16, pos: u16) -> bool {
    c[hi as usize - 1].len() > pos as usize
}

impl SchemaState {
    pub fn new(schema: &Schema) -> Self {
        SchemaState { stack: Vec::new(), lex: Lex::Value(schema.root), ws: 0 }
    }

    /// Whether the output may end here (a complete document).
    pub fn is_complete(&self, schema: &Schema) -> bool {
        match self.lex {
            Lex::Done => true,
            Lex::Num { part, .. } => self.stack.is_empty() && part.endable(),
            Lex::Lit { node, lo, pos, .. } => {
                self.stack.is_empty() && matches!(&schema.nodes[node as usize], Node::Lit(c) if lit_exact(c, lo, pos))
            }
            _ => false,
        }
    }

    /// Whether `bytes` may follow what was generated so far.
    pub fn accepts(&self, schema: &Schema, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let mut s = self.clone();
        bytes.iter().all(|&b| s.push(schema, b))
    }

    /// Feed a token's bytes for good; false (state unspecified) if they do not fit.
    pub fn advance(&mut self, schema: &Schema, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.push(schema, b))
    }

    fn value_done(&mut self) {
        self.lex = if self.stack.is_empty() { Lex::Done } else { Lex::After };
        self.ws = 0;
    }

    fn close(&mut self) -> bool {
        self.stack.pop();
        self.value_done();
        true
    }

    /// Properties that may come next in the object on top: `next..=` the first required one.
    fn key_range(schema: &Schema, node: u32, next: u16) -> std::ops::Range<usize> {
        let Node::Obj(props) = &schema.nodes[node as usize] else {
            return 0..0;
        };
        let lo = next as usize;
        let hi = props[lo.min(props.len())..].iter().position(|p| p.required).map_or(props.len(), |i| lo + i + 1);
        lo..hi
    }

    fn start_value(&mut self, schema: &Schema, node: u32, b: u8) -> bool {
        match &schema.nodes[node as usize] {
            Node::AnyOf(bs) => match bs.iter().find(|&&x| schema.first[x as usize][b as usize]) {
                Some(&x) => self.start_value(schema, x, b),
                None => false,
            },
            Node::Obj(_) if b == b'{' => {
                self.stack.push(Frame::Obj { node, next: 0 });
                self.lex = Lex::ObjFirst;
                true
            }
            Node::Arr { .. } if b == b'[' => {
                self.stack.push(Frame::Arr { node, count: 0 });
                self.lex = Lex::ArrFirst;
                true
            }
            Node::Str { .. } if b == b'"' => {
                self.lex = Lex::Str { node, len: 0, cont: 0 };
                true
            }
            Node::Num { integer } => {
                let Some(part) = NumPart::start(b) else { return false };
                self.lex = Lex::Num { integer: *integer, part, len: 1 };
                true
            }
            Node::Lit(c) => match lit_step(c, 0, c.len() as u16, 0, b) {
                Some((lo, hi)) => {
                    self.lex = Lex::Lit { node, lo, hi, pos: 1 };
                    if lit_exact(c, lo, 1) && !lit_extends(c, hi, 1) {
                        self.value_done();
                    }
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    fn push(&mut self, schema: &Schema, b: u8) -> bool {
        match self.lex {
            Lex::Str { node, len, cont } => {
                let Node::Str { min, max } = &schema.nodes[node as usize] else {
                    return false;
                };
                let over = |n: u32| max.is_some_and(|m| n > m);
                if cont > 0 {
                    if !(0x80..=0xbf).contains(&b) {
                        return false;
                    }
                    self.lex = Lex::Str { node, len, cont: cont - 1 };
                    return true;
                }
                match b {
                    b'"' => {
                        if len < *min {
                            return false;
                        }
                        self.value_done();
                    }
                    b'\\' => {
                        if over(len + 1) {
                            return false;
                        }
                        self.lex = Lex::Escape { node, len: len + 1 };
                    }
                    0..=0x1f | 0x80..=0xc1 | 0xf5..=0xff => return false,
                    _ => {
                        if over(len + 1) {
                            return false;
                        }
                        let cont = match b {
                            0xc2..=0xdf => 1,
                            0xe0..=0xef => 2,
                            0xf0..=0xf4 => 3,
                            _ => 0,
                        };
                        self.lex = Lex::Str { node, len: len + 1, cont };
                    }
                }
                return true;
            }
            Lex::Escape { node, len } => {
                self.lex = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Lex::Str { node, len, cont: 0 },
                    b'u' => Lex::Hex { node, len, left: 4, d: false },
                    _ => return false,
                };
                return true;
            }
            Lex::Hex { node, len, left, d } => {
                // No surrogate escapes (\uD800-\uDFFF): a lone one is not text, and pairs are written as UTF-8.
                if !b.is_ascii_hexdigit() || (d && !b.is_ascii_digit()) || (d && b >= b'8') {
                    return false;
                }
                self.lex = if left == 1 {
                    Lex::Str { node, len, cont: 0 }
                } else {
                    Lex::Hex { node, len, left: left - 1, d: left == 4 && matches!(b, b'd' | b'D') }
                };
                return true;
            }
            Lex::KeyLit { alive, pos } => {
                let Some(&Frame::Obj { node, .. }) = self.stack.last() else {
                    return false;
                };
                let Node::Obj(props) = &schema.nodes[node as usize] else {
                    return false;
                };
                let p = pos as usize;
                let (mut left, mut m, mut done) = (0u128, alive, None);
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let k = &props[i].key;
                    if k.get(p) == Some(&b) {
                        left |= 1 << i;
                        if k.len() == p + 1 {
                            done = Some(i);
                        }
                    }
                }
                if left == 0 {
                    return false;
                }
                if let Some(i) = done {
                    // Names are quoted (inner quotes escaped), so none is a prefix of another.
                    if let Some(Frame::Obj { next, .. }) = self.stack.last_mut() {
                        *next = i as u16 + 1;
                    }
                    self.lex = Lex::Colon(props[i].value);
                    self.ws = 0;
                } else {
                    self.lex = Lex::KeyLit { alive: left, pos: pos + 1 };
                }
                return true;
            }
            Lex::Lit { node, lo, hi, pos } => {
                let Node::Lit(c) = &schema.nodes[node as usize] else {
                    return false;
                };
                if let Some((a, z)) = lit_step(c, lo, hi, pos, b) {
                    self.lex = Lex::Lit { node, lo: a, hi: z, pos: pos + 1 };
                    if lit_exact(c, a, pos + 1) && !lit_extends(c, z, pos + 1) {
                        self.value_done();
                    }
                    return true;
                }
                // A literal that may also go on (numbers) ends at the first byte that does not continue it.
                if !lit_exact(c, lo, pos) || self.stack.is_empty() {
                    return false;
                }
                self.value_done();
            }
            Lex::Num { integer, part, len } => {
                if let Some(n) = part.next(b, integer) {
                    if len >= if integer { MAX_INTEGER_BYTES } else { MAX_NUMBER_BYTES } {
                        return false;
                    }
                    self.lex = Lex::Num { integer, part: n, len: len + 1 };
                    return true;
                }
                if !part.endable() || self.stack.is_empty() {
                    return false;
                }
                self.value_done();
            }
            _ => {}
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if self.lex == Lex::Done || self.ws >= MAX_WS {
                return false;
            }
            self.ws += 1;
            return true;
        }
        self.ws = 0;
        match self.lex {
            Lex::Value(node) => self.start_value(schema, node, b),
            Lex::ObjFirst | Lex::Key => {
                let Some(&Frame::Obj { node, next }) = self.stack.last() else {
                    return false;
                };
                let range = Self::key_range(schema, node, next);
                match b {
                    b'"' if !range.is_empty() => {
                        // Bits `range.start..range.end` (at most 128 properties, so `end` <= 128).
                        let upto = |n: usize| if n >= 128 { u128::MAX } else { (1u128 << n) - 1 };
                        self.lex = Lex::KeyLit { alive: upto(range.end) & !upto(range.start), pos: 1 };
                        true
                    }
                    b'}' if self.lex == Lex::ObjFirst && !Self::has_required(schema, node, next) => self.close(),
                    _ => false,
                }
            }
            Lex::Colon(node) if b == b':' => {
                self.lex = Lex::Value(node);
                true
            }
            Lex::ArrFirst | Lex::After => {
                let first = self.lex == Lex::ArrFirst;
                match self.stack.last().copied() {
                    Some(Frame::Obj { node, next }) if !first => match b {
                        b',' if (next as usize) < Self::n_props(schema, node) => {
                            self.lex = Lex::Key;
                            true
                        }
                        b'}' if !Self::has_required(schema, node, next) => self.close(),
                        _ => false,
                    },
                    Some(Frame::Arr { node, count }) => {
                        let Node::Arr { items, min, max } = schema.nodes[node as usize] else {
                            return false;
                        };
                        let room = max.is_none_or(|m| count < m);
                        match b {
                            b']' if count >= min => self.close(),
                            b',' if !first && room => {
                                if let Some(Frame::Arr { count, .. }) = self.stack.last_mut() {
                                    *count += 1;
                                }
                                self.lex = Lex::Value(items);
                                true
                            }
                            _ if first && room => {
                                if let Some(Frame::Arr { count, .. }) = self.stack.last_mut() {
                                    *count += 1;
                                }
                                self.start_value(schema, items, b)
                            }
                            _ => false,
                        }
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    fn n_props(schema: &Schema, node: u32) -> usize {
        match &schema.nodes[node as usize] {
            Node::Obj(p) => p.len(),
            _ => 0,
        }
    }

    fn has_required(schema: &Schema, node: u32, next: u16) -> bool {
        match &schema.nodes[node as usize] {
            Node::Obj(p) => p.iter().skip(next as usize).any(|p| p.required),
            _ => false,
        }
    }
}

/// The grammar a generation is held to: any JSON object (`json_object`) or a schema.
#[derive(Clone, Debug)]
pub enum Constraint {
    Json(JsonState),
    Schema(Arc<Schema>, SchemaState),
}

impl Constraint {
    pub fn schema(s: Arc<Schema>) -> Self {
        let st = SchemaState::new(&s);
        Constraint::Schema(s, st)
    }

    pub fn is_complete(&self) -> bool {
        match self {
            Constraint::Json(j) => j.is_complete(),
            Constraint::Schema(s, st) => st.is_complete(s),
        }
    }

    pub fn accepts(&self, bytes: &[u8]) -> bool {
        match self {
            Constraint::Json(j) => !j.is_complete() && j.accepts(bytes),
            Constraint::Schema(s, st) => st.accepts(s, bytes),
        }
    }

    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        match self {
            Constraint::Json(j) => j.advance(bytes),
            Constraint::Schema(s, st) => st.advance(s, bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn compile(v: Value) -> Schema {
        Schema::compile(&v.to_string()).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn full(s: &Schema, doc: &str) -> bool {
        let mut st = SchemaState::new(s);
        st.advance(s, doc.as_bytes()) && st.is_complete(s)
    }

    /// A small validator for the supported subset (as the Python test does).
    fn valid(schema: &Value, v: &Value) -> bool {
        if let Some(bs) = schema.get("anyOf") {
            return bs.as_array().unwrap().iter().any(|b| valid(b, v));
        }
        if let Some(c) = schema.get("const") {
            return c == v;
        }
        if let Some(e) = schema.get("enum") {
            return e.as_array().unwrap().contains(v);
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => vec!["object"],
        };
        types.iter().any(|t| match (*t, v) {
            ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("number", Value::Number(_)) => true,
            // `-0` is read as a float by serde_json, an integer by JSON Schema.
            ("integer", Value::Number(n)) => n.as_f64().is_some_and(|f| f.fract() == 0.0),
            ("string", Value::String(s)) => {
                let n = s.chars().count() as u64;
                schema.get("maxLength").and_then(Value::as_u64).is_none_or(|m| n <= m)
                    && schema.get("minLength").and_then(Value::as_u64).is_none_or(|m| n >= m)
            }
            ("array", Value::Array(a)) => {
                let n = a.len() as u64;
                schema.get("maxItems").and_then(Value::as_u64).is_none_or(|m| n <= m)
                    && schema.get("minItems").and_then(Value::as_u64).is_none_or(|m| n >= m)
                    && a.iter().all(|x| valid(&schema["items"], x))
            }
            ("object", Value::Object(o)) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let req = schema.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
                req.iter().all(|r| o.contains_key(r.as_str().unwrap()))
                    && o.iter().all(|(k, x)| props.and_then(|p| p.get(k)).is_some_and(|ps| valid(ps, x)))
            }
            _ => false,
        })
    }

    /// Schema text in declared order (`json!` would sort the properties).
    const VERDICT: &str = r#"{"type": "object", "properties": {
        "verdict": {"type": "string", "enum": ["normal", "abnormal"]},
        "reason": {"type": "string", "maxLength": 40},
        "score": {"type": "number"},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "extra": {"type": ["string", "null"]},
        "ok": {"type": "boolean"},
        "nested": {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]}
    }, "required": ["verdict", "reason", "tags"], "additionalProperties": false}"#;

    fn verdict() -> Value {
        serde_json::from_str(VERDICT).unwrap()
    }

    #[test]
    fn valid_documents_are_recognised_and_validate() {
        let sv = verdict();
        let s = Schema::compile(VERDICT).unwrap();
        for doc in [
            r#"{"verdict": "normal", "reason": "fine", "tags": ["a"]}"#,
            r#"{"verdict":"abnormal","reason":"d\u00e9j\u00e0 \"vu\"","score":-1.5e3,"count":0,"tags":["x","y","z"],"extra":null,"ok":true,"nested":{"a":1}}"#,
            "{\n  \"verdict\": \"normal\",\n  \"reason\": \"é\",\n  \"tags\": [ \"t\" ],\n  \"extra\": \"s\"\n}",
        ] {
            assert!(full(&s, doc), "{doc}");
            let v: Value = serde_json::from_str(doc).unwrap();
            assert!(valid(&sv, &v), "{doc}");
        }
    }

    #[test]
    fn documents_outside_the_schema_are_refused() {
        let s = Schema::compile(VERDICT).unwrap();
        for bad in [
            r#"{"reason": "x", "verdict": "normal", "tags": ["a"]}"#, // declared order
            r#"{"verdict": "fine", "reason": "x", "tags": ["a"]}"#,   // enum
            r#"{"verdict": "normal", "tags": ["a"]}"#,                // required reason
            r#"{"verdict": "normal", "reason": "x", "tags": []}"#,    // minItems
            r#"{"verdict": "normal", "reason": "x", "tags": ["a","b","c","d"]}"#, // maxItems
            r#"{"verdict": "normal", "reason": "x", "tags": ["a"], "count": 1.5}"#, // integer
            r#"{"verdict": "normal", "reason": "x", "tags": ["a"], "zzz": 1}"#, // additional
            r#"{"verdict": "normal", "reason": "0123456789012345678901234567890123456789x", "tags": ["a"]}"#,
            r#"{"verdict": "normal", "reason": "x", "tags": ["a"], "nested": {"a": 2}}"#,
            r#"{"verdict": "normal", "reason": "x", "tags": ["a"], "ok": 1}"#,
            r#"{"verdict": "normal", "reason": "x", "tags": ["a"]} "#,
            r#"["normal"]"#,
        ] {
            assert!(!full(&s, bad), "{bad}");
        }
        // Invalid UTF-8 in a string.
        let mut st = SchemaState::new(&s);
        assert!(st.advance(&s, br#"{"verdict": "normal", "reason": ""#));
        assert!(!st.accepts(&s, &[0xff]) && !st.accepts(&s, &[0x80]) && !st.accepts(&s, &[0xc3, b'a']));
        assert!(st.accepts(&s, &[0xc3]) && st.accepts(&s, "é".as_bytes()));
        // Whitespace is capped.
        let mut st = SchemaState::new(&s);
        assert!(st.advance(&s, b"{"));
        assert!(st.accepts(&s, &[b' '; MAX_WS]) && !st.accepts(&s, &[b' '; MAX_WS + 1]));
    }

    #[test]
    fn prefixes_extend_and_greedy_completion_always_validates() {
        // From every accepted prefix, a deterministic walk over a small byte
        // alphabet finishes a document, which then parses and validates.
        let schemas = [
            verdict(),
            json!({"type": "array", "items": {"type": "integer"}, "maxItems": 2}),
            json!({"anyOf": [{"type": "object", "properties": {"x": {"type": "null"}}}, {"type": "string", "maxLength": 2}]}),
            json!({"enum": [1, 12, "a", null, 1.5]}),
            json!({"type": "number"}),
            json!({"type": "object", "properties": {"o": {"type": "string"}, "p": {"type": "boolean"}}}),
        ];
        let mut alphabet: Vec<u8> = br#"{}[]",:. -0129\"#.to_vec();
        alphabet.extend(b'a'..=b'z');
        for sv in schemas {
            let s = Schema::compile(&sv.to_string()).unwrap();
            // Explore: a bounded DFS choosing bytes in a rotating order; each branch must finish.
            for seed in 0..40usize {
                let mut st = SchemaState::new(&s);
                let mut out = Vec::new();
                let mut steps = 0;
                while !st.is_complete(&s) && steps < 400 {
                    // Prefer closing bytes after a while, so the walk ends.
                    let order: Vec<u8> = if steps > 30 {
                        let mut o: Vec<u8> = br#""]}0,:n"#.to_vec();
                        o.extend(&alphabet);
                        o
                    } else {
                        alphabet.iter().cycle().skip((seed * 7 + steps * 3) % alphabet.len()).take(alphabet.len()).copied().collect()
                    };
                    let Some(&b) = order.iter().find(|&&b| st.accepts(&s, &[b])) else {
                        panic!("{sv}: dead end after {:?}", String::from_utf8_lossy(&out));
                    };
                    assert!(st.advance(&s, &[b]));
                    out.push(b);
                    steps += 1;
                }
                assert!(st.is_complete(&s), "{sv}: unfinished {:?}", String::from_utf8_lossy(&out));
                let text = String::from_utf8(out).unwrap();
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sv}: {text:?}: {e}"));
                assert!(valid(&sv, &v), "{sv}: {text}");
            }
        }
    }

    #[test]
    fn literals_and_numbers() {
        let s = compile(json!({"type": "array", "items": {"enum": [1, 12, "a b", true]}}));
        assert!(full(&s, r#"[1, 12,"a b",true]"#));
        assert!(!full(&s, "[123]") && !full(&s, "[2]") && !full(&s, r#"["a"]"#));
        // A large enum with a long shared prefix, and the most properties an object may have.
        let vals: Vec<String> = (0..MAX_ENUM).map(|i| format!("{}{i}", "x".repeat(200))).collect();
        let s = compile(json!({"enum": vals}));
        assert!(full(&s, &format!("\"{}\"", vals[117])) && !full(&s, &format!("\"{}\"", "x".repeat(200))));
        assert!(full(&s, &format!("\"{}\"", vals[3])) && !full(&s, &format!("\"{}3x\"", "x".repeat(200))));
        let props: String = (0..MAX_PROPERTIES).map(|i| format!(r#""p{i}": {{"type": "null"}}"#)).collect::<Vec<_>>().join(",");
        let s = Schema::compile(&format!(r#"{{"type": "object", "properties": {{{props}}}, "required": ["p100"]}}"#)).unwrap();
        assert!(full(&s, r#"{"p100": null, "p127": null}"#) && full(&s, r#"{"p1": null, "p12": null, "p100": null}"#));
        assert!(!full(&s, r#"{"p127": null}"#) && !full(&s, r#"{"p12": null, "p1": null, "p100": null}"#));
        let s = compile(json!({"type": "integer"}));
        assert!(full(&s, "-120") && !full(&s, "1.5") && !full(&s, "01"));
        let mut st = SchemaState::new(&s);
        assert!(st.advance(&s, b"1") && st.is_complete(&s));
        assert!(!st.accepts(&s, &[b'1'; MAX_INTEGER_BYTES as usize]), "numbers are capped");
        let s = compile(json!({"type": "string", "minLength": 2, "maxLength": 3}));
        assert!(!full(&s, r#""\ud800x""#) && full(&s, r#""\ud7ffx""#));
        assert!(full(&s, r#""ab""#) && full(&s, r#""\n\u0041c""#) && !full(&s, r#""a""#) && !full(&s, r#""abcd""#));
    }

    #[test]
    fn bad_or_unsupported_schemas_are_refused_with_a_reason() {
        for (bad, why) in [
            (json!("string"), "must be an object"),
            (json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}), "pattern"),
            (json!({"type": "strin"}), "not a JSON Schema type"),
            (json!({"type": "object", "required": ["b"], "properties": {"a": {"type": "null"}}}), "not in properties"),
            (json!({"type": "object", "additionalProperties": true}), "additionalProperties"),
            (json!({"type": "array"}), "needs items"),
            (json!({"type": "array", "items": {"type": "null"}, "minItems": 3, "maxItems": 2}), "below"),
            (json!({"enum": []}), "empty"),
            (json!({"enum": [[1]]}), "values must be"),
            (json!({"type": "string", "enum": [1]}), "not of type"),
            (json!({"anyOf": [{"type": "string"}, {"enum": ["a"]}]}), "start differently"),
            (json!({"$ref": "#/x"}), "$ref"),
            (json!({}), "needs a type"),
            (json!({"type": "string", "maxLength": -1}), "integer"),
        ] {
            let e = Schema::compile(&bad.to_string()).expect_err(&bad.to_string());
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(Schema::compile("{").unwrap_err().contains("not valid JSON"));
        assert!(Schema::compile(r#"{"type": "null", "type": "string"}"#).unwrap_err().contains("duplicate"));
        // Bounded work.
        let mut deep = json!({"type": "null"});
        for _ in 0..MAX_SCHEMA_DEPTH + 2 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(Schema::compile(&deep.to_string()).unwrap_err().contains("deeper"));
        let many: serde_json::Map<String, Value> =
            (0..MAX_PROPERTIES + 1).map(|i| (format!("p{i}"), json!({"type": "null"}))).collect();
        assert!(Schema::compile(&json!({"type": "object", "properties": many}).to_string()).is_err());
        let big: Vec<Value> = (0..MAX_ENUM + 1).map(|i| json!(i)).collect();
        assert!(Schema::compile(&json!({"enum": big}).to_string()).is_err());
        assert!(Schema::compile(&" ".repeat(MAX_SCHEMA_BYTES + 1)).unwrap_err().contains("longer"));
    }

    #[test]
    fn declared_order_is_kept() {
        let s = Schema::compile(r#"{"type":"object","properties":{"z":{"type":"null"},"a":{"type":"null"}},"required":["z","a"]}"#).unwrap();
        assert!(full(&s, r#"{"z":null,"a":null}"#) && !full(&s, r#"{"a":null,"z":null}"#));
        let s = Schema::compile(r#"{"type":"object","properties":{"z":{"type":"null"},"a":{"type":"null"}}}"#).unwrap();
        assert!(full(&s, "{}") && full(&s, r#"{"a":null}"#) && full(&s, r#"{"z":null}"#) && !full(&s, r#"{"z":null,}"#));
    }
}
