//! Every SQLite connection of a node: opening them with explicit settings, executing requests
//! with rqlite's result encoding, read-only checks, statement rewriting, and whole-file copies.
//!
//! This crate knows nothing of Raft, HTTP or async; callers run it on threads that may block.

pub mod capture;
pub mod conn;
mod database;
pub mod dump;
pub mod exec;
mod file_state;
mod gotime;
mod lex;
mod literals;
pub mod pool;
pub mod preupdate;
mod probe;
pub mod snapshot;
pub mod sql;
pub mod stats;

#[cfg(test)]
mod fuzz_test;

pub use conn::{Conn, ConnConfig};
pub use database::{CaptureSink, Database, Work};
pub use file_state::remove_all as remove_database;
pub use pool::{PooledConn, ReadPool};

/// A failure of the database itself, as opposed to a SQL error in a statement (those are
/// results, see `rq_proto::StmtResult::Error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("database is corrupt: {0}")]
    Corrupt(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("no read connection became free in time")]
    PoolExhausted,
}
