//! A small pool of read-only connections.
//!
//! Connections are opened lazily up to a limit (`-db-max-ro-conns`); a caller that finds none
//! free waits, up to a bound. Each connection keeps its prepared-statement cache, which is most
//! of what makes repeated point reads cheap. A pinned read (`ReadPin`) keeps reads from
//! taking and dropping a kernel lock each. Callers run on blocking threads: this module
//! blocks and knows nothing of async.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::Error;
use crate::conn::{Conn, ConnConfig};

/// Upper bound on pooled connections when the configured limit is 0 ("unlimited").
const HARD_MAX: usize = 1024;
/// Longest wait for a free connection before the read fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

struct State {
    idle: Vec<Conn>,
    /// Connections in existence, idle or on loan.
    open: usize,
    /// Bumped by `reset`: connections opened before it are closed when they come back.
    generation: u64,
    /// Callers waiting for a connection: only then does a returned one wake anybody (a wake
    /// is a system call, paid by every read otherwise).
    waiting: usize,
}

pub struct ReadPool {
    path: PathBuf,
    cfg: ConnConfig,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
    pin: Arc<ReadPin>,
}

/// A read transaction this process keeps open at the newest version of the database, so that
/// reads begin and end without a system call.
///
/// In WAL mode a read holds a shared lock on one of the WAL index's read marks for as long as
/// it runs. SQLite counts the process's holders of each lock and asks the kernel (`fcntl`) only
/// when the count goes from 0 to 1 and back: with reads one after another, that is two system
/// calls per read, 12% of the CPU of a 16-client point SELECT. While the pin holds the mark of
/// the newest version, a read of that version only moves the count. After a write the next
/// read moves the pin to the new version first (`refresh`), so a read-only stretch pays once.
///
/// The pin is a read like any other: it changes nothing, and reads on the pool's connections
/// see every committed write whatever it holds. What it could hold back is a checkpoint, which
/// cannot empty the WAL under a reader, and a file replaced under it: the database releases it
/// for both (`Database::set_read_pin`).
pub struct ReadPin {
    path: PathBuf,
    cfg: ConnConfig,
    /// Bumped after every change to the database (`changed`).
    version: std::sync::atomic::AtomicU64,
    held: Mutex<Pinned>,
}

#[derive(Default)]
struct Pinned {
    conn: Option<Conn>,
    /// The version the open transaction began at or after, if one is open.
    at: Option<u64>,
}

impl ReadPin {
    fn new(path: &Path, cfg: ConnConfig) -> ReadPin {
        ReadPin {
            path: path.to_path_buf(),
            cfg,
            version: std::sync::atomic::AtomicU64::new(0),
            held: Mutex::new(Pinned::default()),
        }
    }

    /// The database changed: the next read moves the pin.
    pub fn changed(&self) {
        self.version.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Moves the pin to the newest version, unless it is there already or someone else holds
    /// it (a checkpoint, another read moving it). Failing to pin only costs reads their system
    /// calls.
    fn refresh(&self) {
        let version = self.version.load(std::sync::atomic::Ordering::Acquire);
        let Ok(mut held) = self.held.try_lock() else {
            return;
        };
        if held.at == Some(version) {
            return;
        }
        if let Err(e) = held.pin(&self.path, self.cfg, version) {
            tracing::debug!(error = %e, "could not pin a read");
            held.conn = None;
            held.at = None;
        }
    }

    #[cfg(test)]
    pub(crate) fn is_pinned(&self) -> bool {
        self.held.lock().unwrap().at.is_some()
    }

    /// Releases the pin until the returned guard drops, and keeps reads from pinning again
    /// meanwhile; `reopen` also closes the pin's connection, for a database file about to be
    /// replaced.
    pub fn release(&self, reopen: bool) -> Released<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.release();
        if reopen {
            held.conn = None;
        }
        Released { _held: held, pin: self }
    }
}

/// No read pinned while this lives (`ReadPin::release`); when it drops, the next read pins the
/// database as it is then.
pub struct Released<'a> {
    _held: std::sync::MutexGuard<'a, Pinned>,
    pin: &'a ReadPin,
}

impl Drop for Released<'_> {
    fn drop(&mut self) {
        self.pin.changed();
    }
}

