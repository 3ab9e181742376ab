//! Errors of the store facade. Only the HTTP layer turns these into status codes.

use crate::types::NodeInfo;

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    /// This node is not the leader; `leader` is the leader if one is known.
    #[error("not leader")]
    NotLeader { leader: Option<NodeInfo> },
    #[error("store not ready")]
    NotReady,
    /// `/boot` needs a cluster of exactly one node.
    #[error("not single-node")]
    NotSingleNode,
    /// A whole-database operation is already under way.
    #[error("{0}")]
    Busy(String),
    #[error("store not open")]
    NotOpen,
    /// A `none` read on a node whose last contact with the leader is too old.
    #[error("stale read")]
    StaleRead,
    #[error("disallowed pragma")]
    DisallowedPragma,
    /// A statement could not be made deterministic.
    #[error("SQL rewrite: {0}")]
    Rewrite(String),
    /// A bounded wait ran out; the message says which.
    #[error("{0}")]
    Timeout(String),
    /// Something that is not the client's fault and not expected: storage, shutdown, internal.
    #[error("{0}")]
    Internal(String),
    /// This node stopped being leader after logging the entry and before it committed: it may
    /// still commit under the next leader, so the outcome is unknown (unlike `NotLeader`, which
    /// means nothing was logged).
    #[error("leadership lost while committing log")]
    LeadershipLost,
    /// The credentials passed along with a request from another node do not allow it here.
    #[error("unauthorized")]
    Unauthorized,
}
