//! The floor's SQL (`--floor-sql`): each request's statements run on SQLite, on a database set
//! up as a node's is (WAL, commits not synced: the log's fdatasync is what makes a write
//! durable), with none of a node's parsing, checks, consensus or answer shapes around them.
//! The writes a sync covers run in one transaction, as a node applies a group-commit entry.

use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use rq_proto::json;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value as Json;

pub struct Sqlite {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

/// One statement of a request: its text and positional arguments.
type Statement = (String, Vec<Value>);

impl Sqlite {
    /// Opens (creating) `floor.db` in `dir`, with one connection that writes and one that reads.
    pub fn open(dir: &Path) -> rusqlite::Result<Sqlite> {
        let path = dir.join("floor.db");
        let writer = Connection::open(&path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "OFF")?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.pragma_update(None, "query_only", true)?;
        Ok(Sqlite {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    /// Runs the statements of every body in `bodies` in one transaction; one answer per body.
    pub fn execute(&self, bodies: &[Bytes]) -> Vec<Bytes> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let began = conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([]));
        let answers = bodies
            .iter()
            .map(|body| answer(body, |out, sql, args| write_result(out, &conn, sql, args)))
            .collect();
        if began.is_ok()
            && let Err(e) = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([]))
        {
            eprintln!("floor: commit failed: {e}");
            std::process::exit(1);
        }
        answers
    }

    /// Runs the statements of a read.
    pub fn query(&self, body: &[u8]) -> Bytes {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        answer(body, |out, sql, args| read_result(out, &conn, sql, args))
    }
}

/// The statements of a request body: a JSON array of statements, each a string or an array of
/// the text and its arguments. An empty body has none (as a queued write's `?wait` sends).
fn statements(body: &[u8]) -> Result<Vec<Statement>, String> {
    if body.trim_ascii().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Vec<Json> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    parsed
        .into_iter()
        .map(|s| match s {
            Json::String(sql) => Ok((sql, Vec::new())),
            Json::Array(mut parts) if matches!(parts.first(), Some(Json::String(_))) => {
                let args = parts.split_off(1).into_iter().map(argument).collect::<Result<_, _>>()?;
                match parts.pop() {
                    Some(Json::String(sql)) => Ok((sql, args)),
                    _ => Err("a statement's first element must be its text".to_string()),
                }
            }
            _ => Err("a statement must be a string or an array".to_string()),
        })
        .collect()
}

fn argument(v: Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or("a number out of range")?),
        },
        Json::String(s) => Value::Text(s),
        _ => return Err("an argument must be a scalar".to_string()),
    })
}

/// Writes a write's result object into `out`.
fn write_result(out: &mut Vec<u8>, conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<()> {
    let rows = conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args))?;
    out.extend_from_slice(br#"{"last_insert_id":"#);
    json::write_i64(out, conn.last_insert_rowid());
    out.extend_from_slice(br#","rows_affected":"#);
    json::write_i64(out, rows as i64);
    out.push(b'}');
    Ok(())
}

/// Writes a read's result object into `out`, encoded as a node encodes one.
fn read_result(out: &mut Vec<u8>, conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    // Written aside first, so that an error met half-way leaves `out` as it was.
    let mut result = Vec::new();
    result.extend_from_slice(br#"{"columns":"#);
    write_list(&mut result, stmt.column_names(), |o, name| {
        json::write_str(o, name, false)
    });
    result.extend_from_slice(br#","types":"#);
    write_list(&mut result, stmt.columns(), |o, c| {
        json::write_str(o, &c.decl_type().unwrap_or("").to_ascii_lowercase(), false)
    });
    result.extend_from_slice(br#","values":["#);
    let width = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut first = true;
    while let Some(row) = rows.next()? {
        if !std::mem::take(&mut first) {
            result.push(b',');
        }
        let values = (0..width)
            .map(|i| row.get_ref(i))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        write_list(&mut result, values, |o, v| match v {
            ValueRef::Null => o.extend_from_slice(b"null"),
            ValueRef::Integer(n) => json::write_i64(o, n),
            ValueRef::Real(f) => json::write_f64(o, f),
            ValueRef::Text(t) => json::write_str(o, &String::from_utf8_lossy(t), false),
            ValueRef::Blob(b) => json::write_base64(o, b),
        });
    }
    result.extend_from_slice(b"]}");
    out.extend_from_slice(&result);
    Ok(())
}

/// Writes `items` as a JSON array, each written by `write`.
fn write_list<T>(out: &mut Vec<u8>, items: impl IntoIterator<Item = T>, mut write: impl FnMut(&mut Vec<u8>, T)) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

fn write_error(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(br#"{"error":"#);
    json::write_str(out, message, false);
    out.push(b'}');
}

/// `{"results": [...]}`, with one result per statement of `body` written by `run` (or its
/// error), or the request's error.
fn answer(body: &[u8], mut run: impl FnMut(&mut Vec<u8>, &str, &[Value]) -> rusqlite::Result<()>) -> Bytes {
    let mut out = Vec::with_capacity(128);
    match statements(body) {
        Ok(stmts) => {
            out.extend_from_slice(br#"{"results":"#);
            write_list(&mut out, &stmts, |o, (sql, args)| {
                if let Err(e) = run(o, sql, args) {
                    write_error(o, &e.to_string());
                }
            });
            out.push(b'}');
        }
        Err(e) => write_error(&mut out, &e),
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_commit_together_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(dir.path()).unwrap();
        let bodies = [
            Bytes::from_static(br#"["CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)"]"#),
            Bytes::from_static(br#"[["INSERT INTO t(name) VALUES(?)", "a"], ["INSERT INTO t(name) VALUES(?)", 2.5]]"#),
            Bytes::from_static(br#"[["INSERT INTO nowhere VALUES(1)"]]"#),
            Bytes::from_static(b"not json"),
            Bytes::new(),
        ];
        let answers = db.execute(&bodies);
        assert_eq!(
            &answers[0][..],
            br#"{"results":[{"last_insert_id":0,"rows_affected":0}]}"#
        );
        assert_eq!(
            &answers[1][..],
            br#"{"results":[{"last_insert_id":1,"rows_affected":1},{"last_insert_id":2,"rows_affected":1}]}"#
        );
        assert!(String::from_utf8_lossy(&answers[2]).contains("no such table"));
        assert!(String::from_utf8_lossy(&answers[3]).starts_with(r#"{"error":"#));
        assert_eq!(&answers[4][..], br#"{"results":[]}"#);
        let read = db.query(br#"[["SELECT * FROM t WHERE id>?", 0]]"#);
        assert_eq!(
            &read[..],
            br#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"a"],[2,"2.5"]]}]}"#
        );
    }
}
