//! JSON as rqlite's Go encoder writes it.
//!
//! Clients compare bytes, so this writes exactly what Go's `encoding/json` does: floats in
//! `strconv` 'f'/'e' form with Go's exponent clean-up, Go's string escaping (with or without
//! HTML escaping), sorted keys for maps, and `MarshalIndent`'s layout with four spaces.

use base64::Engine;

/// For each byte, whether it is written as it is: ASCII but for control characters, `"` and
/// `\`, and, with HTML escaping (the second table), `<`, `>` and `&`. Bytes of multi-byte
/// characters take the slower path, which looks for U+2028 and U+2029.
static PLAIN: [[bool; 256]; 2] = [plain(false), plain(true)];

const fn plain(escape_html: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        let c = b as u8;
        t[b] = c != b'"' && c != b'\\' && !(escape_html && (c == b'<' || c == b'>' || c == b'&'));
        b += 1;
    }
    t
}

/// Appends `s` as a JSON string, escaped as Go does. `escape_html` turns `<`, `>` and `&` into
/// `\u003c` and friends (Go's default; rqlite turns it off for query results).
pub fn write_str(out: &mut Vec<u8>, s: &str, escape_html: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let plain = &PLAIN[escape_html as usize];
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if plain[b as usize] {
            i += 1;
            continue;
        }
        if b < 0x80 {
            out.extend_from_slice(&bytes[start..i]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\x08' => out.extend_from_slice(b"\\b"),
                b'\x0c' => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 0xf) as usize]);
                }
            }
            i += 1;
            start = i;
            continue;
        }
        // U+2028 and U+2029 are escaped by Go even without HTML escaping.
        if b == 0xe2 && bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(if bytes[i + 2] == 0xa8 { b"\\u2028" } else { b"\\u2029" });
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `f` as Go's `encoding/json` formats a float64. Go refuses NaN and infinities; they
/// are written as `null` here so a response is always valid JSON.
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    use std::io::Write;
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Go: strconv 'e' with the shortest digits, exponent at least two digits, then
        // "e-07" cleaned to "e-7". Rust's `{:e}` gives the same digits without the padding.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        out.extend_from_slice(mant.as_bytes());
        if exp < 0 {
            let _ = write!(out, "e-{}", -exp);
        } else {
            let _ = write!(out, "e+{exp:02}");
        }
    } else {
        // Rust's Display for f64 is the shortest round-trip form without an exponent, which is
        // what Go's 'f' format with precision -1 gives (including "-0").
        let _ = write!(out, "{f}");
    }
}

pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    use std::io::Write;
    let _ = write!(out, "{v}");
}

/// Appends bytes as standard, padded base64 in a JSON string (Go's `[]byte` encoding).
pub fn write_base64(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(b, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
    out.push(b'"');
}

/// Appends a `serde_json::Value` the way Go encodes the equivalent `map[string]interface{}`:
/// keys sorted (serde_json's default map is ordered), HTML escaping on or off.
pub fn write_value(out: &mut Vec<u8>, v: &serde_json::Value, escape_html: bool) {
    match v {
        serde_json::Value::Null => out.extend_from_slice(b"null"),
        serde_json::Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_i64(out, i);
            } else if let Some(u) = n.as_u64() {
                use std::io::Write;
                let _ = write!(out, "{u}");
            } else {
                write_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        serde_json::Value::String(s) => write_str(out, s, escape_html),
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x, escape_html);
            }
            out.push(b']');
        }
        serde_json::Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k, escape_html);
                out.push(b':');
                write_value(out, x, escape_html);
            }
            out.push(b'}');
        }
    }
}

/// Re-lays compact JSON out as Go's `json.Indent(dst, src, "", "    ")` does: one element
/// per line, `": "` after keys, and empty arrays and objects kept as `[]` and `{}`.
pub fn indent(compact: &[u8]) -> Vec<u8> {
    indent_with(compact, "    ")
}

/// As `indent`, with `unit` for each level (`MarshalIndent(v, "", unit)`).
pub fn indent_with(compact: &[u8], unit: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    // Set after an opening bracket: the newline is written only if the container is non-empty.
    let mut need_indent = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        for _ in 0..depth {
            out.extend_from_slice(unit.as_bytes());
        }
    };
    for &c in compact {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        if need_indent && c != b']' && c != b'}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                in_str = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                need_indent = true;
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b'}' | b']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        let mut o = Vec::new();
        write_f64(&mut o, v);
        String::from_utf8(o).unwrap()
    }

    fn s(v: &str, html: bool) -> String {
        let mut o = Vec::new();
        write_str(&mut o, v, html);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn floats_like_go() {
        assert_eq!(f(100.0), "100");
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(-0.0), "-0");
        assert_eq!(f(1e20), "100000000000000000000");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(1e-6), "0.000001");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(1.25e-10), "1.25e-10");
        assert_eq!(f(std::f64::consts::PI), "3.141592653589793");
        assert_eq!(f(f64::NAN), "null");
    }

    #[test]
    fn strings_like_go() {
        assert_eq!(s("a\"b\\c", false), r#""a\"b\\c""#);
        assert_eq!(s("<&>", false), r#""<&>""#);
        assert_eq!(s("<&>", true), r#""\u003c\u0026\u003e""#);
        assert_eq!(s("\n\t\r\x08\x0c\x01\x7f", false), "\"\\n\\t\\r\\b\\f\\u0001\x7f\"");
        assert_eq!(s("x\u{2028}y\u{2029}é", false), "\"x\\u2028y\\u2029é\"");
    }

    #[test]
    fn base64_padded() {
        let mut o = Vec::new();
        write_base64(&mut o, &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(o, br#""3q2+7w==""#);
    }

    #[test]
    fn indent_like_go() {
        let c = br#"{"results":[{"columns":["a"],"values":[[1,"x,y"]]},{}],"e":[]}"#;
        let want = "{\n    \"results\": [\n        {\n            \"columns\": [\n                \"a\"\n            ],\n            \"values\": [\n                [\n                    1,\n                    \"x,y\"\n                ]\n            ]\n        },\n        {}\n    ],\n    \"e\": []\n}";
        assert_eq!(String::from_utf8(indent(c)).unwrap(), want);
    }
}
