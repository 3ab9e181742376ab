//! The write side of the database: applying batches of committed work in one transaction,
//! checkpoints, and replacing the file; and, beside the file, the record of which work it
//! holds (`file_state`).
//!
//! Architecture invariant: the database file changes only through `checkpoint` and
//! `replace_with`, each of which clears the state record before the file changes and writes
//! it again once the new file is synced. Commits in between reach only the WAL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rq_proto::{Request, StmtResult};
use rusqlite::OptionalExtension;
use rusqlite::config::DbConfig;

use crate::Error;
use crate::capture::{Capture, CaptureConfig, RowEvent};
use crate::conn::{Conn, ConnConfig};
use crate::exec::{self, Mode, Outcome};
use crate::file_state::{self, sibling};

/// The table in which databases written by earlier versions kept their state blob.
const LEGACY_STATE_TABLE: &str = "sqlite_rqlite";

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
    /// Whether a valid state record describes the file now.
    recorded: bool,
    /// Change capture, when on: the capture, and where committed changes go.
    capture: Option<(Arc<Capture>, CaptureSink)>,
    /// The log index of each entry of the batch being applied, for captured changes.
    entry_ids: Vec<u64>,
    /// The read pool's pinned read, released for checkpoints and replacements.
    read_pin: Option<Arc<crate::pool::ReadPin>>,
}

/// Receives the changes of each committed batch, per log index in order, before the batch's
/// commit: what it holds is then at least as durable as the changes themselves.
pub type CaptureSink = Box<dyn FnMut(Vec<(u64, Vec<RowEvent>)>) -> Result<(), String> + Send>;

/// Reads the state blob of a database written by an earlier version, if it has one.
fn read_legacy_state(conn: &rusqlite::Connection) -> Result<Option<Vec<u8>>, Error> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [LEGACY_STATE_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    let blob: Option<Vec<u8>> = conn
        .query_row(
            &format!("SELECT state FROM {LEGACY_STATE_TABLE} WHERE id = 1"),
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(blob) = blob else { return Ok(Some(Vec::new())) };
    if blob.len() < 4 {
        return Err(Error::Corrupt("state record is truncated".into()));
    }
    let n = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    blob.get(4..4 + n)
        .map(|b| Some(b.to_vec()))
        .ok_or_else(|| Error::Corrupt("state record length exceeds its blob".into()))
}

/// Removes the legacy state table from the database `conn` is open on and returns the state it
/// held. SQLite refuses to drop a table whose name starts with `sqlite_`, so the table is first
/// renamed in the schema (the documented writable-schema procedure, with the schema version
/// bumped) to a `sqlite_stat` name, which it does let go; all in one transaction, with
/// `secure_delete` so that no byte of it is left in the freed pages.
fn take_legacy_state(conn: &rusqlite::Connection) -> Result<Option<Vec<u8>>, Error> {
    const DOOMED: &str = "sqlite_stat_rqlite_legacy";
    let Some(state) = read_legacy_state(conn)? else {
        return Ok(None);
    };
    // Defensive mode forbids exactly this; it is lifted for the migration only.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)?;
    conn.execute_batch("PRAGMA secure_delete=ON; BEGIN")?;
    let r = (|| -> rusqlite::Result<()> {
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_WRITABLE_SCHEMA, true)?;
        conn.execute(
            "UPDATE sqlite_master SET name = ?1, tbl_name = ?1, sql = ?2 WHERE name = ?3",
            [
                DOOMED,
                &format!("CREATE TABLE {DOOMED}(id INTEGER PRIMARY KEY, state BLOB NOT NULL)"),
                LEGACY_STATE_TABLE,
            ],
        )?;
        let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        conn.execute_batch(&format!("PRAGMA schema_version={}", version + 1))?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_WRITABLE_SCHEMA, false)?;
        conn.execute_batch(&format!("DROP TABLE {DOOMED}; COMMIT"))
    })();
    if r.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_WRITABLE_SCHEMA, false);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.execute_batch("PRAGMA secure_delete=OFF")?;
    r?;
    Ok(Some(state))
}

