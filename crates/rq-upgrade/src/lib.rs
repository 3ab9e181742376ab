//! Reading data directories written by rqlite (v7 to v10), to open them in place: the Raft log
//! and stable store in `raft.db` (BoltDB), decoded without bbolt.

pub mod bolt;
pub mod command;
pub mod inspect;
pub mod raft_db;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use inspect::{Found, Layout, inspect, layout};
