//! Facts about connections and files for `/status`.

use std::collections::BTreeMap;

use rusqlite::Connection;

/// The pragmas rqlite reports per connection, as strings, in its order of asking.
pub const REPORTED_PRAGMAS: [&str; 5] = [
    "synchronous",
    "journal_mode",
    "foreign_keys",
    "wal_autocheckpoint",
    "busy_timeout",
];

/// Values of `REPORTED_PRAGMAS` on `conn`.
pub fn pragmas(conn: &Connection) -> BTreeMap<String, String> {
    REPORTED_PRAGMAS
        .iter()
        .filter_map(|p| {
            conn.query_row(&format!("PRAGMA {p}"), [], |r| {
                let v: rusqlite::types::Value = r.get(0)?;
                Ok(match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(s) => s,
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    _ => String::new(),
                })
            })
            .ok()
            .map(|v| (p.to_string(), v))
        })
        .collect()
}

/// `PRAGMA` integers rqlite reports under `mem_stats`.
pub fn mem_stats(conn: &Connection) -> BTreeMap<String, i64> {
    [
        "cache_size",
        "freelist_count",
        "hard_heap_limit",
        "max_page_count",
        "page_count",
        "page_size",
        "soft_heap_limit",
    ]
    .iter()
    .filter_map(|p| {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
            .ok()
            .map(|v| (p.to_string(), v))
    })
    .collect()
}

/// `PRAGMA compile_options`.
pub fn compile_options(conn: &Connection) -> Vec<String> {
    let Ok(mut stmt) = conn.prepare("PRAGMA compile_options") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The linked SQLite's version.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}
