//! The limits a chat template runs under. A template comes from the model file,
//! i.e. from whoever made it: nested loops must not hang the process and a
//! string doubled forty times must not abort it on a failed allocation.
//!
//! minijinja bounds instructions (`fuel`) and recursion itself, but it grows
//! strings and lists without bound. So the compiled template is rewritten
//! before it runs (`unstable_machinery`: the instruction list is public there;
//! pinned by `Cargo.lock`): `~`, `+` and `*` become calls to checked functions
//! that refuse a result over the byte / item budget *before* building it, and
//! literal text is emitted through the formatter, which counts every byte of
//! output (captured `{% set %}` blocks and macro bodies included). The
//! built-in filters and Python string methods that can grow their input
//! (`join`, `replace`, `indent`, `batch`, `format`, `tojson`...) are
//! wrapped the same way: arguments are sized first, then the original runs.
//!
//! The budget scales with the input (`base + per_input_byte * message bytes`), so
//! a long log in a message is never refused for its own length.
use std::cell::Cell;
use std::sync::LazyLock;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};

/// What a chat template may use per render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTemplateLimits {
    /// minijinja instructions (its `fuel`). Real templates use a few thousand.
    pub fuel: u64,
    /// Nesting of macro calls, loops and includes.
    pub recursion: usize,
    /// Bytes any string, and the whole output, may reach: `base_bytes +
    /// bytes_per_input_byte * (bytes of the messages)`.
    pub base_bytes: usize,
    pub bytes_per_input_byte: usize,
    /// Items a list built by `+` / `*` / `batch` may hold, and the largest
    /// number a filter argument (a width, a count) may be.
    pub max_items: usize,
}

impl Default for ChatTemplateLimits {
    fn default() -> Self {
        ChatTemplateLimits {
            fuel: 5_000_000,
            recursion: 48,
            base_bytes: 16 << 20,
            bytes_per_input_byte: 8,
            max_items: 1 << 20,
        }
    }
}

thread_local! {
    /// (byte budget, bytes emitted so far, item budget) of the render running on this thread.
    static BUDGET: Cell<(usize, usize, usize)> = const { Cell::new((usize::MAX, 0, usize::MAX)) };
}

/// Runs `f` with the budget of a render whose messages hold `input_bytes`.
pub(super) fn with_budget<T>(limits: &ChatTemplateLimits, input_bytes: usize, f: impl FnOnce() -> T) -> T {
    let bytes = limits.base_bytes.saturating_add(limits.bytes_per_input_byte.saturating_mul(input_bytes));
    let saved = BUDGET.with(|b| b.replace((bytes, 0, limits.max_items)));
    let out = f();
    BUDGET.with(|b| b.set(saved));
    out
}

fn byte_budget() -> usize {
    BUDGET.with(|b| b.get().0)
}

fn item_budget() -> usize {
    BUDGET.with(|b| b.get().2)
}

fn over(what: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("chat template limit exceeded: {what}"))
}

/// Bytes `v` takes when formatted, or `None` once that passes `limit`. Walks a
/// list without formatting it, stopping as soon as the sum is over.
fn size_of(v: &Value, limit: usize) -> Option<usize> {
    fn walk(v: &Value, limit: usize, depth: usize, acc: &mut usize) -> bool {
        if depth > 64 {
            return false;
        }
        match v.kind() {
            ValueKind::String => *acc = acc.saturating_add(v.as_str().map_or(0, str::len) + 2),
            ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
                let is_map = v.kind() == ValueKind::Map;
                let Ok(iter) = v.try_iter() else { return true };
                for item in iter {
                    *acc = acc.saturating_add(2);
                    if !walk(&item, limit, depth + 1, acc) {
                        return false;
                    }
                    if is_map {
                        if let Ok(val) = v.get_item(&item) {
                            if !walk(&val, limit, depth + 1, acc) {
                                return false;
                            }
                        }
                    }
                    if *acc > limit {
                        return false;
                    }
                }
                *acc = acc.saturating_add(2);
            }
            _ => *acc = acc.saturating_add(24),
        }
        *acc <= limit
    }
    let mut acc = 0;
    walk(v, limit, 0, &mut acc).then_some(acc)
}

fn check_size(v: &Value, what: &str) -> Result<usize, Error> {
    let limit = byte_budget();
    size_of(v, limit).ok_or_else(|| over(&format!("{what} would exceed {limit} bytes")))
}

fn check_sum(parts: &[usize], what: &str) -> Result<(), Error> {
    let limit = byte_budget();
    let total = parts.iter().fold(0usize, |a, &b| a.saturating_add(b));
    if total > limit {
        return Err(over(&format!("{what} would make a string of {total} bytes (at most {limit})")));
    }
    Ok(())
}

