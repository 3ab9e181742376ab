//! Opening SQLite connections with explicit settings, and the guards every connection carries.
//!
//! Every connection gets: foreign keys as configured (bundled SQLite turns them on by default;
//! rqlite keeps them off unless `-fk`), an authorizer that refuses what would escape the data
//! directory or change durability settings, bounded lengths, and a progress handler that
//! enforces the per-statement deadline (`db_timeout`).

use std::cell::Cell;
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};

use crate::Error;

/// SQLite's virtual-machine steps between two deadline checks.
const PROGRESS_STEPS: i32 = 1000;
/// Largest string or blob a statement may create or bind (SQLite's own default is 1 GB).
const MAX_LENGTH: i32 = 256 * 1024 * 1024;
/// Largest SQL text SQLite will prepare.
const MAX_SQL_LENGTH: i32 = 64 * 1024 * 1024;
/// Deepest expression tree a statement may parse into (SQLite's default; set so that it stays
/// whatever SQLite's own default becomes): deeper nesting is refused, not a deep recursion.
const MAX_EXPR_DEPTH: i32 = 1000;
/// Longest LIKE or GLOB pattern, which bounds the cost of matching one.
const MAX_LIKE_PATTERN: i32 = 50_000;
/// Most `?NNN` parameters a statement may have.
const MAX_VARIABLES: i32 = 32_766;
/// Most terms of a compound SELECT (UNION and the like).
const MAX_COMPOUND_SELECT: i32 = 500;
/// Deepest chain of triggers firing triggers.
const MAX_TRIGGER_DEPTH: i32 = 100;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;
/// SQL texts a connection remembers having prepared, by hash (see `Conn::prepare`).
const SEEN_TEXTS: usize = 256;

/// Settings shared by all connections to one database.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnConfig {
    /// `PRAGMA foreign_keys` (`-fk`).
    pub foreign_keys: bool,
}

/// A per-connection deadline the progress handler checks; 0 means none. Beside it, a budget:
/// a shorter limit for work run on a thread that must not be held for long, after which the
/// work is stopped so that it can be run again elsewhere.
///
/// Stored as nanoseconds since `origin` so the handler reads one atomic for each.
#[derive(Clone)]
pub(crate) struct Deadline {
    origin: Instant,
    at: Arc<AtomicU64>,
    budget_at: Arc<AtomicU64>,
    /// Set when the budget stopped a statement.
    spent: Arc<AtomicBool>,
}

