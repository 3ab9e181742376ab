//! Becoming part of a cluster at start: joining one through `-join`, or forming one with
//! `-bootstrap-expect` peers.

use std::time::{Duration, Instant};

use rq_proto::auth::Credentials;
use rq_store::Store;

use crate::Network;
use crate::disco::dns::DnsLookup;
use crate::messages::{JoinRequest, NotifyRequest};

/// Longest a join request waits: the leader answers once the node is a member, which for a
/// voter means once it has caught up enough to be counted.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a notification waits.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between rounds of notifications while forming a cluster.
const NOTIFY_INTERVAL: Duration = Duration::from_secs(1);

/// How this node is to become part of a cluster.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    /// Node-to-node addresses to join through (`-join`).
    pub targets: Vec<String>,
    /// `-join-attempts` rounds, `-join-interval` apart.
    pub attempts: u32,
    pub interval: Duration,
    /// Join as a voter (not `-raft-non-voter`).
    pub voter: bool,
    /// `-bootstrap-expect`: 0 to join an existing cluster only.
    pub expect: usize,
    /// `-bootstrap-expect-timeout`.
    pub expect_timeout: Duration,
    /// `-join-as`'s credentials, sent with joins and notifications.
    pub credentials: Option<Credentials>,
}

/// Tries each target once; `Ok` once one of them (or the leader it names) has added this node.
async fn try_join(store: &Store, net: &Network, plan: &JoinPlan) -> Result<(), String> {
    let me = &store.config().raft_addr;
    let req = JoinRequest {
        id: store.node_id().to_string(),
        addr: me.clone(),
        voter: plan.voter,
    };
    let mut last = String::from("no join address to try");
    for target in plan.targets.iter().filter(|t| *t != me) {
        match net.join(target, &req, plan.credentials.as_ref(), JOIN_TIMEOUT).await {
            Ok(()) => {
                tracing::info!(through = %target, "joined the cluster");
                return Ok(());
            }
            Err(e) => {
                tracing::info!(through = %target, error = %e, "join attempt failed");
                last = format!("{target}: {e}");
            }
        }
    }
    Err(last)
}

/// Joins a cluster through `plan.targets`, as `-join` asks; gives up after `plan.attempts`
/// rounds.
pub async fn join(store: &Store, net: &Network, plan: &JoinPlan) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..plan.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(plan.interval).await;
        }
        match try_join(store, net, plan).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!(
        "failed to join cluster at {:?} after {} attempts: {last}",
        plan.targets, plan.attempts
    ))
}

/// Forms a cluster with the `plan.expect` nodes named in `plan.targets`, or found by `lookup`
/// afresh each round (`-disco-mode dns` or `dns-srv`): each round tries to join (the cluster may
/// already exist), then a voter tells every target this node is here. The node with the
/// smallest id, once it has heard from enough nodes, initializes the cluster with all of them;
/// the others are then joined by it. Done once this node hears from a leader or leads.
///
/// A node that already has Raft state never forms a cluster again, but it still asks to join
/// until it hears from a leader: it may have been removed from its cluster (as
/// `-raft-cluster-remove-shutdown` does at a clean stop), and then no leader will ever contact it
/// unless it is added again. A member's join changes nothing.
pub async fn form(store: &Store, net: &Network, plan: &JoinPlan, lookup: Option<&DnsLookup>) -> Result<(), String> {
    let deadline = Instant::now() + plan.expect_timeout;
    let mut plan = plan.clone();
    let note = NotifyRequest {
        id: store.node_id().to_string(),
        addr: store.config().raft_addr.clone(),
    };
    loop {
        // Heard from a leader since this start, or leads: the leader a restarted node recalls
        // from its saved vote may no longer count it as a member.
        if store.is_leader() || store.leader_contact_age().is_some() {
            return Ok(());
        }
        let mut found = true;
        if let Some(lookup) = lookup {
            match lookup.lookup().await {
                Ok(targets) => plan.targets = targets,
                Err(e) => tracing::warn!(error = %e, "discovery: lookup failed"),
            }
            found = !plan.targets.is_empty();
        }
        if found && try_join(store, net, &plan).await.is_ok() {
            return Ok(());
        }
        if found && plan.voter && !store.is_initialized().await {
            store.notify(&note.id, &note.addr);
            for target in plan.targets.iter().filter(|t| **t != note.addr) {
                if let Err(e) = net
                    .notify(target, &note, plan.credentials.as_ref(), NOTIFY_TIMEOUT)
                    .await
                {
                    tracing::debug!(to = %target, error = %e, "notify failed");
                }
            }
            if store.bootstrap_if_ready(plan.expect).await.map_err(|e| e.to_string())? {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "bootstrap with {} nodes did not complete in {:?}",
                plan.expect, plan.expect_timeout
            ));
        }
        // Spread the rounds out a little, so nodes started together do not move in lockstep.
        let jitter = Duration::from_millis(rand::random::<u64>() % 250);
        tokio::time::sleep(NOTIFY_INTERVAL + jitter).await;
    }
}