/// For filters that build their output piecewise (`tojson`): `Err` once
/// `len` bytes pass the budget.
pub(super) fn check_output_len(len: usize, what: &str) -> Result<(), Error> {
    check_sum(&[len], what)
}

fn seq_len(v: &Value) -> Option<usize> {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable).then(|| v.len()).flatten()
}

fn int_of(v: &Value) -> Option<i128> {
    i128::try_from(v.clone()).ok()
}

/// A pristine environment whose operators and built-in filters the checked
/// wrappers hand over to once the arguments are sized.
static BUILTINS: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env
});

fn eval_builtin(expr: &str, ctx: Value) -> Result<Value, Error> {
    BUILTINS.compile_expression(expr)?.eval(ctx)
}

const CONCAT: &str = "__loglm_checked_concat";
const ADD: &str = "__loglm_checked_add";
const MUL: &str = "__loglm_checked_mul";

fn checked_concat(a: Value, b: Value) -> Result<Value, Error> {
    let (x, y) = (check_size(&a, "'~'")?, check_size(&b, "'~'")?);
    check_sum(&[x, y], "'~'")?;
    Ok(Value::from(format!("{a}{b}")))
}

fn checked_add(a: Value, b: Value) -> Result<Value, Error> {
    if let (Some(x), Some(y)) = (seq_len(&a), seq_len(&b)) {
        if x.saturating_add(y) > item_budget() {
            return Err(over("'+' would build a list that is too long"));
        }
    } else if a.kind() == ValueKind::String || b.kind() == ValueKind::String {
        let (x, y) = (check_size(&a, "'+'")?, check_size(&b, "'+'")?);
        check_sum(&[x, y], "'+'")?;
    }
    eval_builtin("a + b", minijinja::context! { a, b })
}

fn checked_mul(a: Value, b: Value) -> Result<Value, Error> {
    for (x, n) in [(&a, &b), (&b, &a)] {
        let Some(n) = int_of(n) else { continue };
        let n = n.clamp(0, usize::MAX as i128) as usize;
        if let Some(len) = seq_len(x) {
            if len.saturating_mul(n) > item_budget() {
                return Err(over("'*' would build a list that is too long"));
            }
        } else if x.kind() == ValueKind::String {
            let len = x.as_str().map_or(0, str::len);
            check_sum(&[len.saturating_mul(n)], "'*'")?;
        }
    }
    eval_builtin("a * b", minijinja::context! { a, b })
}

/// Built-in filters that can make their output much larger than their input.
const GROWING_FILTERS: &[&str] =
    &["join", "replace", "indent", "batch", "slice", "format", "sum", "string", "list", "pprint", "dictsort", "items"];

/// Size every argument; integers (widths, counts) must not pass the item budget.
fn check_args(name: &str, args: &[Value]) -> Result<Vec<usize>, Error> {
    let mut sizes = Vec::with_capacity(args.len());
    for a in args {
        if let Some(n) = int_of(a) {
            if n.unsigned_abs() > item_budget() as u128 {
                return Err(over(&format!("{name}: the argument {n} is too large")));
            }
        }
        sizes.push(check_size(a, name)?);
    }
    Ok(sizes)
}

/// The result size of `s.replace(from, to)` (counts the matches first).
fn replace_size(s: &Value, from: &Value, to: &Value) -> Result<(), Error> {
    if let (Some(s), Some(from), Some(to)) = (s.as_str(), from.as_str(), to.as_str()) {
        let n = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from).count() };
        check_sum(&[s.len(), n.saturating_mul(to.len())], "replace")?;
    }
    Ok(())
}

/// `format` specs may hold a width: refuse absurd ones before they allocate.
fn check_format_spec(fmt: &Value) -> Result<(), Error> {
    if let Some(s) = fmt.as_str() {
        let mut run = 0;
        for c in s.chars() {
            run = if c.is_ascii_digit() { run + 1 } else { 0 };
            if run > 6 {
                return Err(over("format: a width of more than six digits"));
            }
        }
    }
    Ok(())
}