impl Deadline {
    fn new() -> Self {
        Deadline {
            origin: Instant::now(),
            at: Arc::new(AtomicU64::new(0)),
            budget_at: Arc::new(AtomicU64::new(0)),
            spent: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Gives the work that follows `budget` of time, until `end_budget`.
    pub(crate) fn start_budget(&self, budget: Duration) {
        self.spent.store(false, Ordering::Relaxed);
        let at = (self.origin.elapsed() + budget).as_nanos().max(1) as u64;
        self.budget_at.store(at, Ordering::Relaxed);
    }

    /// Ends the budget; returns whether it stopped a statement.
    pub(crate) fn end_budget(&self) -> bool {
        self.budget_at.store(0, Ordering::Relaxed);
        self.spent.swap(false, Ordering::Relaxed)
    }

    /// Whether the budget has stopped a statement since it started (it keeps running).
    pub(crate) fn budget_was_spent(&self) -> bool {
        self.spent.load(Ordering::Relaxed)
    }

    fn budget_spent(&self) -> bool {
        let at = self.budget_at.load(Ordering::Relaxed);
        if at != 0 && self.origin.elapsed().as_nanos() as u64 >= at {
            self.spent.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Arms the deadline `timeout` from now; a zero timeout disarms it.
    pub(crate) fn arm(&self, timeout: Duration) {
        let v = if timeout.is_zero() {
            0
        } else {
            (self.origin.elapsed() + timeout).as_nanos().max(1) as u64
        };
        self.at.store(v, Ordering::Relaxed);
    }

    pub(crate) fn disarm(&self) {
        self.at.store(0, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != 0 && self.origin.elapsed().as_nanos() as u64 >= at
    }
}

/// The SQLite extensions every connection loads (`-extensions-path`), set once at start.
static EXTENSIONS: std::sync::OnceLock<Vec<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Makes every connection opened from now on load the extensions at `paths`, after checking
/// that each one loads; the error names the file that does not.
pub fn set_extensions(paths: Vec<std::path::PathBuf>) -> Result<(), String> {
    let check = Connection::open_in_memory().map_err(|e| e.to_string())?;
    for p in &paths {
        load_extension(&check, p).map_err(|e| format!("failed to load extension {}: {e}", p.display()))?;
    }
    EXTENSIONS
        .set(paths)
        .map_err(|_| "the extensions are set already".to_string())
}

/// The extensions connections load.
pub fn extensions() -> &'static [std::path::PathBuf] {
    EXTENSIONS.get().map_or(&[], Vec::as_slice)
}

fn load_extensions(conn: &Connection) -> Result<(), Error> {
    for p in extensions() {
        load_extension(conn, p)?;
    }
    Ok(())
}

/// Loads one extension through the C API only: SQL's `load_extension()` stays refused (and the
/// authorizer refuses it as well).
#[allow(unsafe_code)]
fn load_extension(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    // SAFETY: the extensions are code the operator chose to run in this process
    // (`-extensions-path`); they are loaded while no statement is running on `conn`, and the
    // guard turns extension loading off again before any statement runs.
    unsafe {
        let _guard = rusqlite::LoadExtensionGuard::new(conn)?;
        conn.load_extension(path, None::<&str>)
    }
}

/// A connection and the deadline its progress handler watches.
pub struct Conn {
    /// The preupdate hook, if any: declared first so that it is dropped (unregistered) before
    /// the connection closes.
    pub(crate) preupdate: Option<crate::preupdate::Hook>,
    /// The readiness probe's statement, once it has run here: declared before the connection,
    /// so that it is finalized before the connection closes.
    pub(crate) probe: std::cell::OnceCell<crate::probe::ProbeStmt>,
    pub(crate) conn: Connection,
    pub(crate) deadline: Deadline,
    /// While set, the authorizer lets through what only the node itself may do.
    trusted: Arc<AtomicBool>,
    /// Change capture, on the write connection when it is on.
    pub(crate) capture: Option<Arc<crate::capture::Capture>>,
    /// Hashes of the SQL texts prepared lately, one slot per hash modulo its length.
    seen: Box<[Cell<u64>]>,
    /// Seeded the same in every process, so which texts share a slot never changes from run
    /// to run (a collision costs only a preparation).
    hasher: foldhash::fast::FixedState,
}

/// A statement prepared by `Conn::prepare`: kept in the connection's cache, or for one use.
pub(crate) enum Prepared<'c> {
    Kept(rusqlite::CachedStatement<'c>),
    Once(rusqlite::Statement<'c>),
}

impl<'c> Deref for Prepared<'c> {
    type Target = rusqlite::Statement<'c>;

    fn deref(&self) -> &Self::Target {
        match self {
            Prepared::Kept(s) => s,
            Prepared::Once(s) => s,
        }
    }
}

impl DerefMut for Prepared<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Prepared::Kept(s) => s,
            Prepared::Once(s) => s,
        }
    }
}

impl Conn {
    /// The write connection: the only one that changes the database.
    pub fn open_writer(path: &Path, cfg: ConnConfig) -> Result<Conn, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)?;
        // WAL lets readers run beside the writer. Commits are not fsynced: the Raft log is what
        // makes a write durable. The node checkpoints the WAL itself (`Database::checkpoint`)
        // and syncs the main file before it trusts it to hold what was applied.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Conn::finish(conn, cfg)
    }

