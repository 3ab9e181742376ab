//! The response envelope and result objects, byte for byte as rqlite writes them.
//!
//! Field order follows rqlite's Go structs; every `omitempty` rule is kept: zero counts and
//! times are left out, `values` is absent when there are no rows, an associative query always
//! has `rows`, and an associative write result carries `"rows":null`.

use std::collections::BTreeMap;

use rq_proto::json::{indent, write_base64, write_f64, write_i64, write_str};
use rq_proto::{ExecuteResult, QueryRows, StmtResult, Value};

/// Output options from the query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Format {
    pub pretty: bool,
    pub associative: bool,
    pub blob_array: bool,
}

/// Which endpoint's result shapes to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/db/query` and local reads: every entry is a row set, errors included.
    Query,
    /// `/db/execute` and `/db/request` through the log: errors are bare `{"error":…}`.
    Execute,
}

/// The top-level response object.
#[derive(Debug, Default)]
pub struct Envelope<'a> {
    pub results: &'a [StmtResult],
    pub error: Option<&'a str>,
    pub time: f64,
    pub sequence_number: i64,
    pub raft_index: u64,
}

/// HTML-escaping stays on: rqlite's outer `json.Marshal` re-escapes what its inner encoder wrote.
const ESCAPE_HTML: bool = true;

fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_value(out: &mut Vec<u8>, v: &Value, f: Format) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Integer(i) => write_i64(out, *i),
        Value::Float(x) => write_f64(out, *x),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Text(s) => write_str(out, s, ESCAPE_HTML),
        Value::Blob(b) if f.blob_array => {
            out.push(b'[');
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_i64(out, *byte as i64);
            }
            out.push(b']');
        }
        Value::Blob(b) => write_base64(out, b),
    }
}

fn write_str_array(out: &mut Vec<u8>, items: &[impl AsRef<str>]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s.as_ref(), ESCAPE_HTML);
    }
    out.push(b']');
}

fn write_execute(out: &mut Vec<u8>, r: &ExecuteResult, f: Format) {
    out.push(b'{');
    let mut first = true;
    if r.last_insert_id != 0 {
        key(out, &mut first, "last_insert_id");
        write_i64(out, r.last_insert_id);
    }
    if r.rows_affected != 0 {
        key(out, &mut first, "rows_affected");
        write_i64(out, r.rows_affected);
    }
    if r.time != 0.0 {
        key(out, &mut first, "time");
        write_f64(out, r.time);
    }
    if f.associative {
        key(out, &mut first, "rows");
        out.extend_from_slice(b"null");
    }
    out.push(b'}');
}

fn write_rows(out: &mut Vec<u8>, q: &QueryRows, error: Option<&str>, f: Format) {
    out.push(b'{');
    let mut first = true;
    if f.associative {
        // Go maps: keys sorted byte-wise, a repeated column name keeps its last value.
        let types: BTreeMap<&str, &str> = q
            .columns
            .iter()
            .zip(&q.types)
            .map(|(c, t)| (c.as_str(), t.as_ref()))
            .collect();
        if !types.is_empty() {
            key(out, &mut first, "types");
            out.push(b'{');
            for (i, (c, t)) in types.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, c, ESCAPE_HTML);
                out.push(b':');
                write_str(out, t, ESCAPE_HTML);
            }
            out.push(b'}');
        }
        key(out, &mut first, "rows");
        out.push(b'[');
        for (i, row) in q.values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let m: BTreeMap<&str, &Value> = q.columns.iter().map(String::as_str).zip(row).collect();
            out.push(b'{');
            for (j, (c, v)) in m.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_str(out, c, ESCAPE_HTML);
                out.push(b':');
                write_value(out, v, f);
            }
            out.push(b'}');
        }
        out.push(b']');
    } else {
        if !q.columns.is_empty() {
            key(out, &mut first, "columns");
            write_str_array(out, &q.columns);
        }
        if !q.types.is_empty() {
            key(out, &mut first, "types");
            write_str_array(out, &q.types);
        }
        if !q.values.is_empty() {
            key(out, &mut first, "values");
            out.push(b'[');
            for (i, row) in q.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                for (j, v) in row.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_value(out, v, f);
                }
                out.push(b']');
            }
            out.push(b']');
        }
    }
    if let Some(e) = error.filter(|e| !e.is_empty()) {
        key(out, &mut first, "error");
        write_str(out, e, ESCAPE_HTML);
    }
    if q.time != 0.0 {
        key(out, &mut first, "time");
        write_f64(out, q.time);
    }
    out.push(b'}');
}

fn write_result(out: &mut Vec<u8>, r: &StmtResult, shape: Shape, f: Format) {
    match r {
        StmtResult::Execute(e) => write_execute(out, e, f),
        StmtResult::Query(q) => write_rows(out, q, q.error.as_deref(), f),
        StmtResult::Error(e) => match shape {
            Shape::Query => write_rows(out, &QueryRows::default(), Some(e), f),
            Shape::Execute => {
                out.extend_from_slice(b"{\"error\":");
                write_str(out, e, ESCAPE_HTML);
                out.push(b'}');
            }
        },
    }
}

/// About how long a result's JSON is, to size the body's buffer once for most answers: its
/// column names and types and their punctuation, and a short number or text for each value.
fn size_hint(r: &StmtResult) -> usize {
    match r {
        StmtResult::Query(q) => {
            let names = q.columns.iter().map(String::as_str);
            let texts: usize = names
                .chain(q.types.iter().map(|t| t.as_ref()))
                .map(|s| s.len() + 3)
                .sum();
            64 + texts + q.values.iter().map(|row| 4 + row.len() * 12).sum::<usize>()
        }
        _ => 48,
    }
}