/// `name` sized first, then the built-in run. `args` holds the keyword
/// arguments too (as the last value, a `Kwargs` map: splatting it back keeps it
/// a keyword argument).
fn checked_filter(name: &'static str) -> impl Fn(&State, Value, Rest<Value>) -> Result<Value, Error> {
    move |_state: &State, value: Value, args: Rest<Value>| {
        let mut all = vec![value.clone()];
        all.extend(args.iter().cloned());
        let sizes = check_args(name, &all)?;
        match name {
            "replace" if args.len() >= 2 => replace_size(&value, &args[0], &args[1])?,
            "join" => {
                let n = seq_len(&value).unwrap_or(0);
                let sep = args.first().map_or(0, |s| s.as_str().map_or(0, str::len));
                check_sum(&[sizes[0], n.saturating_mul(sep)], "join")?;
            }
            "indent" => {
                let width = args.first().and_then(int_of).unwrap_or(0).max(0) as usize;
                let lines = value.as_str().map_or(1, |s| s.lines().count() + 1);
                check_sum(&[sizes[0], lines.saturating_mul(width)], name)?;
            }
            "format" => check_format_spec(&value)?,
            _ => {}
        }
        let ctx = minijinja::context! { v => value, args => Value::from(args.0) };
        eval_builtin(&format!("v|{name}(*args)"), ctx)
    }
}

/// pycompat's Python string methods, with `join`, `replace` and `format` sized
/// first (every argument is sized, integers bounded).
fn checked_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    let mut all = vec![value.clone()];
    all.extend(args.iter().cloned());
    let sizes = check_args(method, &all)?;
    match method {
        "replace" if args.len() >= 2 => replace_size(value, &args[0], &args[1])?,
        "join" => {
            let arg = args.first().cloned().unwrap_or_default();
            let n = seq_len(&arg).unwrap_or(0);
            check_sum(&[sizes.get(1).copied().unwrap_or(0), n.saturating_mul(sizes[0])], "join")?;
        }
        "format" => check_format_spec(value)?,
        _ => {}
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Install the checked operators, filters, methods and the counting
/// formatter, and the fuel / recursion limits, into `env`.
pub(super) fn install(env: &mut Environment<'static>, limits: &ChatTemplateLimits) {
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.add_function(CONCAT, checked_concat);
    env.add_function(ADD, checked_add);
    env.add_function(MUL, checked_mul);
    for &name in GROWING_FILTERS {
        env.add_filter(name, checked_filter(name));
    }
    env.set_unknown_method_callback(checked_method);
    env.set_formatter(|out, state, value| {
        let n = match value.as_str() {
            Some(s) => s.len(),
            None => check_size(value, "output")?,
        };
        let (limit, used, items) = BUDGET.with(Cell::get);
        let used = used.saturating_add(n);
        if used > limit {
            return Err(over(&format!("the rendered prompt would exceed {limit} bytes")));
        }
        BUDGET.with(|b| b.set((limit, used, items)));
        minijinja::escape_formatter(out, state, value)
    });
}

/// A copy of `old` where `~`, `+`, `*` call the checked functions and literal
/// text goes through the (counting) formatter; jump targets are renumbered.
pub(super) fn rewrite<'s>(old: &Instructions<'s>) -> Instructions<'s> {
    let mut new = Instructions::new(old.name(), old.source());
    let n = old.len() as u32;
    let mut map: Vec<u32> = Vec::with_capacity(old.len() + 1);
    for i in 0..n {
        map.push(new.len() as u32);
        let Some(ins) = old.get(i) else { break };
        let span = old.get_span(i);
        let line = old.get_line(i);
        let mut push = |ins: Instruction<'s>| match (span, line) {
            (Some(s), _) => new.add_with_span(ins, s),
            (None, Some(l)) => new.add_with_line(ins, l.min(u16::MAX as usize) as u16),
            (None, None) => new.add(ins),
        };
        match ins {
            Instruction::EmitRaw(s) => {
                push(Instruction::LoadConst(Value::from(*s)));
                push(Instruction::Emit);
            }
            Instruction::StringConcat => {
                push(Instruction::CallFunction(CONCAT, Some(2)));
            }
            Instruction::Add => {
                push(Instruction::CallFunction(ADD, Some(2)));
            }
            Instruction::Mul => {
                push(Instruction::CallFunction(MUL, Some(2)));
            }
            other => {
                push(other.clone());
            }
        }
    }
    map.push(new.len() as u32);
    let remap = |t: &mut u32| *t = map.get(*t as usize).copied().unwrap_or(*t);
    for j in 0..new.len() as u32 {
        match new.get_mut(j) {
            Some(
                Instruction::Jump(t)
                | Instruction::JumpIfFalse(t)
                | Instruction::JumpIfFalseOrPop(t)
                | Instruction::JumpIfTrueOrPop(t)
                | Instruction::Iterate(t)
                | Instruction::BuildMacro(_, t, _),
            ) => remap(t),
            _ => {}
        }
    }
    new
}
