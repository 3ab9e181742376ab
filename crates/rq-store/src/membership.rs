//! Cluster membership through the store: joining, removing, and forming a cluster from
//! `-bootstrap-expect` notifications.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};

use crate::error::StoreError;
use crate::store::Store;
use crate::types::{NodeInfo, raft_id};

/// Longest a membership change may take (it commits only once new voters have caught up).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

fn change_err(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader { leader: f.leader_node },
        other => StoreError::Internal(other.to_string()),
    }
}

/// What a join asks the leader to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The node was already a member with this address and suffrage.
    AlreadyMember,
    Joined,
}

impl Store {
    async fn change(&self, change: ChangeMembers<u64, NodeInfo>) -> Result<(), StoreError> {
        let f = self.raft().change_membership(change, false);
        match tokio::time::timeout(CHANGE_TIMEOUT, f).await {
            Ok(r) => r.map(|_| ()).map_err(change_err),
            Err(_) => Err(StoreError::Timeout("timeout waiting for the membership change".into())),
        }
    }

    /// Adds node `id` at node-to-node address `addr` as a voter or a read-only learner. A node
    /// that is already a member with the same id and address is left alone; one that changed its
    /// address, or an address now used by another id, is replaced. Leader only.
    pub async fn join(&self, id: &str, addr: &str, voter: bool) -> Result<JoinOutcome, StoreError> {
        if !self.is_leader() {
            return Err(StoreError::NotLeader { leader: self.leader() });
        }
        let nid = raft_id(id);
        let members = self.nodes();
        if let Some((other, _)) = members.iter().find(|(n, _)| raft_id(&n.id) == nid && n.id != id) {
            return Err(StoreError::Internal(format!(
                "node id {id} collides with existing node {}; choose another -node-id",
                other.id
            )));
        }
        let same_id = members.iter().find(|(n, _)| n.id == id);
        if let Some((n, is_voter)) = same_id
            && n.addr == addr
            && *is_voter == voter
        {
            self.stats().store.add("num_ignored_joins", 1);
            return Ok(JoinOutcome::AlreadyMember);
        }
        // Another node at this address under another id: the address moved to a new identity.
        if let Some((old, _)) = members.iter().find(|(n, _)| n.addr == addr && n.id != id) {
            self.remove(&old.id).await?;
            self.stats().store.add("num_removed_before_joins", 1);
        }
        let node = NodeInfo {
            id: id.to_string(),
            addr: addr.to_string(),
        };
        match same_id {
            Some((n, _)) if n.addr != addr => {
                // The same node at a new address.
                self.change(ChangeMembers::SetNodes(BTreeMap::from([(nid, node)])))
                    .await?;
                self.stats().store.add("num_removed_before_joins", 1);
            }
            Some(_) => {}
            None => {
                let add = self.raft().add_learner(nid, node, false);
                match tokio::time::timeout(CHANGE_TIMEOUT, add).await {
                    Ok(r) => {
                        r.map_err(change_err)?;
                    }
                    Err(_) => return Err(StoreError::Timeout("timeout adding the node".into())),
                }
            }
        }
        if voter {
            self.change(ChangeMembers::AddVoterIds(BTreeSet::from([nid]))).await?;
        } else if same_id.is_some_and(|(_, v)| *v) {
            // A voter rejoining as a read-only node.
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([nid]))).await?;
            let node = NodeInfo {
                id: id.to_string(),
                addr: addr.to_string(),
            };
            let add = self.raft().add_learner(nid, node, false);
            tokio::time::timeout(CHANGE_TIMEOUT, add)
                .await
                .map_err(|_| StoreError::Timeout("timeout adding the node".into()))?
                .map_err(change_err)?;
        }
        self.stats().store.add("num_joins", 1);
        Ok(JoinOutcome::Joined)
    }

    /// Removes node `id` from the cluster configuration. Leader only.
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !self.is_leader() {
            return Err(StoreError::NotLeader { leader: self.leader() });
        }
        let Some((node, voter)) = self.nodes().into_iter().find(|(n, _)| n.id == id) else {
            return Err(StoreError::Internal("node not found".into()));
        };
        let nid = raft_id(&node.id);
        let change = if voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([nid]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([nid]))
        };
        self.change(change).await
    }

    /// Records that node `id` at `addr` is up and wants to form a cluster.
    pub fn notify(&self, id: &str, addr: &str) {
        self.notified().lock().unwrap().insert(id.to_string(), addr.to_string());
    }

    /// With `expect` nodes notified (this one included), the one with the smallest id forms the
    /// cluster with all of them as voters; the others are brought in by it. Returns whether
    /// this node is, or became, part of an initialized cluster.
    /// Makes a node with no Raft state the single member of a new cluster; a node with state
    /// is left as it is.
    pub async fn bootstrap_alone(&self) -> Result<(), StoreError> {
        if self.is_initialized().await {
            return Ok(());
        }
        let me = NodeInfo {
            id: self.node_id().to_string(),
            addr: self.config().raft_addr.clone(),
        };
        tracing::info!(node = %me, "bootstrapping a new single-node cluster");
        self.raft()
            .initialize(BTreeMap::from([(raft_id(&me.id), me)]))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    pub async fn bootstrap_if_ready(&self, expect: usize) -> Result<bool, StoreError> {
        if self.is_initialized().await {
            return Ok(true);
        }
        let me = (self.node_id().to_string(), self.config().raft_addr.clone());
        let nodes: BTreeMap<String, String> = {
            let mut n = self.notified().lock().unwrap().clone();
            n.insert(me.0.clone(), me.1.clone());
            n
        };
        if nodes.len() < expect || nodes.keys().next() != Some(&me.0) {
            return Ok(false);
        }
        let members: BTreeMap<u64, NodeInfo> = nodes
            .into_iter()
            .map(|(id, addr)| (raft_id(&id), NodeInfo { id, addr }))
            .collect();
        tracing::info!(nodes = members.len(), "forming a cluster of the notified nodes");
        self.raft()
            .initialize(members)
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(true)
    }
}
