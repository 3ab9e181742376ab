//! The commit index a leader tells its followers, held back to what its own log has on disk.
//!
//! A leader's own entries are flushed in the background (see `log_store`), so openraft may
//! count an entry committed on the strength of one follower's copy while the leader's is still
//! being flushed. Followers apply what they are told is committed; telling them no more than
//! the leader's durable end means that whatever any node applies is on disk on a majority.
//!
//! The gate also notes, for linearizable reads (`read_index`), the send time of each
//! AppendEntries a node accepted, and of each that failed.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use openraft::OptionalSend;
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::sync::watch;

use crate::log_store::Durable;
use crate::read_index::AckClock;
use crate::types::{LogId, NodeInfo, Snapshot, TypeConfig, Vote};

/// Wraps a network factory so every AppendEntries carries a commit index no later than the
/// local log's durable end.
pub struct CommitGate<N> {
    inner: N,
    durable: watch::Receiver<Durable>,
    acks: Arc<AckClock>,
}

impl<N> CommitGate<N> {
    pub fn new(inner: N, durable: watch::Receiver<Durable>, acks: Arc<AckClock>) -> CommitGate<N> {
        CommitGate { inner, durable, acks }
    }
}

/// A connection to one node, through the gate.
pub struct GatedPeer<P> {
    inner: P,
    target: u64,
    durable: watch::Receiver<Durable>,
    acks: Arc<AckClock>,
}

/// The lower of a leader's commit index and its durable end.
fn held_back(commit: Option<LogId>, durable: Option<LogId>) -> Option<LogId> {
    match (commit, durable) {
        (Some(c), Some(d)) if d.index < c.index => Some(d),
        (Some(_), None) => None,
        _ => commit,
    }
}

impl<N: RaftNetworkFactory<TypeConfig>> RaftNetworkFactory<TypeConfig> for CommitGate<N> {
    type Network = GatedPeer<N::Network>;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Self::Network {
        GatedPeer {
            inner: self.inner.new_client(target, node).await,
            target,
            durable: self.durable.clone(),
            acks: self.acks.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, NodeInfo, E>>;

impl<P: RaftNetwork<TypeConfig>> RaftNetwork<TypeConfig> for GatedPeer<P> {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        rpc.leader_commit = held_back(rpc.leader_commit, self.durable.borrow().last);
        let vote = rpc.vote;
        let sent = Instant::now();
        let resp = self.inner.append_entries(rpc, option).await;
        // Every answer but a higher vote means the node took this leader's vote as its own.
        match &resp {
            Ok(AppendEntriesResponse::HigherVote(_)) | Err(_) => self.acks.failed(self.target, sent),
            Ok(_) => self.acks.appended(self.target, vote, sent),
        }
        resp
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.inner.install_snapshot(rpc, option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.inner.vote(rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        self.inner.full_snapshot(vote, snapshot, cancel, option).await
    }

    fn backoff(&self) -> Backoff {
        self.inner.backoff()
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn commit_is_held_back_to_the_durable_end() {
        assert_eq!(held_back(Some(id(2, 9)), Some(id(2, 7))), Some(id(2, 7)));
        assert_eq!(held_back(Some(id(2, 9)), Some(id(1, 7))), Some(id(1, 7)));
        assert_eq!(held_back(Some(id(2, 7)), Some(id(2, 9))), Some(id(2, 7)));
        assert_eq!(held_back(Some(id(2, 7)), None), None);
        assert_eq!(held_back(None, Some(id(2, 7))), None);
    }
}
