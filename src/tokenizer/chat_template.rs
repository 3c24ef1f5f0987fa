//! Chat templates, rendered by minijinja with the HF conventions
//! (`trim_blocks`, `lstrip_blocks`, Python string methods via minijinja-contrib
//! `pycompat`, `raise_exception`, `strftime_now`, a Python-style `tojson`;
//! `transformers`' `apply_chat_template`). A model without a template falls
//! back to ChatML. [`Tokenizer::encode_chat`] parses the template's markup as
//! special tokens but never the message contents.
//!
//! The template comes from the model file, i.e. from whoever made it, so it
//! runs under [`ChatTemplateLimits`]: minijinja fuel (instructions), recursion
//! depth, the size of every string it builds and of its output, and a check
//! for Ctrl-C; over a limit is `Error::Tokenizer`.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::template_limits::{self, ChatTemplateLimits};
use super::{tok_err, ChatMessage, Inner, Tokenizer};
use crate::error::Result;

/// ChatML, used when the model ships no chat template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub(super) const TEMPLATE_NAME: &str = "chat";

pub(super) struct ChatTemplate {
    /// `Err(msg)`: the model's template failed to compile; reported on use.
    pub(super) env: std::result::Result<minijinja::Environment<'static>, String>,
    pub(super) from_model: bool,
    pub(super) limits: ChatTemplateLimits,
}

impl Tokenizer {
    /// Replace the chat template (e.g. a user-supplied one). A template that does
    /// not compile gives `Error::Tokenizer`.
    pub fn with_chat_template(&self, template: &str) -> Result<Self> {
        self.with_template(template, self.inner.chat.limits, true)
    }

    /// The same tokenizer whose chat template runs under other limits.
    pub fn with_chat_template_limits(&self, limits: ChatTemplateLimits) -> Result<Self> {
        let c = &self.inner.chat;
        match (&c.env, c.from_model) {
            (Ok(env), from_model) => {
                let src = env.get_template(TEMPLATE_NAME).map(|t| t.source().to_string()).map_err(tok_err)?;
                self.with_template(&src, limits, from_model)
            }
            (Err(msg), _) => Err(tok_err(format!("invalid chat template: {msg}"))),
        }
    }

    fn with_template(&self, template: &str, limits: ChatTemplateLimits, from_model: bool) -> Result<Self> {
        let env = build_env(template, &limits).map_err(tok_err)?;
        let old = &self.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                tk: old.tk.clone(),
                pieces: old.pieces.clone(),
                kinds: old.kinds.clone(),
                split_tokens: old.split_tokens.clone(),
                bos: old.bos,
                eos: old.eos,
                eog: old.eog.clone(),
                add_bos: old.add_bos,
                bos_text: old.bos_text.clone(),
                eos_text: old.eos_text.clone(),
                chat: ChatTemplate { env: Ok(env), from_model, limits },
            }),
        })
    }

    // -----------------------------------------------------------------------
    // chat

    fn render_values(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let env = match &self.inner.chat.env {
            Ok(env) => env,
            Err(msg) => return Err(tok_err(format!("invalid chat template: {msg}"))),
        };
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| tok_err(format!("invalid chat template: {e}")))?;
        let ctx = minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.inner.bos_text.as_str(),
            eos_token => self.inner.eos_text.as_str(),
            tools => minijinja::Value::from(()),
        };
        let input_bytes = messages.iter().map(|m| m.role.len() + m.content.len()).sum::<usize>()
            + self.inner.bos_text.len()
            + self.inner.eos_text.len();
        // The template as compiled, with its growing operations checked (template_limits.rs).
        let compiled = minijinja::machinery::get_compiled_template(&tmpl);
        let instructions = template_limits::rewrite(&compiled.instructions);
        let blocks: BTreeMap<_, _> = compiled.blocks.iter().map(|(k, v)| (*k, template_limits::rewrite(v))).collect();
        let mut text = String::new();
        let rendered = template_limits::with_budget(&self.inner.chat.limits, input_bytes, || {
            let mut out = minijinja::machinery::make_string_output(&mut text);
            minijinja::machinery::Vm::new(env)
                .eval(&instructions, ctx, &blocks, &mut out, compiled.initial_auto_escape)
                .map(|_| ())
        });
        match rendered {
            Ok(()) => Ok(text),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(tok_err(format!(
                "chat template rendering failed: chat template limit exceeded: more than {} template instructions",
                self.inner.chat.limits.fuel
            ))),
            Err(e) => Err(tok_err(format!("chat template rendering failed: {}", describe_jinja_error(&e)))),
        }
    }

    /// Render the chat prompt as text.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_values(messages, add_generation_prompt)
    }

    /// Render and tokenize a chat prompt: the template's markup is parsed for
    /// special tokens, the message contents never are. Without special-token text
    /// in the contents the ids equal llama.cpp tokenizing the rendered prompt with
    /// `special=true`. A BOS is prepended when [`Tokenizer::add_bos`] and the
    /// prompt does not already start with it.
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let real = self.render_values(messages, add_generation_prompt)?;
        // Render again with sentinels in place of the contents, to learn where they go.
        let sentinel = |i: usize| format!("\u{F8F0}LOGLM{i}\u{F8F1}");
        let masked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage { role: m.role.clone(), content: sentinel(i) })
            .collect();
        let layout = self.render_values(&masked, add_generation_prompt)?;
        let mut rebuilt = String::with_capacity(real.len());
        let mut ranges = Vec::new();
        let mut rest = layout.as_str();
        while let Some(p) = rest.find("\u{F8F0}LOGLM") {
            rebuilt.push_str(&rest[..p]);
            let after = &rest[p + "\u{F8F0}LOGLM".len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let idx: Option<usize> = after[..digits].parse().ok();
            let closed = after[digits..].starts_with('\u{F8F1}');
            match (idx, closed) {
                (Some(i), true) if i < messages.len() => {
                    let s = rebuilt.len();
                    rebuilt.push_str(&messages[i].content);
                    ranges.push((s, rebuilt.len()));
                    rest = &after[digits + '\u{F8F1}'.len_utf8()..];
                }
                _ => {
                    rebuilt.push_str(&rest[p..p + '\u{F8F0}'.len_utf8()]);
                    rest = &rest[p + '\u{F8F0}'.len_utf8()..];
                }
            }
        }
        rebuilt.push_str(rest);

        let mut ids = Vec::new();
        if rebuilt == real {
            self.encode_into(&real, true, &ranges, &mut ids)?;
        } else {
            // The template transforms contents; we cannot tell markup from content.
            let injected = messages.iter().any(|m| {
                self.inner.split_tokens.iter().any(|(t, _, ctl)| *ctl && m.content.contains(t.as_str()))
            });
            if injected {
                return Err(tok_err(
                    "a chat message contains special-token text and the chat template rewrites message contents, \
                     so it cannot be encoded safely",
                ));
            }
            self.encode_into(&real, true, &[], &mut ids)?;
        }
        if let (true, Some(b)) = (self.inner.add_bos, self.inner.bos) {
            if ids.first() != Some(&b) {
                ids.insert(0, b);
            }
        }
        Ok(ids)
    }
}

