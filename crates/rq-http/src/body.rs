//! Request bodies: rqlite's JSON statement arrays and plain-text SQL.

use rq_proto::{Param, Statement, Value};
use serde_json::Value as Json;

/// A body that is not a valid statement list; the message is rqlite's, sent with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub String);

fn invalid_request() -> BodyError {
    BodyError("invalid request".into())
}

/// The Go type name rqlite's parser reports for a JSON value it cannot bind.
fn go_type_name(v: &Json) -> String {
    match v {
        Json::Null => "<nil>".into(),
        Json::Bool(_) => "bool".into(),
        Json::Number(n) => n.to_string(),
        Json::String(_) => "string".into(),
        Json::Array(_) => "[]interface {}".into(),
        Json::Object(_) => "map[string]interface {}".into(),
    }
}

fn unsupported(v: &Json) -> BodyError {
    BodyError(format!("unsupported type {}", go_type_name(v)))
}

/// A string shaped like a SQLite blob literal (`x'00ff'`) binds as a BLOB, as in rqlite.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() < 3 || !matches!(b[0], b'x' | b'X') {
        return None;
    }
    let inner = t[1..].strip_prefix('\'')?.strip_suffix('\'')?;
    if inner.len() % 2 != 0 {
        return None;
    }
    (0..inner.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&inner[i..i + 2], 16).ok())
        .collect()
}

fn value(v: Json) -> Result<Value, BodyError> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => match n.as_f64() {
                Some(f) if f.is_finite() => Value::Float(f),
                _ => return Err(BodyError(format!("invalid number {n}"))),
            },
        },
        Json::String(s) => match parse_hex(&s) {
            Some(b) => Value::Blob(b),
            None => Value::Text(s),
        },
        Json::Array(items) => {
            let mut bytes = Vec::with_capacity(items.len());
            for item in &items {
                match item {
                    Json::Number(n) => match n.as_i64() {
                        Some(i) if (0..=255).contains(&i) => bytes.push(i as u8),
                        _ => return Err(unsupported(item)),
                    },
                    other => return Err(unsupported(other)),
                }
            }
            Value::Blob(bytes)
        }
        Json::Object(_) => return Err(unsupported(&v)),
    })
}

/// Parses the JSON form: an array whose elements are SQL strings, or arrays of SQL followed by
/// positional values and objects of named values.
pub fn parse_json(body: &[u8]) -> Result<Vec<Statement>, BodyError> {
    let json: Json = serde_json::from_slice(body).map_err(|_| BodyError("invalid JSON body".into()))?;
    let Json::Array(elems) = json else {
        return Err(invalid_request());
    };
    if elems.is_empty() {
        return Err(BodyError("no statements".into()));
    }
    let mut out = Vec::with_capacity(elems.len());
    for elem in elems {
        match elem {
            Json::String(sql) => out.push(Statement::new(sql)),
            Json::Array(items) => {
                let mut items = items.into_iter();
                let Some(Json::String(sql)) = items.next() else {
                    return Err(invalid_request());
                };
                let mut params = Vec::new();
                for item in items {
                    match item {
                        Json::Object(map) => {
                            for (k, v) in map {
                                params.push(Param {
                                    name: Some(k),
                                    value: value(v)?,
                                });
                            }
                        }
                        other => params.push(Param {
                            name: None,
                            value: value(other)?,
                        }),
                    }
                }
                out.push(Statement {
                    sql,
                    params,
                    returning: false,
                });
            }
            _ => return Err(invalid_request()),
        }
    }
    Ok(out)
}

/// Parses a body by its content type: `text/plain` is one statement of raw SQL.
pub fn parse(body: &[u8], content_type: Option<&str>, allow_text: bool) -> Result<Vec<Statement>, BodyError> {
    if allow_text && content_type.is_some_and(|c| c.starts_with("text/plain")) {
        return Ok(vec![Statement::new(String::from_utf8_lossy(body).into_owned())]);
    }
    parse_json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: &str) -> String {
        parse_json(b.as_bytes()).unwrap_err().0
    }

    #[test]
    fn shapes_and_errors() {
        assert_eq!(err(""), "invalid JSON body");
        assert_eq!(err("[1"), "invalid JSON body");
        assert_eq!(err("{}"), "invalid request");
        assert_eq!(err("[]"), "no statements");
        assert_eq!(err("[1]"), "invalid request");
        assert_eq!(err("[[]]"), "invalid request");
        assert_eq!(err("[[1]]"), "invalid request");
        assert_eq!(err(r#"[["x", [256]]]"#), "unsupported type 256");
        assert_eq!(err(r#"[["x", ["a"]]]"#), "unsupported type string");
        assert_eq!(
            err(r#"[["x", {"a": {"b": 1}}]]"#),
            "unsupported type map[string]interface {}"
        );
        let s = parse_json(
            br#"["SELECT 1", ["INSERT INTO t VALUES(?, :n)", 1, {"n": "x'00ff'"}, 1.5, true, null, [1, 2]]]"#,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1].params.iter().map(|p| p.value.clone()).collect::<Vec<_>>(),
            vec![
                Value::Integer(1),
                Value::Blob(vec![0, 255]),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Null,
                Value::Blob(vec![1, 2])
            ]
        );
        assert_eq!(s[1].params[1].name.as_deref(), Some("n"));
    }

    #[test]
    fn numbers_follow_go_rules() {
        let s = parse_json(br#"[["x", 9223372036854775807, 9223372036854775808, 1e3, -0]]"#).unwrap();
        let v: Vec<Value> = s[0].params.iter().map(|p| p.value.clone()).collect();
        assert_eq!(
            v,
            vec![
                Value::Integer(i64::MAX),
                Value::Float(9.223372036854776e18),
                Value::Float(1000.0),
                Value::Integer(0)
            ]
        );
    }

    #[test]
    fn overflowing_numbers_are_refused() {
        // serde_json writes the exponent back as `e+400`.
        assert!(err(r#"[["x", 1e400]]"#).starts_with("invalid number 1e"));
    }

    #[test]
    fn hex_strings() {
        assert_eq!(parse_hex("x''"), Some(vec![]));
        assert_eq!(parse_hex(" X'0aFF' "), Some(vec![10, 255]));
        assert_eq!(parse_hex("x'abc'"), None);
        assert_eq!(parse_hex("x'"), None);
        assert_eq!(parse_hex("hello"), None);
    }

    #[test]
    fn plain_text_is_one_statement() {
        let s = parse(
            b"CREATE TABLE t(x); INSERT INTO t VALUES(1)",
            Some("text/plain; charset=utf-8"),
            true,
        )
        .unwrap();
        assert_eq!(s.len(), 1);
    }
}
