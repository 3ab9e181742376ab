//! Whole-database copies: consistent copies for snapshots, and checks of files that are about
//! to replace the database.

use std::path::Path;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::Error;

/// Pages copied between two flushes of a copy to disk (8 MiB at 4 KiB pages).
const COPY_STEP_PAGES: std::os::raw::c_int = 2 * 1024;

/// Bound on waits for a lock while copying (10 ms each).
const MAX_COPY_WAITS: u32 = 1000;

/// The 16 bytes every SQLite database file starts with.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A read transaction on the live database, begun at a moment the caller chose (on the write
/// side, between two applies, so the caller knows exactly which work it sees), from which a
/// consistent copy is written later, on any thread, while the writer goes on committing.
pub struct PinnedRead {
    conn: Connection,
}

impl PinnedRead {
    /// Begins a read transaction on the database at `src`.
    pub fn begin(src: &Path) -> Result<PinnedRead, Error> {
        let conn = open_source(src)?;
        conn.execute_batch("BEGIN")?;
        // The first read starts the read transaction: everything after sees this one version.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        Ok(PinnedRead { conn })
    }

    /// Writes the pinned version into the new file `dst`, a single self-contained file in
    /// rollback-journal mode.
    pub fn copy_to(self, dst: &Path) -> Result<(), Error> {
        copy_from(&self.conn, dst, true)?;
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }
}

/// Output forms of `backup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BackupFormat {
    /// The database file as the node keeps it (its header says WAL mode).
    Binary,
    /// The database file converted to rollback-journal (DELETE) mode.
    Delete,
    /// A SQL text dump.
    Sql,
}

/// Writes a consistent backup of the database at `src` to the new file `dst`. `vacuum`
/// compacts a binary copy; `tables` limits a SQL dump.
pub fn backup(src: &Path, dst: &Path, format: BackupFormat, vacuum: bool, tables: &[String]) -> Result<(), Error> {
    match format {
        BackupFormat::Binary | BackupFormat::Delete => {
            copy(src, dst, format == BackupFormat::Delete)?;
            if vacuum {
                let c = Connection::open(dst)?;
                c.execute_batch("VACUUM")?;
            }
            Ok(())
        }
        BackupFormat::Sql => {
            use std::io::Write;
            let source = open_source(src)?;
            let mut out = std::io::BufWriter::new(std::fs::File::create(dst)?);
            crate::dump::dump(&source, tables, &mut out)?;
            out.flush()?;
            Ok(())
        }
    }
}

fn open_source(src: &Path) -> Result<Connection, Error> {
    let c = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    // Only the writer's own checkpoints may change the live file.
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

fn copy(src: &Path, dst: &Path, to_delete_mode: bool) -> Result<(), Error> {
    let source = open_source(src)?;
    source.execute_batch("BEGIN")?;
    copy_from(&source, dst, to_delete_mode)?;
    source.execute_batch("COMMIT")?;
    Ok(())
}

/// Copies the database `source` is open on into the new file `dst`. Called inside a read
/// transaction, the copy is of that transaction's one version.
fn copy_from(source: &Connection, dst: &Path, to_delete_mode: bool) -> Result<(), Error> {
    let _ = std::fs::remove_file(dst);
    let mut dest = Connection::open(dst)?;
    let backup = Backup::new(source, &mut dest)?;
    // Copy in steps, flushing the copy to disk after each: one large flush at the end would
    // saturate the disk and stall the log's fsyncs behind it. An enclosing read transaction
    // holds across steps, so the copy is still of one version.
    let flusher = std::fs::OpenOptions::new().write(true).open(dst)?;
    let mut waits = 0;
    loop {
        match backup.step(COPY_STEP_PAGES)? {
            StepResult::Done => break,
            StepResult::More => flusher.sync_data()?,
            _ => {
                waits += 1;
                if waits > MAX_COPY_WAITS {
                    return Err(Error::Storage("database copy kept finding the database locked".into()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    drop(backup);
    // The copy of a WAL database is itself in WAL mode.
    if to_delete_mode {
        dest.pragma_update(None, "journal_mode", "DELETE")?;
    }
    Ok(())
}

/// Checks that `path` is an intact SQLite database: its header, then `PRAGMA quick_check`.
pub fn validate(path: &Path) -> Result<(), Error> {
    let mut header = [0u8; 16];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        f.read_exact(&mut header)
            .map_err(|_| Error::Corrupt("file is too short to be a SQLite database".into()))?;
    }
    if &header != SQLITE_HEADER {
        return Err(Error::Corrupt("file is not a SQLite database".into()));
    }
    // Opening a WAL-mode file makes `-wal` and `-shm` files beside it, which a read-only
    // connection leaves behind: remove the ones this check made.
    let siblings: Vec<std::path::PathBuf> = ["-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::path::PathBuf::from(p)
        })
        .filter(|p| !p.exists())
        .collect();
    let checked = (|| {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let result: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if result != "ok" {
            return Err(Error::Corrupt(format!("integrity check failed: {result}")));
        }
        Ok(())
    })();
    for p in siblings {
        let _ = std::fs::remove_file(p);
    }
    checked
}
