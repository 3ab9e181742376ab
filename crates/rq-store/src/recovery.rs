//! Manual recovery of a cluster that lost its quorum, as rqlite does it: an operator writes the
//! surviving members to `DATA_DIR/raft/peers.json` on each of them and restarts them.
//!
//! The node then applies every entry of its log, records the given membership with the last
//! entry's id, snapshots that state, and purges its log, so Raft starts from a snapshot whose
//! configuration is the one given. The file is renamed `peers.info` once done. Like rqlite's,
//! this applies entries that may not have been committed: it is for clusters that cannot
//! recover any other way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{Membership, RaftLogReader};
use serde::Deserialize;

use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::stats::Stats;
use crate::types::{NodeInfo, raft_id};

#[derive(Debug, Deserialize)]
struct Peer {
    id: String,
    address: String,
    #[serde(default)]
    non_voter: bool,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("recovery from peers.json: {e}"))
}

/// Recovers from `raft/peers.json` if the operator put one there. Returns whether it did.
pub(crate) async fn recover_if_asked(
    data_dir: &Path,
    log: &mut LogStore,
    sm: &mut StateMachine,
    stats: &Stats,
) -> Result<bool, StoreError> {
    let path = data_dir.join("raft").join("peers.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(false);
    };
    let peers: Vec<Peer> = serde_json::from_slice(&bytes).map_err(err)?;
    if peers.is_empty() {
        return Err(err("it names no nodes"));
    }
    let voters: BTreeSet<u64> = peers.iter().filter(|p| !p.non_voter).map(|p| raft_id(&p.id)).collect();
    let nodes: BTreeMap<u64, NodeInfo> = peers
        .iter()
        .map(|p| {
            (
                raft_id(&p.id),
                NodeInfo {
                    id: p.id.clone(),
                    addr: p.address.clone(),
                },
            )
        })
        .collect();
    let membership = Membership::new(vec![voters], nodes);

    // Everything in the log goes into the database.
    let applied = sm.state().last_applied.map_or(0, |l| l.index + 1);
    let tail = log.try_get_log_entries(applied..).await.map_err(err)?;
    if !tail.is_empty() {
        sm.apply(tail).await.map_err(err)?;
    }
    let last = log.get_log_state().await.map_err(err)?.last_log_id;
    sm.force_membership(last, membership).await.map_err(err)?;
    sm.build_snapshot().await.map_err(err)?;
    if let Some(last) = last {
        log.purge(last).await.map_err(err)?;
    }
    std::fs::rename(&path, path.with_file_name("peers.info")).map_err(err)?;
    stats.store.add("num_recoveries", 1);
    tracing::warn!(
        nodes = peers.len(),
        "recovered the cluster configuration from peers.json"
    );
    Ok(true)
}
