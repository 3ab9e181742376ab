//! Requests nodes send one another besides Raft's own. Every reply is a postcard
//! `Result<T, StoreError>`.

use serde::{Deserialize, Serialize};

/// Ask the leader to add a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: String,
    /// The joining node's node-to-node address.
    pub addr: String,
    pub voter: bool,
}

/// A node announcing itself to form a cluster (`-bootstrap-expect`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyRequest {
    pub id: String,
    pub addr: String,
}

/// Ask the leader to remove a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub id: String,
}

/// Ask the leader to hand leadership to `id` (or to the best-placed voter).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepdownRequest {
    pub id: Option<String>,
    pub wait: bool,
}
