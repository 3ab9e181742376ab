//! Change capture on the write connection: every row an INSERT, UPDATE or DELETE changes, with
//! its before and after images, seen through SQLite's preupdate hook.
//!
//! The hook fires before each row change, inside whatever transaction is open; a change can
//! still be undone afterwards (the statement fails, a savepoint or the batch is rolled back).
//! So events are kept in a buffer with marks: whoever undoes work truncates the buffer back to
//! the mark taken before it (`mark`, `undo`), and only what is left when the batch commits is
//! handed on (`take`). Each event carries the position of the log entry being applied when it
//! fired (`set_entry`).
//!
//! Column names cannot be read inside the hook; they are looked up afterwards (`name_columns`)
//! with the table's current schema, once per table while the schema does not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use regex::Regex;
use rusqlite::Connection;
pub use rusqlite::types::Value;

use crate::preupdate::{Action, Hook, Row};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        }
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct RowEvent {
    pub op: Op,
    pub table: Arc<str>,
    pub old_rowid: i64,
    pub new_rowid: i64,
    /// The row before the change (UPDATE, DELETE), unless only row ids are captured.
    pub before: Option<Vec<Value>>,
    /// The row after the change (INSERT, UPDATE), unless only row ids are captured.
    pub after: Option<Vec<Value>>,
    /// The table's column names, once looked up.
    pub columns: Option<Arc<[String]>>,
    /// Why the event could not be captured whole.
    pub error: Option<String>,
}

/// Which changes to capture.
#[derive(Debug, Clone, Default)]
pub struct CaptureConfig {
    /// Tables whose names match (anywhere in the name, as Go's `MatchString`); all if `None`.
    pub table_filter: Option<Regex>,
    /// Capture only row ids, not row images.
    pub row_ids_only: bool,
}

#[derive(Default)]
struct Buf {
    events: Vec<(usize, RowEvent)>,
    entry: usize,
    /// Whether each table seen so far passes the filter.
    tables: HashMap<String, Option<Arc<str>>>,
}

/// A capture shared by the hook and the code running statements.
pub struct Capture {
    cfg: CaptureConfig,
    buf: Mutex<Buf>,
    /// Column names per table, valid for one schema version.
    names: Mutex<ColumnNames>,
}

/// The schema version the names were read at, and each table's column names.
type ColumnNames = (i64, HashMap<Arc<str>, Arc<[String]>>);

/// A position in the buffer to undo to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(usize);

impl Capture {
    pub fn new(cfg: CaptureConfig) -> Arc<Capture> {
        Arc::new(Capture {
            cfg,
            buf: Mutex::default(),
            names: Mutex::new((i64::MIN, HashMap::new())),
        })
    }

    fn buf(&self) -> MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hook that feeds this capture, to be registered on the write connection.
    pub fn hook(self: &Arc<Self>, conn: &Connection) -> Hook {
        let me = self.clone();
        Hook::register(
            conn,
            Box::new(move |action, db, table, old_rowid, new_rowid, row: &Row<'_>| {
                if db == "main" {
                    me.record(action, table, old_rowid, new_rowid, row);
                }
            }),
        )
    }

    /// The log entry (its position in the batch) that changes from now on belong to.
    pub fn set_entry(&self, entry: usize) {
        self.buf().entry = entry;
    }

    pub fn mark(&self) -> Mark {
        Mark(self.buf().events.len())
    }

    /// Forgets every change captured since `mark`: they were undone.
    pub fn undo(&self, mark: Mark) {
        self.buf().events.truncate(mark.0);
    }

    /// Takes every change captured so far, in order: the caller commits them.
    pub fn take(&self) -> Vec<(usize, RowEvent)> {
        std::mem::take(&mut self.buf().events)
    }

    fn record(&self, action: Action, table: &str, old_rowid: i64, new_rowid: i64, row: &Row<'_>) {
        let mut buf = self.buf();
        let name = match buf.tables.get(table) {
            Some(n) => n.clone(),
            None => {
                let pass = self.cfg.table_filter.as_ref().is_none_or(|re| re.is_match(table));
                let n = pass.then(|| Arc::<str>::from(table));
                buf.tables.insert(table.to_string(), n.clone());
                n
            }
        };
        let Some(table) = name else { return };
        let mut event = RowEvent {
            op: match action {
                Action::Insert => Op::Insert,
                Action::Update => Op::Update,
                Action::Delete => Op::Delete,
            },
            table,
            old_rowid: if action == Action::Insert { 0 } else { old_rowid },
            new_rowid: if action == Action::Delete { 0 } else { new_rowid },
            before: None,
            after: None,
            columns: None,
            error: None,
        };
        if !self.cfg.row_ids_only {
            let count = row.count();
            let image = |which: &str, get: &dyn Fn(i32) -> Result<Value, String>| {
                (0..count)
                    .map(get)
                    .collect::<Result<Vec<Value>, String>>()
                    .map_err(|e| format!("failed to get {which} row data: {e}"))
            };
            let before = (action != Action::Insert).then(|| image("old", &|i| row.old_value(i)));
            let after = (action != Action::Delete).then(|| image("new", &|i| row.new_value(i)));
            for (slot, got) in [(&mut event.before, before), (&mut event.after, after)] {
                match got {
                    Some(Ok(v)) => *slot = Some(v),
                    Some(Err(e)) => event.error = Some(e),
                    None => {}
                }
            }
        }
        let entry = buf.entry;
        buf.events.push((entry, event));
    }

    /// Looks up the column names of the tables of events captured since `from` that have none
    /// yet, with `conn`'s current schema. Run after each statement, so a later change of a
    /// table's columns does not rename earlier rows.
    pub fn name_columns(&self, conn: &Connection, from: Mark) {
        let mut buf = self.buf();
        if buf.events[from.0.min(buf.events.len())..]
            .iter()
            .all(|(_, e)| e.columns.is_some() || self.cfg.row_ids_only)
        {
            return;
        }
        let version: i64 = conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap_or(i64::MIN + 1);
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.0 != version {
            *names = (version, HashMap::new());
        }
        let start = from.0.min(buf.events.len());
        for (_, e) in &mut buf.events[start..] {
            if e.columns.is_some() || self.cfg.row_ids_only {
                continue;
            }
            let cols = match names.1.get(&e.table) {
                Some(c) => Ok(c.clone()),
                None => column_names(conn, &e.table).inspect(|c| {
                    names.1.insert(e.table.clone(), c.clone());
                }),
            };
            match cols {
                Ok(c) => e.columns = Some(c),
                Err(err) => {
                    e.error
                        .get_or_insert_with(|| format!("failed to get column names for table {}: {err}", e.table));
                }
            }
        }
    }
}

fn column_names(conn: &Connection, table: &str) -> rusqlite::Result<Arc<[String]>> {
    let sql = format!("SELECT * FROM \"{}\" LIMIT 0", table.replace('"', "\"\""));
    let stmt = conn.prepare(&sql)?;
    Ok(stmt.column_names().map(str::to_string).collect())
}