    /// A read-only connection for the read pool.
    pub fn open_reader(path: &Path, cfg: ConnConfig) -> Result<Conn, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Conn::finish(conn, cfg)
    }

    /// An in-memory connection, for checks that must not touch the database.
    pub fn open_memory(cfg: ConnConfig) -> Result<Conn, Error> {
        Conn::finish(Connection::open_in_memory()?, cfg)
    }

    fn finish(mut conn: Connection, cfg: ConnConfig) -> Result<Conn, Error> {
        load_extensions(&conn)?;
        // Only the writer's own checkpoints may change the database file (see `file_state`),
        // never a connection that happens to close last.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        conn.pragma_update(None, "foreign_keys", cfg.foreign_keys)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Defensive mode: no SQL can corrupt the file (writable_schema, schema_version, writes
        // to sqlite_dbpage or to virtual tables' shadow tables).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_LENGTH)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_LENGTH)?;
        conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, MAX_EXPR_DEPTH)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_LIKE_PATTERN)?;
        conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, MAX_VARIABLES)?;
        conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, MAX_COMPOUND_SELECT)?;
        conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, MAX_TRIGGER_DEPTH)?;
        let trusted = Arc::new(AtomicBool::new(false));
        let t = trusted.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if t.load(Ordering::Relaxed) {
                Authorization::Allow
            } else {
                authorize(ctx)
            }
        }))?;
        let deadline = Deadline::new();
        let d = deadline.clone();
        conn.progress_handler(PROGRESS_STEPS, Some(move || d.expired() || d.budget_spent()))?;
        Ok(Conn {
            preupdate: None,
            conn,
            deadline,
            trusted,
            capture: None,
            seen: (0..SEEN_TEXTS).map(|_| Cell::new(0)).collect(),
            probe: std::cell::OnceCell::new(),
            hasher: foldhash::fast::FixedState::default(),
        })
    }

    /// Prepares `sql`, one statement. Text this connection prepared lately comes from, and is
    /// kept in, its statement cache; text seen for the first time is prepared for one use. A
    /// statement meant to be kept is prepared without the connection's lookaside memory (SQLite's
    /// `SQLITE_PREPARE_PERSISTENT`, which rusqlite's cache asks for), so each of its few dozen
    /// allocations goes to the system allocator: for SQL run once, such as a point SELECT with
    /// its id written into the text, that cost a sixth of the node's instructions per request.
    /// A repeated text, a parameterized statement above all, is kept from its second use. A
    /// statement prepared to `inspect` it, not to run it, is not a use.
    pub(crate) fn prepare(&self, sql: &str, inspect: bool) -> rusqlite::Result<Prepared<'_>> {
        let hash = self.hasher.hash_one(sql);
        let slot = &self.seen[(hash % SEEN_TEXTS as u64) as usize];
        let seen = slot.get() == hash;
        if !inspect {
            slot.set(hash);
        }
        if seen {
            self.conn.prepare_cached(sql).map(Prepared::Kept)
        } else {
            self.conn.prepare(sql).map(Prepared::Once)
        }
    }

    /// Whether `sql` is to run as written rather than in another form (`exec::prepare_lifted`):
    /// it was run as written lately (so it is kept, see `prepare`), or it ran in the other form
    /// the last time it was seen, which then counts as its first use as written. So a text
    /// that comes again and again is prepared as written, and kept, from its third use. A
    /// text that is only inspected counts no use.
    pub(crate) fn runs_as_written(&self, sql: &str, inspect: bool) -> bool {
        let hash = self.hasher.hash_one(sql);
        let slot = &self.seen[(hash % SEEN_TEXTS as u64) as usize];
        // The mark of a text run in another form differs from its hash in the lowest bit.
        let other_form = hash ^ 1;
        let seen = slot.get();
        if seen == hash {
            return true;
        }
        if !inspect {
            slot.set(if seen == other_form { hash } else { other_form });
        }
        false
    }

    /// Runs `f` with the authorizer's user restrictions lifted, for the node's own statements.
    pub(crate) fn trusted<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        self.trusted.store(true, Ordering::Relaxed);
        let r = f(&self.conn);
        self.trusted.store(false, Ordering::Relaxed);
        r
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Pragmas whose value must not be changed through the API: the node's durability and
/// checkpointing settings, which rqlite reserves for itself, and SQLite's heap limits, which
/// would bound nothing: SQLite is built without the memory statistics they are enforced from
/// (`.cargo/config.toml`), so setting one is refused rather than accepted and ignored.
pub(crate) const RESERVED_PRAGMAS: [&str; 7] = [
    "journal_mode",
    "wal_autocheckpoint",
    "wal_checkpoint",
    "synchronous",
    "query_only",
    "soft_heap_limit",
    "hard_heap_limit",
];

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        // Attaching opens arbitrary files; the database is the one file a node serves. VACUUM
        // attaches a nameless temporary database, which stays allowed (a user's own ATTACH is
        // refused before it gets here, see `sql::attaches`); VACUUM INTO names a file and is
        // refused.
        AuthAction::Attach { filename: "" } => Authorization::Allow,
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let reserved = RESERVED_PRAGMAS.contains(&name.as_str());
            if reserved && (pragma_value.is_some() || name == "wal_checkpoint") {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}
