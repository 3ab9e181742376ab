//! The record of which committed work the database file holds, kept in a file beside it
//! (`<db>.state`) so that the user's database holds only the user's objects.
//!
//! In WAL mode SQLite writes the main database file only when the WAL is checkpointed into it;
//! commits between checkpoints go to the WAL alone. The node checkpoints only on its write
//! connection, between two applies, so at the end of a complete checkpoint the file holds
//! exactly the work applied so far, and that is what the record then names.
//!
//! Architecture invariant: a record is valid only for the file it describes. It is removed,
//! durably, before the file is next changed (a checkpoint or a replacement), and written,
//! durably, only after the file was synced in its new form. It also carries the file's size
//! and modification time, so a file changed behind the node's back is not trusted. At start,
//! a record that matches its file says exactly what the file holds: the WAL written since
//! (committed or not) is discarded and the log replays that work. A file without a matching
//! record is not trusted at all.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record as stored: JSON, replaced atomically.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The database file's length when the record was written.
    size: u64,
    /// The database file's modification time then, in nanoseconds since the Unix epoch.
    modified_ns: u64,
    /// The caller's state blob (opaque here).
    state: Vec<u8>,
}

/// `<db><suffix>`: the files SQLite and the node keep beside a database.
pub(crate) fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(db.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn record_path(db: &Path) -> PathBuf {
    sibling(db, ".state")
}

fn fsync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => fs::File::open(".")?.sync_all(),
    }
}

/// Size and modification time of the database file.
fn fingerprint(db: &Path) -> io::Result<(u64, u64)> {
    let m = fs::metadata(db)?;
    let modified = m
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok((m.len(), modified))
}

/// The state recorded for the database file at `db`, if there is a record and the file is
/// still the one it describes.
pub(crate) fn read(db: &Path) -> io::Result<Option<Vec<u8>>> {
    let bytes = match fs::read(record_path(db)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(rec) = serde_json::from_slice::<Record>(&bytes) else {
        tracing::warn!(path = %record_path(db).display(), "unreadable database state record");
        return Ok(None);
    };
    match fingerprint(db) {
        Ok(fp) if fp == (rec.size, rec.modified_ns) => Ok(Some(rec.state)),
        Ok(_) => {
            tracing::warn!(path = %db.display(), "the database file changed since its state was recorded");
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Syncs the database file at `db` and records `state` for it as it is now.
pub(crate) fn write(db: &Path, state: &[u8]) -> io::Result<()> {
    fs::File::open(db)?.sync_all()?;
    let (size, modified_ns) = fingerprint(db)?;
    let rec = Record {
        size,
        modified_ns,
        state: state.to_vec(),
    };
    let path = record_path(db);
    let tmp = sibling(db, ".state.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&rec).map_err(io::Error::other)?)?;
        f.sync_all()?;
    }
    fail::fail_point!("state-record-before-rename");
    fs::rename(&tmp, &path)?;
    fsync_parent(&path)
}

/// Removes the record, durably: from here on the database file may change.
pub(crate) fn clear(db: &Path) -> io::Result<()> {
    let path = record_path(db);
    match fs::remove_file(&path) {
        Ok(()) => fsync_parent(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the database file and everything kept beside it: WAL, shared memory, record.
pub fn remove_all(db: &Path) -> io::Result<()> {
    clear(db)?;
    for p in [
        sibling(db, ""),
        sibling(db, "-wal"),
        sibling(db, "-shm"),
        sibling(db, ".state.tmp"),
    ] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Removes the WAL and shared-memory files of the database at `db`. Only safe while no
/// connection is open on it.
pub(crate) fn discard_wal(db: &Path) -> io::Result<()> {
    for p in [sibling(db, "-wal"), sibling(db, "-shm")] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_only_for_the_file_it_describes() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("db.sqlite");
        fs::write(&db, b"one").unwrap();
        assert_eq!(read(&db).unwrap(), None, "no record yet");
        write(&db, b"state").unwrap();
        assert_eq!(read(&db).unwrap(), Some(b"state".to_vec()));
        // The file changes behind the record's back: the record no longer holds.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&db, b"two!").unwrap();
        assert_eq!(read(&db).unwrap(), None);
        write(&db, b"again").unwrap();
        assert_eq!(read(&db).unwrap(), Some(b"again".to_vec()));
        clear(&db).unwrap();
        assert_eq!(read(&db).unwrap(), None);
        // A torn or foreign record is no record.
        fs::write(record_path(&db), b"{\"size\":").unwrap();
        assert_eq!(read(&db).unwrap(), None);
        remove_all(&db).unwrap();
        assert!(!db.exists() && !record_path(&db).exists());
    }
}