// ---------------------------------------------------------------------------
// chat template environment

impl ChatTemplate {
    pub(super) fn new(source: Option<&str>) -> Self {
        match source {
            Some(src) if !src.trim().is_empty() => {
                let limits = ChatTemplateLimits::default();
                ChatTemplate { env: build_env(src, &limits), from_model: true, limits }
            }
            _ => {
                let limits = ChatTemplateLimits::default();
                ChatTemplate { env: build_env(CHATML_TEMPLATE, &limits), from_model: false, limits }
            }
        }
    }
}

fn describe_jinja_error(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn build_env(source: &str, limits: &ChatTemplateLimits) -> std::result::Result<minijinja::Environment<'static>, String> {
    use minijinja::{Environment, ErrorKind, Value};
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    template_limits::install(&mut env, limits);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
    });
    env.add_function("strftime_now", |fmt: String| -> String { strftime_now(&fmt) });
    env.add_filter("tojson", tojson_filter);
    env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(|e| describe_jinja_error(&e))?;
    Ok(env)
}

/// Python `json.dumps(x, ensure_ascii=False, indent=indent)` as HF's `tojson`.
fn tojson_filter(value: minijinja::Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<i64> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent.map(|i| i.clamp(0, 64) as usize), 0, &mut out)?;
    Ok(out)
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(v: &minijinja::Value, indent: Option<usize>, depth: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    template_limits::check_output_len(out.len(), "tojson")?;
    if depth > 128 {
        return Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, "tojson: nesting too deep"));
    }
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                out.push_str(&i.to_string());
            } else if let Ok(f) = f64::try_from(v.clone()) {
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else if f.is_finite() {
                    out.push_str(&f.to_string());
                } else {
                    out.push_str(if f.is_nan() { "NaN" } else if f > 0.0 { "Infinity" } else { "-Infinity" });
                }
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => write_json_str(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<minijinja::Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<minijinja::Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                match k.as_str() {
                    Some(s) => write_json_str(s, out),
                    None => write_json_str(&k.to_string(), out),
                }
                out.push_str(": ");
                let val = v.get_item(k)?;
                write_json(&val, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => write_json_str(&v.to_string(), out),
    }
    Ok(())
}

/// Minimal `strftime` over the current UTC time (HF's `strftime_now`).
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_time(secs, fmt)
}

pub(super) fn format_time(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let month = MONTHS[(m - 1) as usize];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match it.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o)
                }
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", (tod / 60) % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o)
            }
            None => out.push('%'),
        }
    }
    out
}
