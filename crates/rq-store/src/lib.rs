#![recursion_limit = "256"]
//! The replicated store: openraft's type configuration, the Raft log in segment files, the SQLite state
//! machine, snapshots, read consistency, and the `Store` facade that the HTTP layer talks to.
//!
//! This crate opens no sockets and knows nothing of HTTP.

pub mod cdc;
mod commit_gate;
pub mod error;
mod follower_read;
mod freshness;
pub mod log_store;
mod membership;
pub mod metric;
mod read_index;
mod recovery;
mod run_marker;
pub mod snapshot;
pub mod state_machine;
pub mod stats;
mod status;
mod store;
pub mod types;
mod upgrade;

pub use error::StoreError;
pub use follower_read::{ReadIndexAsk, ReadIndexSource};
pub use membership::JoinOutcome;
pub use read_index::VoteProbe;
pub use rq_db::snapshot::BackupFormat;
pub use store::{
    BackupOptions, CdcCapture, Forward, LOG_DIR, Outcome, ReadOptions, SqlOptions, Store, StoreConfig, trailing_logs,
};
pub use types::NodeInfo;
pub use upgrade::open_rqlite_data;

#[cfg(test)]
mod suite_test;

/// The version of the linked SQLite.
pub fn sqlite_version() -> &'static str {
    rq_db::stats::sqlite_version()
}
