//! CometBFT's exact JSON: a response compared with a real CometBFT v0.38 node's answer to the
//! same call (`tests/data/cometbft-rpc-v0.38/`, captured by tendermint-rs), key by key and type
//! by type. Values differ between chains; what must not differ is what a strict client parses:
//! which keys exist, strings vs numbers vs booleans, `null` vs an empty object, and how a
//! string encodes its value (a decimal number, upper-case hex, base64, an RFC 3339 time).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// How a string encodes its value, where that can be told from the value.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Encoding {
    Decimal,
    UpperHex,
    Base64,
    Time,
    /// Anything else (free text, or too short to tell).
    Text,
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && s.ends_with('Z')
        && b[..4].iter().all(u8::is_ascii_digit)
}

/// The encoding of `s`. Upper-case hex needs 16 characters or more (a hash, an address, an
/// app hash); base64 a padding `=` or a character hex and decimal lack.
pub fn encoding(s: &str) -> Encoding {
    let digits = s.bytes().all(|c| c.is_ascii_digit());
    if s.is_empty() || (digits && s.len() >= 16) {
        // Long digit strings are hex of digits only as often as numbers ("0600000000000000").
        Encoding::Text
    } else if is_time(s) {
        Encoding::Time
    } else if digits
        || (s.starts_with('-') && s.len() > 1 && s[1..].bytes().all(|c| c.is_ascii_digit()))
    {
        Encoding::Decimal
    } else if s.len() >= 16
        && s.len() % 2 == 0
        && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F'))
    {
        Encoding::UpperHex
    } else if s.len() % 4 == 0
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        && (s.ends_with('=')
            || s.bytes()
                .any(|c| c.is_ascii_lowercase() || matches!(c, b'+' | b'/')))
    {
        Encoding::Base64
    } else {
        Encoding::Text
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every way `ours` differs from CometBFT's `theirs` at `path`, into `out`. Keys of ours
/// that CometBFT lacks count too, unless their path is in `extra_ok`; array elements are
/// each compared with CometBFT's first.
pub fn differences(
    ours: &Value,
    theirs: &Value,
    path: &str,
    extra_ok: &[&str],
    out: &mut Vec<String>,
) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, tv) in b {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(ov) => differences(ov, tv, &p, extra_ok, out),
                    None => out.push(format!("{p}: missing (CometBFT: {})", short(tv))),
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                let p = format!("{path}.{k}");
                if !extra_ok.contains(&p.as_str()) {
                    out.push(format!("{p}: not in CometBFT's answer"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let Some(first) = b.first() {
                for (i, ov) in a.iter().enumerate() {
                    differences(ov, first, &format!("{path}[{i}]"), extra_ok, out);
                }
            }
        }
        (Value::String(a), Value::String(b)) => {
            let (ea, eb) = (encoding(a), encoding(b));
            let comparable = |e: Encoding| e != Encoding::Text;
            // Only where both sides tell their encoding: "10" is decimal and short text both.
            if ea != eb && comparable(ea) && comparable(eb) {
                out.push(format!(
                    "{path}: {ea:?} {a:?} where CometBFT has {eb:?} {b:?}"
                ));
            }
        }
        // Go encodes an empty list as `null`: one with elements is an array there too.
        (Value::Array(a), Value::Null) if !a.is_empty() => {}
        (a, b) if kind(a) != kind(b) => out.push(format!(
            "{path}: {} {} where CometBFT has {} {}",
            kind(a),
            short(a),
            kind(b),
            short(b)
        )),
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// The fixtures' directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cometbft-rpc-v0.38")
}

/// The `result` of CometBFT's answer in fixture `name` (without `.json`).
pub fn fixture(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["result"].clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_comparison_sees_each_kind_of_difference() {
        let theirs = json!({"a": "10", "h": "6CD5CF4E23A49D9BC073D6F305D29D1B", "b": {}, "t": "2023-05-17T14:12:48.347696215Z", "l": [{"x": "1"}]});
        let same = json!({"a": "7", "h": "00112233445566778899AABBCCDDEEFF", "b": {}, "t": "2026-01-01T00:00:00Z", "l": [{"x": "2"}, {"x": "3"}]});
        let mut out = vec![];
        differences(&same, &theirs, "", &[], &mut out);
        assert_eq!(out, Vec::<String>::new());
        let wrong = json!({"a": 10, "h": "ABEiM0RVZneImaq7zN3u/w==", "b": null, "t": "2026-01-01T00:00:00Z", "l": [{"y": "2"}], "z": 1});
        differences(&wrong, &theirs, "", &[], &mut out);
        assert_eq!(out.len(), 6, "{out:#?}");
    }
}
