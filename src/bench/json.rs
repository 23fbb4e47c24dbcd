//! The one JSON object `surgemq bench --json` prints, written by hand: a flat object of
//! numbers, a few strings and lists needs no serde.

use std::fmt::Write as _;

/// A JSON object being written, key by key.
#[derive(Default)]
pub(super) struct JsonObject(String);

impl JsonObject {
    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        escape_into(&mut self.0, k);
        self.0.push(':');
    }
    pub(super) fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.0.push_str(v);
    }
    pub(super) fn num(&mut self, k: &str, v: f64) {
        // JSON has no NaN or infinity.
        let text = if !v.is_finite() {
            "null".to_string()
        } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
            format!("{}", v as i64)
        } else {
            format!("{v:.3}")
        };
        self.raw(k, &text);
    }
    pub(super) fn opt(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.raw(k, "null"),
        }
    }
    pub(super) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape_into(&mut self.0, v);
    }
    pub(super) fn nums(&mut self, k: &str, v: &[u64]) {
        self.key(k);
        let items: Vec<String> = v.iter().map(u64::to_string).collect();
        let _ = write!(self.0, "[{}]", items.join(","));
    }
    pub(super) fn strs(&mut self, k: &str, v: &[String]) {
        self.key(k);
        self.0.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            escape_into(&mut self.0, s);
        }
        self.0.push(']');
    }
    pub(super) fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
