//! The readiness probe's `SELECT 1`, prepared once per connection and run through SQLite's C
//! API.
//!
//! `/readyz` runs it on every call. Through rusqlite's statement cache the run took about 1.7k
//! instructions, most of them the cache's own: a look-up by text, taking the statement out of
//! the cache's list and putting it back, clearing bindings it never had. A statement the
//! connection owns needs only a step, a column read and a reset.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use rusqlite::Connection;
use rusqlite::ffi;

const SQL: &std::ffi::CStr = c"SELECT 1";

/// A prepared `SELECT 1` on one connection. It must be finalized before its connection
/// closes: `Conn` declares it before the connection, so it is dropped first.
pub(crate) struct ProbeStmt(NonNull<ffi::sqlite3_stmt>);

// SAFETY: the statement belongs to one connection and moves with it (both are fields of the
// same `Conn`); SQLite allows a connection and its statements to be used from any thread, one
// thread at a time, which `Conn` (not `Sync`) ensures.
unsafe impl Send for ProbeStmt {}

impl ProbeStmt {
    /// Prepares the probe on `conn`.
    pub(crate) fn prepare(conn: &Connection) -> Result<ProbeStmt, String> {
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `conn.handle()` is an open connection; `SQL` is NUL-terminated and its length
        // (-1) is read up to the NUL; `stmt` receives the statement or null.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                conn.handle(),
                SQL.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(ProbeStmt(stmt)),
            _ => Err(error_of(conn, rc)),
        }
    }

    /// Runs the probe: the connection answers, and the answer is 1.
    pub(crate) fn run(&self, conn: &Connection) -> Result<(), String> {
        let stmt = self.0.as_ptr();
        // SAFETY: `stmt` is a live statement of `conn`, used by this thread alone; it is reset
        // before this returns, so it holds no read transaction or lock afterwards.
        let (rc, one) = unsafe {
            let rc = ffi::sqlite3_step(stmt);
            let one = if rc == ffi::SQLITE_ROW {
                ffi::sqlite3_column_int64(stmt, 0)
            } else {
                0
            };
            ffi::sqlite3_reset(stmt);
            (rc, one)
        };
        match rc {
            ffi::SQLITE_ROW if one == 1 => Ok(()),
            ffi::SQLITE_ROW => Err(format!("SELECT 1 returned {one}")),
            rc => Err(error_of(conn, rc)),
        }
    }
}

impl Drop for ProbeStmt {
    fn drop(&mut self) {
        // SAFETY: the statement is live and dropped once, before its connection closes.
        unsafe {
            ffi::sqlite3_finalize(self.0.as_ptr());
        }
    }
}

/// The error for result code `rc`, worded as every other SQLite error (`exec::message`).
fn error_of(conn: &Connection, rc: std::ffi::c_int) -> String {
    // SAFETY: `conn.handle()` is open; SQLite returns a NUL-terminated message it owns, valid
    // until the next call on the connection, copied here at once.
    let msg = unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(conn.handle())) };
    let msg = Some(msg.to_string_lossy().into_owned()).filter(|m| !m.is_empty() && m != "not an error");
    crate::exec::message(&rusqlite::Error::SqliteFailure(ffi::Error::new(rc), msg))
}

#[cfg(test)]
mod tests {
    use crate::conn::{Conn, ConnConfig};
    use crate::exec::probe;

    /// How many of this process's file descriptors are open on `path`.
    fn open_on(path: &std::path::Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    #[test]
    fn the_probe_runs_again_and_again_and_its_connection_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Conn::open_writer(&path, ConnConfig::default()).unwrap());
        let conn = Conn::open_reader(&path, ConnConfig::default()).unwrap();
        for _ in 0..3 {
            assert_eq!(probe(&conn), Ok(()));
        }
        assert_eq!(open_on(&path), 1);
        // The statement is finalized before the connection closes; a connection with a
        // statement still prepared fails to close and stays open.
        drop(conn);
        assert_eq!(open_on(&path), 0);
    }

    #[test]
    fn a_probe_stopped_by_the_deadline_reports_sqlite_s_message() {
        let mut conn = Conn::open_memory(ConnConfig::default()).unwrap();
        conn.conn.progress_handler(1, Some(|| true)).unwrap();
        let err = probe(&conn).unwrap_err();
        assert!(err.contains("interrupted"), "{err}");
        conn.conn.progress_handler(1, None::<fn() -> bool>).unwrap();
        assert_eq!(probe(&conn), Ok(()));
    }
}
