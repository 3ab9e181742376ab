//! The floor's SQL (`--floor-sql`): each request's statements run on SQLite, on a database set
//! up as a node's is (WAL, commits not synced: the log's fdatasync is what makes a write
//! durable), with none of a node's parsing, checks, consensus or answer shapes around them.
//! The writes a sync covers run in one transaction, as a node applies a group-commit entry.

use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value as Json, json};

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
        let began = conn.execute_batch("BEGIN");
        let answers = bodies
            .iter()
            .map(|body| {
                answer(statements(body).map(|stmts| {
                    stmts
                        .iter()
                        .map(|(sql, args)| match run_write(&conn, sql, args) {
                            Ok(r) => r,
                            Err(e) => json!({ "error": e.to_string() }),
                        })
                        .collect()
                }))
            })
            .collect();
        if began.is_ok()
            && let Err(e) = conn.execute_batch("COMMIT")
        {
            eprintln!("floor: commit failed: {e}");
            std::process::exit(1);
        }
        answers
    }

    /// Runs the statements of a read.
    pub fn query(&self, body: &[u8]) -> Bytes {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        answer(statements(body).map(|stmts| {
            stmts
                .iter()
                .map(|(sql, args)| match run_read(&conn, sql, args) {
                    Ok(r) => r,
                    Err(e) => json!({ "error": e.to_string() }),
                })
                .collect()
        }))
    }
}

/// The statements of a request body: a JSON array of statements, each a string or an array of
/// the text and its arguments.
fn statements(body: &[u8]) -> Result<Vec<Statement>, String> {
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

fn run_write(conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<Json> {
    let rows = conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args))?;
    Ok(json!({ "last_insert_id": conn.last_insert_rowid(), "rows_affected": rows }))
}

fn run_read(conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<Json> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let types: Vec<String> = stmt
        .columns()
        .map(|c| c.decl_type().unwrap_or("").to_ascii_lowercase())
        .collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut values = Vec::new();
    while let Some(row) = rows.next()? {
        let row: Vec<Json> = (0..columns.len())
            .map(|i| {
                Ok(match row.get::<_, Value>(i)? {
                    Value::Null => Json::Null,
                    Value::Integer(n) => json!(n),
                    Value::Real(f) => json!(f),
                    Value::Text(s) => json!(s),
                    Value::Blob(b) => json!(b),
                })
            })
            .collect::<rusqlite::Result<_>>()?;
        values.push(Json::Array(row));
    }
    Ok(json!({ "columns": columns, "types": types, "values": values }))
}

/// `{"results": [...]}`, or the request's error.
fn answer(results: Result<Vec<Json>, String>) -> Bytes {
    let body = match results {
        Ok(results) => json!({ "results": results }),
        Err(e) => json!({ "error": e }),
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
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
        let read = db.query(br#"[["SELECT * FROM t WHERE id>?", 0]]"#);
        assert_eq!(
            &read[..],
            br#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"a"],[2,"2.5"]]}]}"#
        );
    }
}