/// Writes the whole response body.
pub fn envelope(env: &Envelope<'_>, shape: Shape, f: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + env.results.iter().map(size_hint).sum::<usize>());
    out.extend_from_slice(b"{\"results\":[");
    for (i, r) in env.results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_result(&mut out, r, shape, f);
    }
    out.push(b']');
    if let Some(e) = env.error.filter(|e| !e.is_empty()) {
        out.extend_from_slice(b",\"error\":");
        write_str(&mut out, e, ESCAPE_HTML);
    }
    if env.time != 0.0 {
        out.extend_from_slice(b",\"time\":");
        write_f64(&mut out, env.time);
    }
    if env.sequence_number != 0 {
        out.extend_from_slice(b",\"sequence_number\":");
        write_i64(&mut out, env.sequence_number);
    }
    if env.raft_index != 0 {
        out.extend_from_slice(b",\"raft_index\":");
        out.extend_from_slice(env.raft_index.to_string().as_bytes());
    }
    out.push(b'}');
    if f.pretty { indent(&out) } else { out }
}

/// One `/db/sql` analysis entry.
pub struct Analysis {
    pub original: String,
    pub rewritten: Option<String>,
    pub error: Option<String>,
}

/// The `/db/sql` response.
pub fn analysis(items: &[Analysis], time: f64, pretty: bool) -> Vec<u8> {
    let mut out = b"{\"results\":[".to_vec();
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"original\":");
        write_str(&mut out, &a.original, ESCAPE_HTML);
        if let Some(r) = &a.rewritten {
            out.extend_from_slice(b",\"rewritten\":");
            write_str(&mut out, r, ESCAPE_HTML);
        }
        if let Some(e) = &a.error {
            out.extend_from_slice(b",\"error\":");
            write_str(&mut out, e, ESCAPE_HTML);
        }
        out.push(b'}');
    }
    out.push(b']');
    if time != 0.0 {
        out.extend_from_slice(b",\"time\":");
        write_f64(&mut out, time);
    }
    out.push(b'}');
    if pretty { indent(&out) } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> QueryRows {
        QueryRows {
            columns: vec!["id".into(), "name".into()],
            types: vec!["integer".into(), "text".into()],
            values: vec![
                vec![Value::Integer(1), Value::Text("fiona".into())],
                vec![Value::Integer(2), Value::Text("declan".into())],
            ],
            ..Default::default()
        }
    }

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn query_shapes() {
        let r = [StmtResult::Query(rows())];
        let env = Envelope {
            results: &r,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Query, Format::default())),
            r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"],[2,"declan"]]}]}"#
        );
        let assoc = Format {
            associative: true,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Query, assoc)),
            r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"},{"id":2,"name":"declan"}]}]}"#
        );
        let mut empty = rows();
        empty.values.clear();
        let r = [StmtResult::Query(empty)];
        let env = Envelope {
            results: &r,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Query, Format::default())),
            r#"{"results":[{"columns":["id","name"],"types":["integer","text"]}]}"#
        );
    }

    #[test]
    fn execute_shapes() {
        let r = [
            StmtResult::Execute(ExecuteResult::default()),
            StmtResult::Execute(ExecuteResult {
                last_insert_id: 1,
                rows_affected: 1,
                time: 0.0,
            }),
            StmtResult::Error("near \"x\": syntax error".into()),
        ];
        let env = Envelope {
            results: &r,
            raft_index: 5,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Execute, Format::default())),
            r#"{"results":[{},{"last_insert_id":1,"rows_affected":1},{"error":"near \"x\": syntax error"}],"raft_index":5}"#
        );
        let assoc = Format {
            associative: true,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Execute, assoc)),
            r#"{"results":[{"rows":null},{"last_insert_id":1,"rows_affected":1,"rows":null},{"error":"near \"x\": syntax error"}],"raft_index":5}"#
        );
    }

    #[test]
    fn errors_and_queue() {
        let env = Envelope {
            error: Some("disallowed pragma"),
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Execute, Format::default())),
            r#"{"results":[],"error":"disallowed pragma"}"#
        );
        let env = Envelope {
            sequence_number: 1653314298877648934,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Execute, Format::default())),
            r#"{"results":[],"sequence_number":1653314298877648934}"#
        );
        let r = [StmtResult::Error("no such table: x".into())];
        let env = Envelope {
            results: &r,
            ..Default::default()
        };
        let assoc = Format {
            associative: true,
            ..Default::default()
        };
        assert_eq!(
            s(envelope(&env, Shape::Query, assoc)),
            r#"{"results":[{"rows":[],"error":"no such table: x"}]}"#
        );
    }

    #[test]
    fn blobs() {
        let q = QueryRows {
            columns: vec!["b".into()],
            types: vec!["blob".into()],
            values: vec![vec![Value::Blob(vec![0xde, 0xad, 0xbe, 0xef])]],
            ..Default::default()
        };
        let r = [StmtResult::Query(q)];
        let env = Envelope {
            results: &r,
            ..Default::default()
        };
        assert!(s(envelope(&env, Shape::Query, Format::default())).contains(r#"[["3q2+7w=="]]"#));
        let arr = Format {
            blob_array: true,
            ..Default::default()
        };
        assert!(s(envelope(&env, Shape::Query, arr)).contains("[[[222,173,190,239]]]"));
    }
}
