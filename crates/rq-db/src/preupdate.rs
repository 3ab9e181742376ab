//! SQLite's preupdate hook on a connection, with a safe interface.
//!
//! rusqlite wraps this hook only behind a feature that regenerates SQLite's bindings at build
//! time, which needs libclang on the building machine. The bindings libsqlite3-sys ships
//! declare the hook's functions already, and SQLite is compiled with
//! `SQLITE_ENABLE_PREUPDATE_HOOK` (`.cargo/config.toml`), so this module calls them directly:
//! registration, a trampoline that hands each change to a Rust closure, and reads of the old
//! and new column values while the hook runs.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;

use rusqlite::Connection;
use rusqlite::ffi;
use rusqlite::types::Value;

/// What the change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Insert,
    Update,
    Delete,
}

/// Access to the row being changed, valid while the hook runs.
pub struct Row<'a> {
    db: *mut ffi::sqlite3,
    _hook: PhantomData<&'a ()>,
}

impl Row<'_> {
    /// Columns in the row.
    pub fn count(&self) -> i32 {
        // SAFETY: `db` is the connection whose hook is running; SQLite allows this call there.
        unsafe { ffi::sqlite3_preupdate_count(self.db) }
    }

    /// Column `i` before the change (UPDATE, DELETE).
    pub fn old_value(&self, i: i32) -> Result<Value, String> {
        self.read(i, ffi::sqlite3_preupdate_old)
    }

    /// Column `i` after the change (INSERT, UPDATE).
    pub fn new_value(&self, i: i32) -> Result<Value, String> {
        self.read(i, ffi::sqlite3_preupdate_new)
    }

    fn read(
        &self,
        i: i32,
        get: unsafe extern "C" fn(*mut ffi::sqlite3, c_int, *mut *mut ffi::sqlite3_value) -> c_int,
    ) -> Result<Value, String> {
        let mut v: *mut ffi::sqlite3_value = std::ptr::null_mut();
        // SAFETY: called from within the hook on its connection; SQLite fills `v` with a value
        // that stays valid until the hook returns, and checks `i` itself.
        let rc = unsafe { get(self.db, i, &mut v) };
        if rc != ffi::SQLITE_OK || v.is_null() {
            return Err(format!("column {i}: SQLite error {rc}"));
        }
        // SAFETY: `v` is a valid protected value for the duration of the hook.
        Ok(unsafe { owned(v) })
    }
}

/// Copies a SQLite value out.
///
/// # Safety
/// `v` must be a valid `sqlite3_value` for the duration of the call.
unsafe fn owned(v: *mut ffi::sqlite3_value) -> Value {
    // SAFETY: per the function's contract; pointers returned for text and blobs are valid for
    // the length SQLite reports, read after the pointer as SQLite's documentation requires.
    unsafe {
        match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => Value::Integer(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v);
                if p.is_null() {
                    Value::Text(String::new())
                } else {
                    let bytes = std::slice::from_raw_parts(p, n.max(0) as usize);
                    Value::Text(String::from_utf8_lossy(bytes).into_owned())
                }
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_value_blob(v) as *const u8;
                let n = ffi::sqlite3_value_bytes(v);
                if p.is_null() {
                    Value::Blob(Vec::new())
                } else {
                    Value::Blob(std::slice::from_raw_parts(p, n.max(0) as usize).to_vec())
                }
            }
            _ => Value::Null,
        }
    }
}

/// The closure a hook calls: the action, database name ("main"), table, the old and new
/// row ids, and the row.
pub type HookFn = dyn FnMut(Action, &str, &str, i64, i64, &Row<'_>) + Send;

/// A hook registered on a connection. Dropping it unregisters it, so it must be dropped
/// before the connection closes (`Conn` declares it first).
pub struct Hook {
    db: *mut ffi::sqlite3,
    f: *mut Box<HookFn>,
}

// SAFETY: the hook is only touched with its connection, which moves between threads only as a
// whole (`Conn`), and the closure itself is `Send`.
unsafe impl Send for Hook {}

impl Hook {
    /// Registers `f` on `conn`, replacing any hook it had.
    pub fn register(conn: &Connection, f: Box<HookFn>) -> Hook {
        let f = Box::into_raw(Box::new(f));
        // SAFETY: `handle` is the open connection; `f` lives until this `Hook` is dropped,
        // which unregisters it first.
        let db = unsafe { conn.handle() };
        unsafe {
            ffi::sqlite3_preupdate_hook(db, Some(trampoline), f as *mut c_void);
        }
        Hook { db, f }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        // SAFETY: the connection is still open (see the type's documentation); after the call
        // SQLite no longer holds `f`, which is then freed once.
        unsafe {
            ffi::sqlite3_preupdate_hook(self.db, None, std::ptr::null_mut());
            drop(Box::from_raw(self.f));
        }
    }
}

unsafe extern "C" fn trampoline(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    db_name: *const c_char,
    table: *const c_char,
    old_rowid: i64,
    new_rowid: i64,
) {
    let action = match op {
        ffi::SQLITE_INSERT => Action::Insert,
        ffi::SQLITE_UPDATE => Action::Update,
        ffi::SQLITE_DELETE => Action::Delete,
        _ => return,
    };
    // SAFETY: SQLite passes back the pointer registered with the hook, and NUL-terminated
    // names valid for the call.
    let (f, db_name, table) = unsafe {
        (
            &mut *(ctx as *mut Box<HookFn>),
            CStr::from_ptr(db_name).to_string_lossy(),
            CStr::from_ptr(table).to_string_lossy(),
        )
    };
    let row = Row { db, _hook: PhantomData };
    // A panic must not unwind into SQLite.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f(action, &db_name, &table, old_rowid, new_rowid, &row);
    }));
}
