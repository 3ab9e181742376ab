//! A small pool of read-only connections.
//!
//! Connections are opened lazily up to a limit (`-db-max-ro-conns`); a caller that finds none
//! free waits, up to a bound. Each connection keeps its prepared-statement cache, which is most
//! of what makes repeated point reads cheap. Callers run on blocking threads: this module
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
        })
    }

    /// An idle connection, if there is one; never blocks (opening a connection is left to `get`).
    pub fn try_get(self: &Arc<Self>) -> Option<PooledConn> {
        let mut st = self.state.lock().unwrap();
        let c = st.idle.pop()?;
        let generation = st.generation;
        drop(st);
        Some(self.loan(c, generation))
    }

    /// A free connection, opening one if the limit allows, else waiting for one.
    pub fn get(self: &Arc<Self>) -> Result<PooledConn, Error> {
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
