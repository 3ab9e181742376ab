//! Handing leadership to another voter (`POST /leader`, and before a leader shuts down).
//!
//! openraft 0.9 has no leadership transfer, and a follower refuses to vote while it has heard
//! from its leader within the leader lease. So the leader stops acting as one (the store
//! answers "leader not found" meanwhile) and stops its heartbeats, lets the target catch up,
//! waits out the lease, and then asks the target to stand for election, which it wins with an
//! up-to-date log. The request carries the leader's vote: a target that has since followed
//! another leader refuses, as that leader may be counting on it for its read lease.

use std::time::{Duration, Instant};

use rq_store::{Store, StoreError};

use crate::Network;

fn err(msg: &str) -> StoreError {
    StoreError::Internal(format!("stepdown: {msg}"))
}

/// The voter to hand over to: `to` if given, else the follower furthest along.
fn choose(store: &Store, to: Option<&str>) -> Result<(String, String), StoreError> {
    let voters: Vec<_> = store.nodes().into_iter().filter(|(_, v)| *v).map(|(n, _)| n).collect();
    match to {
        Some(id) if id == store.node_id() => Err(err("cannot step down to the current Leader")),
        Some(id) => voters
            .into_iter()
            .find(|n| n.id == id)
            .map(|n| (n.id, n.addr))
            .ok_or_else(|| err("node not found in cluster")),
        None => {
            let progress = store.replication_progress();
            voters
                .into_iter()
                .filter(|n| n.id != store.node_id())
                .max_by_key(|n| progress.get(&n.id).copied().unwrap_or(0))
                .map(|n| (n.id, n.addr))
                .ok_or_else(|| err("cannot find peer"))
        }
    }
}

/// Hands leadership from this node to `to` (or the best-placed voter) within `timeout`.
pub async fn transfer(store: &Store, net: &Network, to: Option<&str>, timeout: Duration) -> Result<(), StoreError> {
    if !store.is_leader() {
        return Err(StoreError::NotLeader { leader: store.leader() });
    }
    let (id, addr) = choose(store, to)?;
    let deadline = Instant::now() + timeout;
    let vote = store.saved_vote().ok_or(StoreError::NotLeader { leader: None })?;
    let _standing_down = store.stand_down();
    // The target must hold everything this leader has, or its election would fail.
    while store.replication_progress().get(&id).copied().unwrap_or(0) < store.last_log_index() {
        if Instant::now() > deadline {
            return Err(err("timeout waiting for the new leader to catch up"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(store.leader_lease() + Duration::from_millis(100)).await;
    while Instant::now() < deadline {
        if let Err(e) = net.elect(&addr, &vote, Duration::from_secs(2)).await {
            tracing::warn!(to = %id, error = %e, "could not ask the new leader to stand");
        }
        let round = Instant::now() + store.leader_lease();
        while Instant::now() < round.min(deadline) {
            if store.leader().is_some_and(|l| l.id == id) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Err(err("timeout waiting for the new leader"))
}

/// Longest a requested stepdown may take.
pub const STEPDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /leader` on the leader: with `wait`, returns once leadership has moved; without, starts
/// the transfer and returns (rqlite's behaviour).
pub async fn stepdown(store: &Store, net: &Network, to: Option<String>, wait: bool) -> Result<(), StoreError> {
    if !store.is_leader() {
        return Err(StoreError::NotLeader { leader: store.leader() });
    }
    if wait {
        return transfer(store, net, to.as_deref(), STEPDOWN_TIMEOUT).await;
    }
    // A named target is checked now, so a bad id is reported; the transfer itself goes on
    // alone. (Without a target and without a peer there is nothing to do, and rqlite answers
    // 200 all the same.)
    if to.is_some() {
        choose(store, to.as_deref())?;
    }
    let (store, net) = (store.clone(), net.clone());
    tokio::spawn(async move {
        if let Err(e) = transfer(&store, &net, to.as_deref(), STEPDOWN_TIMEOUT).await {
            tracing::warn!(error = %e, "leadership transfer failed");
        }
    });
    Ok(())
}