impl Database {
    /// Opens (creating if needed) the database file at `path` for writing, with the state blob
    /// the file holds, or `None` when the file cannot be trusted to hold any particular state
    /// (then the caller replaces it, see `replace_with` and `recreate`).
    ///
    /// A file with a valid state record holds exactly that state: its WAL is discarded. A new
    /// file holds the empty state. A file written by an earlier version is migrated: its state
    /// table is removed and its state recorded beside it.
    pub fn open(path: &Path, cfg: ConnConfig) -> Result<(Database, Option<Vec<u8>>), Error> {
        let mut db = Database {
            conn: Conn::open_memory(cfg)?,
            cfg,
            path: path.to_path_buf(),
            recorded: false,
            capture: None,
            entry_ids: Vec::new(),
            read_pin: None,
        };
        if let Some(state) = file_state::read(path)? {
            file_state::discard_wal(path)?;
            db.conn = Conn::open_writer(path, cfg)?;
            db.recorded = true;
            return Ok((db, Some(state)));
        }
        if !path.exists() {
            // A WAL without its database belongs to nothing.
            file_state::discard_wal(path)?;
            db.conn = Conn::open_writer(path, cfg)?;
            db.record_checkpoint(&[])?;
            return Ok((db, Some(Vec::new())));
        }
        db.conn = Conn::open_writer(path, cfg)?;
        let legacy = db.conn.trusted(|c| Ok(take_legacy_state(c)))?;
        match legacy? {
            Some(state) => {
                db.record_checkpoint(&state)?;
                // A fresh connection, so the user's first statement sees `last_insert_rowid()`
                // and `changes()` at 0, as on a new rqlite connection.
                db.conn = Conn::open_writer(path, cfg)?;
                tracing::info!(path = %path.display(), "moved the database's state out of the file");
                Ok((db, Some(state)))
            }
            None => Ok((db, None)),
        }
    }

    /// Replaces the file with an empty database, recorded as holding the empty state.
    pub fn recreate(&mut self) -> Result<(), Error> {
        self.recorded = false;
        {
            let pin = self.read_pin.clone();
            let _released = pin.as_ref().map(|p| p.release(true));
            self.conn = Conn::open_memory(self.cfg)?;
            file_state::remove_all(&self.path)?;
            self.conn = Conn::open_writer(&self.path, self.cfg)?;
        }
        self.install_capture()?;
        self.record_checkpoint(&[])
    }