impl Pinned {
    fn release(&mut self) {
        if self.at.take().is_some()
            && let Some(c) = &self.conn
            && !c.conn.is_autocommit()
            && c.conn.execute_batch("COMMIT").is_err()
        {
            self.conn = None;
        }
    }

    fn pin(&mut self, path: &Path, cfg: ConnConfig, version: u64) -> Result<(), Error> {
        self.release();
        if self.conn.is_none() {
            let c = Conn::open_reader(path, cfg)?;
            // A pin never waits for a lock: it would hold up the checkpoint waiting to release it.
            c.conn.busy_timeout(Duration::ZERO)?;
            self.conn = Some(c);
        }
        let c = &self.conn.as_ref().expect("opened above").conn;
        c.execute_batch("BEGIN")?;
        // The first read begins the transaction, at the newest version.
        c.query_row("SELECT 1 FROM sqlite_master LIMIT 1", [], |_| Ok(()))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                e => Err(e),
            })?;
        self.at = Some(version);
        Ok(())
    }
}

/// A connection on loan from the pool; it goes back when dropped.
pub struct PooledConn {
    conn: Option<Conn>,
    generation: u64,
    pool: Arc<ReadPool>,
}

impl std::ops::Deref for PooledConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.deadline.disarm();
            let mut st = self.pool.state.lock().unwrap();
            if st.generation == self.generation {
                st.idle.push(c);
            } else {
                st.open -= 1;
            }
            let wake = st.waiting > 0;
            drop(st);
            if wake {
                self.pool.freed.notify_one();
            }
        }
    }
}

impl ReadPool {
    pub fn new(path: &Path, cfg: ConnConfig, max: usize) -> Arc<ReadPool> {
        let max = if max == 0 { HARD_MAX } else { max.min(HARD_MAX) };
        Arc::new(ReadPool {
            path: path.to_path_buf(),
            cfg,
            max,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                generation: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            pin: Arc::new(ReadPin::new(path, cfg)),
        })
    }

    /// The pin the database must release for checkpoints and replacements (see `ReadPin`).
    pub fn pin(&self) -> Arc<ReadPin> {
        self.pin.clone()
    }

    /// An idle connection, if there is one; never blocks (opening a connection is left to `get`).
    pub fn try_get(self: &Arc<Self>) -> Option<PooledConn> {
        self.pin.refresh();
        let mut st = self.state.lock().unwrap();
        let c = st.idle.pop()?;
        let generation = st.generation;
        drop(st);
        Some(self.loan(c, generation))
    }

    /// A free connection, opening one if the limit allows, else waiting for one.
    pub fn get(self: &Arc<Self>) -> Result<PooledConn, Error> {
        self.pin.refresh();
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(self.loan(c, st.generation));
            }
            if st.open < self.max {
                st.open += 1;
                let generation = st.generation;
                drop(st);
                return match Conn::open_reader(&self.path, self.cfg) {
                    Ok(c) => Ok(self.loan(c, generation)),
                    Err(e) => {
                        // The place is free again: a waiter may open it.
                        let mut st = self.state.lock().unwrap();
                        st.open -= 1;
                        let wake = st.waiting > 0;
                        drop(st);
                        if wake {
                            self.freed.notify_one();
                        }
                        Err(e)
                    }
                };
            }
            st.waiting += 1;
            let (next, timeout) = self.freed.wait_timeout(st, ACQUIRE_TIMEOUT).unwrap();
            st = next;
            st.waiting -= 1;
            if timeout.timed_out() && st.idle.is_empty() {
                return Err(Error::PoolExhausted);
            }
        }
    }

    fn loan(self: &Arc<Self>, c: Conn, generation: u64) -> PooledConn {
        PooledConn {
            conn: Some(c),
            generation,
            pool: self.clone(),
        }
    }

    /// Closes every connection, idle now or on loan (when it comes back), so later reads open
    /// the database file afresh (after it was replaced).
    pub fn reset(&self) {
        let mut st = self.state.lock().unwrap();
        st.generation += 1;
        st.open -= st.idle.len();
        st.idle.clear();
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.freed.notify_all();
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// (open, idle) connection counts.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.open, st.idle.len())
    }
}
