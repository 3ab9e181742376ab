//! The write side of the database: applying batches of committed work in one transaction,
//! together with the state blob that says which work the database holds.
//!
//! Architecture invariant: the state blob (`sqlite_rqlite`) is updated in the same SQLite
//! transaction as the statements of the work it describes; nothing commits user changes without
//! also committing the state they belong to.

use std::path::{Path, PathBuf};

use rq_proto::{Request, StmtResult};
use rusqlite::OptionalExtension;
use rusqlite::config::DbConfig;

use crate::Error;
use crate::conn::{Conn, ConnConfig};
use crate::exec::{self, Mode, Outcome};

/// Table holding the state blob. The `sqlite_` prefix keeps it out of dumps and stops users
/// from dropping it; the authorizer stops them from writing it.
pub(crate) const STATE_TABLE: &str = "sqlite_rqlite";

/// One committed log entry's work.
#[derive(Debug, Clone, Copy)]
pub enum Work<'a> {
    /// Write statements.
    Execute(&'a Request),
    /// Reads carried through the log.
    Query(&'a Request),
    /// A mixed request: each statement runs as a read or a write by what it does.
    Request(&'a Request),
    /// An entry that changes no data (blank, membership, no-op).
    Nothing,
}

/// The write connection and everything that runs on it.
pub struct Database {
    conn: Conn,
    cfg: ConnConfig,
    path: PathBuf,
}

/// Bytes reserved for the state blob. It is rewritten in place with SQLite's incremental blob
/// I/O, which, unlike an UPDATE, leaves `changes()` and `last_insert_rowid()` as the user's last
/// statement set them (rqlite reports both per connection).
const STATE_CAPACITY: usize = 64 * 1024;

fn ensure_state_table(conn: &Conn) -> Result<(), Error> {
    let exists: bool = conn.conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [STATE_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        // Names starting with `sqlite_` are reserved; writable_schema lifts that for this one
        // statement.
        conn.trusted(|c| {
            c.set_db_config(DbConfig::SQLITE_DBCONFIG_WRITABLE_SCHEMA, true)?;
            let r = c.execute_batch(&format!(
                "CREATE TABLE {STATE_TABLE}(id INTEGER PRIMARY KEY, state BLOB NOT NULL);
                 INSERT INTO {STATE_TABLE}(id, state) VALUES(1, zeroblob({STATE_CAPACITY}));"
            ));
            c.set_db_config(DbConfig::SQLITE_DBCONFIG_WRITABLE_SCHEMA, false)?;
            r
        })?;
    }
    Ok(())
}

/// Opens the writer on a file that has the state table. The table is created through a separate,
/// short-lived connection, so the writer starts with `last_insert_rowid()` and `changes()` at 0,
/// as a fresh rqlite connection does.
fn open_prepared(path: &Path, cfg: ConnConfig) -> Result<Conn, Error> {
    ensure_state_table(&Conn::open_writer(path, cfg)?)?;
    Conn::open_writer(path, cfg)
}

/// Reads the state blob through `conn`, if the database has one.
pub(crate) fn read_state(conn: &rusqlite::Connection) -> Result<Option<Vec<u8>>, Error> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [STATE_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    let blob: Option<Vec<u8>> = conn
        .query_row(&format!("SELECT state FROM {STATE_TABLE} WHERE id = 1"), [], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(blob) = blob else { return Ok(None) };
    if blob.len() < 4 {
        return Err(Error::Corrupt("state record is truncated".into()));
    }
    let n = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if n == 0 {
        return Ok(None);
    }
    blob.get(4..4 + n)
        .map(|b| Some(b.to_vec()))
        .ok_or_else(|| Error::Corrupt("state record length exceeds its blob".into()))
}

impl Database {
    /// Opens (creating if needed) the database file at `path` for writing.
    pub fn open(path: &Path, cfg: ConnConfig) -> Result<Database, Error> {
        let conn = open_prepared(path, cfg)?;
        Ok(Database {
            conn,
            cfg,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state blob last committed with the data.
    pub fn load_state(&self) -> Result<Option<Vec<u8>>, Error> {
        read_state(&self.conn.conn)
    }

    fn write_state(&self, state: &[u8]) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(state.len() + 4);
        buf.extend_from_slice(&(state.len() as u32).to_le_bytes());
        buf.extend_from_slice(state);
        self.conn.trusted(|c| {
            let mut blob = c.blob_open(rusqlite::MAIN_DB, STATE_TABLE, "state", 1, false)?;
            if buf.len() > blob.len() {
                drop(blob);
                // Grow the reserved space; rare (a very large membership).
                let cap = buf.len().next_power_of_two();
                c.execute(
                    &format!("UPDATE {STATE_TABLE} SET state = zeroblob(?1) WHERE id = 1"),
                    [cap as i64],
                )?;
                blob = c.blob_open(rusqlite::MAIN_DB, STATE_TABLE, "state", 1, false)?;
            }
            blob.write_at(&buf, 0)
        })?;
        Ok(())
    }

    /// Applies committed log entries in one transaction, each entry a list of work items,
    /// and records `state_after(i)` for the last entry, all atomically. Returns, per entry, the
    /// results of each work item.
    ///
    /// SQL errors are results. `Err` means the database could not be written (I/O, full disk,
    /// corruption): the batch left no trace and the caller must stop applying.
    pub fn apply(
        &mut self,
        entries: &[Vec<Work<'_>>],
        state_after: impl Fn(usize) -> Vec<u8>,
    ) -> Result<Vec<Vec<Vec<StmtResult>>>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<Vec<Vec<StmtResult>>> = Vec::with_capacity(entries.len());
        // Statements (entry, work, statement) that ended the whole transaction when run; on a
        // rerun they are reported with the recorded error instead of being run again.
        let mut aborted: Vec<((usize, usize, usize), String)> = Vec::new();
        // Entries before `done` are committed (a statement that cannot run in a transaction
        // forced a commit); a rerun resumes from there.
        let mut done = 0;
        let mut reruns = 0usize;
        'batch: loop {
            self.conn.conn.execute_batch("BEGIN")?;
            out.truncate(done);
            let mut i = done;
            while i < entries.len() {
                let works = &entries[i];
                // A statement that must run outside a transaction is honoured only when it is
                // its entry's sole request, so the entry still commits as a whole.
                if let [work] = works.as_slice()
                    && let Some((req, mode)) = request_of(*work)
                    && exec::needs_autocommit_request(req, mode)
                {
                    if i > 0 {
                        self.write_state(&state_after(i - 1))?;
                    }
                    self.conn.conn.execute_batch("COMMIT")?;
                    let res = exec::run_autocommit(&self.conn, req, mode)?;
                    self.conn.conn.execute_batch("BEGIN")?;
                    self.write_state(&state_after(i))?;
                    self.conn.conn.execute_batch("COMMIT")?;
                    out.push(vec![res]);
                    done = i + 1;
                    if done == entries.len() {
                        return Ok(out);
                    }
                    self.conn.conn.execute_batch("BEGIN")?;
                    i += 1;
                    continue;
                }
                let mut entry_results = Vec::with_capacity(works.len());
                for (j, work) in works.iter().enumerate() {
                    let Some((req, mode)) = request_of(*work) else {
                        entry_results.push(Vec::new());
                        continue;
                    };
                    let skip = |s: usize| aborted.iter().find(|(k, _)| *k == (i, j, s)).map(|(_, e)| e.clone());
                    match exec::run_in_batch(&self.conn, req, mode, &skip)? {
                        Outcome::Done(results) => entry_results.push(results),
                        Outcome::Aborted { statement, error } => {
                            // SQLite rolled back the whole transaction (ON CONFLICT ROLLBACK,
                            // interrupt...). Redo from the last commit with this statement
                            // reported, not run.
                            reruns += 1;
                            if reruns > MAX_RERUNS {
                                return Err(Error::Storage(format!("batch aborted {reruns} times: {error}")));
                            }
                            if !self.conn.conn.is_autocommit() {
                                self.conn.conn.execute_batch("ROLLBACK")?;
                            }
                            aborted.push(((i, j, statement), error));
                            continue 'batch;
                        }
                    }
                }
                out.push(entry_results);
                i += 1;
            }
            self.write_state(&state_after(entries.len() - 1))?;
            self.conn.conn.execute_batch("COMMIT")?;
            return Ok(out);
        }
    }

    /// Copies the WAL into the database file and empties it, with a full sync, so the main file
    /// holds every committed transaction. Readers holding old pages can keep the WAL from being
    /// emptied; then as much as possible is copied and `Ok(false)` says to try again later. The
    /// wait for readers is bounded, so writes pause only briefly.
    pub fn checkpoint(&self) -> Result<bool, Error> {
        self.conn
            .trusted(|c| {
                c.busy_timeout(CHECKPOINT_WAIT)?;
                c.execute_batch("PRAGMA synchronous=FULL")?;
                let r = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
                let restore = c
                    .execute_batch("PRAGMA synchronous=OFF")
                    .and_then(|_| c.busy_timeout(BUSY_TIMEOUT));
                let busy = r?;
                restore?;
                Ok(busy == 0)
            })
            .map_err(Error::from)
    }

    /// Size of the WAL file in bytes.
    pub fn wal_size(&self) -> u64 {
        std::fs::metadata(self.path.with_extension("sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Replaces the database file with the SQLite file at `src`, then reopens it. With
    /// `state`, that state blob is written into the new file first (otherwise the file carries
    /// its own, as a snapshot does). The copy goes through a temporary file and a rename, so a
    /// crash leaves either the old database or the new one with its state.
    pub fn replace_with(&mut self, path: &Path, src: &Path, state: Option<&[u8]>) -> Result<(), Error> {
        let tmp = path.with_extension("sqlite.replacing");
        for ext in ["sqlite.replacing-wal", "sqlite.replacing-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        std::fs::copy(src, &tmp)?;
        if let Some(state) = state {
            let db = Database::open(&tmp, self.cfg)?;
            db.write_state(state)?;
            // Closing the last connection folds its WAL back into the file.
            drop(db);
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        fail::fail_point!("replace-before-rename");
        // Close the writer before the file changes under it.
        let old = std::mem::replace(&mut self.conn, Conn::open_memory(self.cfg)?);
        drop(old);
        for ext in ["sqlite-wal", "sqlite-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.conn = open_prepared(path, self.cfg)?;
        self.path = path.to_path_buf();
        Ok(())
    }

    /// The write connection's reported pragmas (see `stats::pragmas`).
    pub fn pragmas(&self) -> std::collections::BTreeMap<String, String> {
        crate::stats::pragmas(&self.conn.conn)
    }
}

/// The request and how it runs, for work items that carry one.
fn request_of(w: Work<'_>) -> Option<(&Request, Mode)> {
    match w {
        Work::Execute(r) => Some((r, Mode::Execute)),
        Work::Query(r) => Some((r, Mode::Query)),
        Work::Request(r) => Some((r, Mode::Request)),
        Work::Nothing => None,
    }
}

/// Longest a checkpoint waits for readers before it settles for a partial copy.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// The write connection's usual busy timeout (also rqlite's).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bound on how often one batch may be redone because statements aborted the transaction.
const MAX_RERUNS: usize = 10_000;