    /// Checkpoints and records `state`; at start, with no readers, the checkpoint completes.
    fn record_checkpoint(&mut self, state: &[u8]) -> Result<(), Error> {
        if self.checkpoint(state)? {
            Ok(())
        } else {
            Err(Error::Storage("the database could not be checkpointed".into()))
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets the read pool pin a read (see `ReadPin`): applies tell it the database changed,
    /// and checkpoints and replacements release it first.
    pub fn set_read_pin(&mut self, pin: Arc<crate::pool::ReadPin>) {
        self.read_pin = Some(pin);
    }

    fn changed(&self) {
        if let Some(p) = &self.read_pin {
            p.changed();
        }
    }

    /// Turns change capture on: from now on every committed row change goes to `sink`.
    pub fn enable_capture(&mut self, cfg: CaptureConfig, sink: CaptureSink) -> Result<(), Error> {
        self.capture = Some((Capture::new(cfg), sink));
        self.install_capture()
    }

    pub fn capture_enabled(&self) -> bool {
        self.capture.is_some()
    }

    /// Puts the capture hook on the write connection (again, after it was reopened).
    fn install_capture(&mut self) -> Result<(), Error> {
        if let Some((c, _)) = &self.capture {
            // Unregister any hook first: dropping the old one after registering the new one
            // would unregister the new one.
            self.conn.preupdate = None;
            self.conn.preupdate = Some(c.hook(&self.conn.conn));
            self.conn.capture = Some(c.clone());
        }
        Ok(())
    }

    /// The log index of each entry of the next `apply`.
    pub fn set_entry_ids(&mut self, ids: Vec<u64>) {
        self.entry_ids = ids;
    }

    fn capture_entry(&self, entry: usize) {
        if let Some((c, _)) = &self.capture {
            c.set_entry(entry);
        }
    }

    /// Drops captured changes that will not be committed.
    fn discard_capture(&self) {
        if let Some((c, _)) = &self.capture {
            c.take();
        }
    }

    /// Hands the captured changes to the sink, grouped per log index: call just before a commit.
    fn flush_capture(&mut self) -> Result<(), Error> {
        let Some((c, sink)) = &mut self.capture else {
            return Ok(());
        };
        let events = c.take();
        if events.is_empty() {
            return Ok(());
        }
        let mut groups: Vec<(u64, Vec<RowEvent>)> = Vec::new();
        let mut last = usize::MAX;
        for (entry, e) in events {
            if entry != last {
                let id = self.entry_ids.get(entry).copied().unwrap_or(0);
                groups.push((id, Vec::new()));
                last = entry;
            }
            if let Some(g) = groups.last_mut() {
                g.1.push(e);
            }
        }
        sink(groups).map_err(Error::Storage)
    }

    /// Applies committed log entries in one transaction, each entry a list of work items.
    /// Returns, per entry, the results of each work item.
    ///
    /// SQL errors are results. `Err` means the database could not be written (I/O, full disk,
    /// corruption): the batch left no trace and the caller must stop applying.
    pub fn apply(&mut self, entries: &[Vec<Work<'_>>]) -> Result<Vec<Vec<Vec<StmtResult>>>, Error> {
        let r = self
            .run(entries, false)
            .map(|r| r.expect("an apply without a budget always completes"));
        self.changed();
        r
    }

    /// As `apply`, within `budget`, for a caller on a thread that must not be held for long:
    /// `None` if the budget ran out first, or if it meets an entry that must run outside a
    /// transaction (`run` gives up there, before committing anything). Then nothing was committed, and the caller applies the same entries with
    /// `apply` where waiting is fine; the entries being deterministic, that gives the results
    /// this run would have.
    pub fn apply_within(
        &mut self,
        entries: &[Vec<Work<'_>>],
        budget: std::time::Duration,
    ) -> Result<Option<Vec<Vec<Vec<StmtResult>>>>, Error> {
        self.conn.deadline.start_budget(budget);
        let r = self.run(entries, true);
        let spent = self.conn.deadline.end_budget();
        let r = match r {
            // Whatever failed, it may have been the budget's doing: undo and hand over.
            Err(_) if spent => self.give_up(),
            r => r,
        };
        self.changed();
        r
    }

    /// Ends a budgeted run that cannot finish: rolls back what it did.
    fn give_up(&mut self) -> Result<Option<Vec<Vec<Vec<StmtResult>>>>, Error> {
        self.conn.deadline.end_budget();
        self.discard_capture();
        if !self.conn.conn.is_autocommit() {
            self.conn.conn.execute_batch("ROLLBACK")?;
        }
        Ok(None)
    }

    /// The body of `apply` and `apply_within` (`budgeted`): `None` only when budgeted.
    fn run(&mut self, entries: &[Vec<Work<'_>>], budgeted: bool) -> Result<Option<Vec<Vec<Vec<StmtResult>>>>, Error> {
        if entries.is_empty() {
            return Ok(Some(Vec::new()));
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
            self.conn.conn.prepare_cached("BEGIN")?.execute([])?;
            self.discard_capture();
            out.truncate(done);
            let mut i = done;
            while i < entries.len() {
                let works = &entries[i];
                self.capture_entry(i);
                // A statement that must run outside a transaction is honoured only when it is
                // its entry's sole request, so the entry still commits as a whole.
                if let [work] = works.as_slice()
                    && let Some((req, mode)) = request_of(*work)
                    && exec::needs_autocommit_request(req, mode)
                {
                    if budgeted {
                        return self.give_up();
                    }
                    self.flush_capture()?;
                    self.conn.conn.execute_batch("COMMIT")?;
                    let res = exec::run_autocommit(&self.conn, req, mode)?;
                    self.flush_capture()?;
                    out.push(vec![res]);
                    done = i + 1;
                    if done == entries.len() {
                        return Ok(Some(out));
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
                            if budgeted && self.conn.deadline.budget_was_spent() {
                                return self.give_up();
                            }
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
            // Ending the budget before the commit also keeps the commit from being stopped.
            if budgeted && self.conn.deadline.end_budget() {
                return self.give_up();
            }
            self.flush_capture()?;
            self.conn.conn.prepare_cached("COMMIT")?.execute([])?;
            return Ok(Some(out));
        }
    }

    /// Copies the WAL into the database file and empties it, syncs the file, so that it holds
    /// every committed transaction, and records `state` (which must be the state applied
    /// so far) as what the file holds. Readers holding old pages can keep the WAL from being
    /// emptied; then as much as possible is copied, the file has no record until a later
    /// checkpoint completes, and `Ok(false)` says to try again later. The wait for readers is
    /// bounded, so writes pause only briefly.
    pub fn checkpoint(&mut self, state: &[u8]) -> Result<bool, Error> {
        if self.recorded {
            file_state::clear(&self.path)?;
            self.recorded = false;
        }
        fail::fail_point!("checkpoint-start");
        // The WAL cannot be emptied under the pinned read.
        let pin = self.read_pin.clone();
        let _released = pin.as_ref().map(|p| p.release(false));
        // With `synchronous=OFF` SQLite syncs neither the WAL nor the file here. The WAL never
        // needs it: a recorded file's WAL is discarded at start, and an unrecorded file is not
        // trusted. The file is synced before it is recorded (`file_state::write`). A WAL sync
        // would write out every frame since the last checkpoint, only for the truncation to
        // drop them, and the Raft log's syncs would queue behind it.
        let done = self.conn.trusted(|c| {
            c.busy_timeout(CHECKPOINT_WAIT)?;
            let r = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
            let restore = c.busy_timeout(BUSY_TIMEOUT);
            let busy = r?;
            restore?;
            Ok(busy == 0)
        })?;
        if done {
            fail::fail_point!("checkpoint-before-record");
            file_state::write(&self.path, state)?;
            self.recorded = true;
        }
        Ok(done)
    }

    /// Size of the WAL file in bytes.
    pub fn wal_size(&self) -> u64 {
        std::fs::metadata(sibling(&self.path, "-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Replaces the database file with the SQLite file at `src`, then reopens it, recorded as
    /// holding `state`. A state table that a file from an earlier version carries is removed
    /// first. The copy goes through a temporary file and a rename, so a crash leaves either the
    /// old file or the new one, and the new one has no record until it is complete and synced.
    pub fn replace_with(&mut self, src: &Path, state: &[u8]) -> Result<(), Error> {
        let path = self.path.clone();
        let tmp = sibling(&path, ".replacing");
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(sibling(&tmp, suffix));
        }
        std::fs::copy(src, &tmp)?;
        {
            // Closing this connection folds any WAL of its own back into the file.
            let c = rusqlite::Connection::open(&tmp)?;
            take_legacy_state(&c)?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        fail::fail_point!("replace-before-rename");
        file_state::clear(&path)?;
        self.recorded = false;
        // Close the writer, and the pinned read, before the file changes under them.
        let pin = self.read_pin.clone();
        let _released = pin.as_ref().map(|p| p.release(true));
        self.conn = Conn::open_memory(self.cfg)?;
        file_state::discard_wal(&path)?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.conn = Conn::open_writer(&path, self.cfg)?;
        self.install_capture()?;
        file_state::write(&path, state)?;
        self.recorded = true;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rq_proto::{Request, Statement, StmtResult};

    use super::*;

    fn request(sqls: &[&str]) -> Request {
        Request {
            statements: sqls.iter().map(|s| Statement::new(*s)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_pinned_read_sees_every_write_and_never_holds_up_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (mut db, _) = Database::open(&path, ConnConfig::default()).unwrap();
        let pool = crate::ReadPool::new(&path, ConnConfig::default(), 4);
        db.set_read_pin(pool.pin());
        db.apply(&[vec![Work::Execute(&request(&["CREATE TABLE t(x)"]))]])
            .unwrap();
        for i in 1..=3i64 {
            db.apply(&[vec![Work::Execute(&request(&["INSERT INTO t VALUES(1)"]))]])
                .unwrap();
            let c = pool.try_get().unwrap_or_else(|| pool.get().unwrap());
            let n: i64 = c.conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(n, i);
            drop(c);
            // The read pinned the newest version; the checkpoint still empties the WAL.
            assert!(pool.pin().is_pinned());
            assert!(
                db.checkpoint(b"state").unwrap(),
                "the pinned read held up checkpoint {i}"
            );
            assert_eq!(db.wal_size(), 0);
        }
        // A replaced file: the pin lets go of the old one, and reads pin the new one.
        let other = dir.path().join("other.sqlite");
        {
            let c = rusqlite::Connection::open(&other).unwrap();
            c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES(7)").unwrap();
        }
        db.replace_with(&other, b"state").unwrap();
        pool.reset();
        let c = pool.get().unwrap();
        let n: i64 = c.conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 7);
        drop(c);
        assert!(pool.pin().is_pinned());
        assert!(db.checkpoint(b"state").unwrap());
    }

    fn count(db: &Database) -> i64 {
        db.conn
            .conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// A database capturing changes into the returned list, as (index, op, table, before,
    /// after) with row images as "col=value" strings.
    #[allow(clippy::type_complexity)]
    fn capturing(cfg: CaptureConfig) -> (tempfile::TempDir, Database, Arc<std::sync::Mutex<Vec<(u64, String)>>>) {
        let d = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(&d.path().join("db.sqlite"), ConnConfig::default()).unwrap();
        let seen: Arc<std::sync::Mutex<Vec<(u64, String)>>> = Arc::default();
        let s = seen.clone();
        db.enable_capture(
            cfg,
            Box::new(move |groups| {
                for (index, events) in groups {
                    for e in events {
                        let image = |row: &Option<Vec<rusqlite::types::Value>>| match (row, &e.columns) {
                            (Some(r), Some(c)) => c
                                .iter()
                                .zip(r)
                                .map(|(c, v)| format!("{c}={v:?}"))
                                .collect::<Vec<_>>()
                                .join(","),
                            (Some(_), None) => "?".into(),
                            (None, _) => "-".into(),
                        };
                        let text = format!(
                            "{} {} {}>{} [{}] [{}]{}",
                            e.op.as_str(),
                            e.table,
                            e.old_rowid,
                            e.new_rowid,
                            image(&e.before),
                            image(&e.after),
                            e.error.as_deref().map(|x| format!(" error {x}")).unwrap_or_default()
                        );
                        s.lock().unwrap().push((index, text));
                    }
                }
                Ok(())
            }),
        )
        .unwrap();
        (d, db, seen)
    }

    fn apply_at(db: &mut Database, index: u64, req: &Request) {
        db.set_entry_ids(vec![index]);
        db.apply(&[vec![Work::Execute(req)]]).unwrap();
    }

    #[test]
    fn committed_row_changes_are_captured_per_entry_and_undone_ones_are_not() {
        let (_d, mut db, seen) = capturing(CaptureConfig::default());
        apply_at(
            &mut db,
            1,
            &request(&["CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT UNIQUE, data BLOB)"]),
        );
        assert!(seen.lock().unwrap().is_empty(), "DDL changes no rows");
        // Two entries in one batch: each keeps its own index.
        let ins = request(&["INSERT INTO t(name, data) VALUES('a', x'01'), ('b', NULL)"]);
        let upd = request(&["UPDATE t SET name = 'c' WHERE id = 2", "DELETE FROM t WHERE id = 1"]);
        db.set_entry_ids(vec![2, 3]);
        db.apply(&[vec![Work::Execute(&ins)], vec![Work::Execute(&upd)]])
            .unwrap();
        // A failed statement's rows, a failed transaction's rows, a user's rolled-back
        // transaction and a rolled-back savepoint leave nothing.
        let mut tx = request(&["INSERT INTO t(name) VALUES('d')", "INSERT INTO t(name) VALUES('c')"]);
        tx.transaction = true;
        apply_at(&mut db, 4, &tx);
        apply_at(&mut db, 5, &request(&["INSERT INTO t(name) VALUES('e'), ('c')"]));
        apply_at(
            &mut db,
            6,
            &request(&[
                "BEGIN",
                "INSERT INTO t(name) VALUES('f')",
                "ROLLBACK",
                "INSERT INTO t(name) VALUES('g')",
            ]),
        );
        apply_at(
            &mut db,
            7,
            &request(&[
                "SAVEPOINT one",
                "INSERT INTO t(name) VALUES('h')",
                "SAVEPOINT two",
                "INSERT INTO t(name) VALUES('i')",
                "ROLLBACK TO one",
                "INSERT INTO t(name) VALUES('j')",
                "RELEASE one",
            ]),
        );
        let got: Vec<(u64, String)> = seen.lock().unwrap().clone();
        let want: Vec<(u64, String)> = [
            (2, "INSERT t 0>1 [-] [id=Integer(1),name=Text(\"a\"),data=Blob([1])]"),
            (2, "INSERT t 0>2 [-] [id=Integer(2),name=Text(\"b\"),data=Null]"),
            (
                3,
                "UPDATE t 2>2 [id=Integer(2),name=Text(\"b\"),data=Null] [id=Integer(2),name=Text(\"c\"),data=Null]",
            ),
            (3, "DELETE t 1>0 [id=Integer(1),name=Text(\"a\"),data=Blob([1])] [-]"),
            (6, "INSERT t 0>3 [-] [id=Integer(3),name=Text(\"g\"),data=Null]"),
            (7, "INSERT t 0>4 [-] [id=Integer(4),name=Text(\"j\"),data=Null]"),
        ]
        .into_iter()
        .map(|(i, s)| (i, s.to_string()))
        .collect();
        assert_eq!(got, want);
        let rows: i64 = db
            .conn
            .conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3, "what was captured is what is there");
    }

    #[test]
    fn a_filter_limits_tables_and_row_ids_only_drops_images() {
        let cfg = CaptureConfig {
            table_filter: Some(regex::Regex::new("^keep").unwrap()),
            row_ids_only: true,
        };
        let (_d, mut db, seen) = capturing(cfg);
        apply_at(
            &mut db,
            1,
            &request(&["CREATE TABLE keep_me(x)", "CREATE TABLE other(x)"]),
        );
        apply_at(
            &mut db,
            2,
            &request(&["INSERT INTO keep_me VALUES(1)", "INSERT INTO other VALUES(1)"]),
        );
        // The hook survives the connection being replaced.
        db.recreate().unwrap();
        apply_at(
            &mut db,
            3,
            &request(&["CREATE TABLE keep_too(x)", "INSERT INTO keep_too VALUES(5)"]),
        );
        let got: Vec<(u64, String)> = seen.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                (2, "INSERT keep_me 0>1 [-] [-]".to_string()),
                (3, "INSERT keep_too 0>1 [-] [-]".to_string())
            ]
        );
    }

    #[test]
    fn an_apply_past_its_budget_commits_nothing_and_runs_again_in_full() {
        let d = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(&d.path().join("db.sqlite"), ConnConfig::default()).unwrap();
        let create = request(&["CREATE TABLE t(x INTEGER)"]);
        db.apply(&[vec![Work::Execute(&create)]]).unwrap();

        // Phase 1: a small entry fits its budget and commits.
        let one = request(&["INSERT INTO t VALUES(1)"]);
        let r = db
            .apply_within(&[vec![Work::Execute(&one)]], Duration::from_millis(500))
            .unwrap();
        assert!(matches!(r.as_deref(), Some([entry]) if matches!(entry[0].as_slice(), [StmtResult::Execute(_)])));
        assert_eq!(count(&db), 1);

        // Phase 2: a long one, after a short one in the same batch, runs out: nothing of either
        // is committed and the connection is out of its transaction.
        let long = request(&[
            "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT x FROM c",
        ]);
        let batch = [vec![Work::Execute(&one)], vec![Work::Execute(&long)]];
        assert!(db.apply_within(&batch, Duration::from_micros(200)).unwrap().is_none());
        assert_eq!(count(&db), 1);
        assert!(db.conn.conn.is_autocommit());

        // Phase 3: run again without a budget, the same batch applies in full.
        let r = db.apply(&batch).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(count(&db), 1 + 1 + 2_000_000);

        // Phase 4: an entry that must run outside a transaction is never run with a budget.
        let vacuum = request(&["VACUUM"]);
        assert!(
            db.apply_within(&[vec![Work::Execute(&vacuum)]], Duration::from_secs(5))
                .unwrap()
                .is_none()
        );
    }

    /// The error of each statement of `sqls` applied as writes, in order (empty for success).
    fn errors(db: &mut Database, sqls: &[&str]) -> Vec<String> {
        sqls.iter()
            .map(|sql| {
                let req = request(&[sql]);
                let r = db.apply(&[vec![Work::Execute(&req)]]).unwrap();
                match &r[0][0][..] {
                    [StmtResult::Error(e)] => e.clone(),
                    _ => String::new(),
                }
            })
            .collect()
    }

    #[test]
    fn no_sql_reaches_the_schema_or_the_pages_and_every_limit_holds() {
        let d = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(&d.path().join("db.sqlite"), ConnConfig::default()).unwrap();
        assert_eq!(errors(&mut db, &["CREATE TABLE t(x INTEGER)"]), [""]);
        // Defensive mode: writable_schema is ignored, so the schema cannot be edited by hand.
        let e = errors(
            &mut db,
            &[
                "PRAGMA writable_schema=ON",
                "UPDATE sqlite_master SET sql = 'CREATE TABLE t(y)' WHERE name = 't'",
            ],
        );
        assert!(e[1].contains("may not be modified"), "{e:?}");
        let version: i64 = db
            .conn
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap();
        let _ = errors(&mut db, &["PRAGMA schema_version=100"]);
        let after: i64 = db
            .conn
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(after, version);
        // Limits: expression depth, LIKE pattern length, parameter numbers, compound SELECTs.
        let deep = format!("SELECT {}1", "1+".repeat(1100));
        let like = format!("SELECT 'a' LIKE '{}'", "%".repeat(50_001));
        let compound = vec!["SELECT 1"; 501].join(" UNION ALL ");
        let e = errors(&mut db, &[&deep, &like, "SELECT ?32767", &compound]);
        assert!(e[0].contains("Expression tree is too large"), "{}", e[0]);
        assert!(e[1].contains("LIKE or GLOB pattern too complex"), "{}", e[1]);
        assert!(e[2].contains("variable number must be between"), "{}", e[2]);
        assert!(e[3].contains("too many terms in compound SELECT"), "{}", e[3]);
        // The database is intact.
        let ok: String = db
            .conn
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }
}
