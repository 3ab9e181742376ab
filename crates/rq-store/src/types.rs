//! openraft's type configuration for rqlite-rs, and the membership node record.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use rq_proto::{Applied, Logged};

/// A cluster member as the Raft membership records it.
///
/// rqlite identifies nodes by strings; openraft 0.9 needs a `Copy` id, so the numeric id is
/// derived from the string (`raft_id`) and the string travels here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// rqlite's node id (`-node-id`).
    pub id: String,
    /// Advertised node-to-node address (`-raft-adv-addr`).
    pub addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Logged,
        R = Applied,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The numeric Raft id of an rqlite node id: the first 8 bytes of a SipHash of the string with
/// fixed keys, never 0. Stable across versions because `DefaultHasher::new()` is keyed with zeros.
pub fn raft_id(node_id: &str) -> u64 {
    #[allow(deprecated)] // SipHasher is the stable, fixed-key hash we persist ids with
    let mut h = std::hash::SipHasher::new();
    node_id.hash(&mut h);
    match h.finish() {
        0 => 1,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_id_is_stable_and_nonzero() {
        assert_eq!(raft_id("1"), raft_id("1"));
        assert_ne!(raft_id("1"), raft_id("2"));
        assert_ne!(raft_id(""), 0);
    }
}
