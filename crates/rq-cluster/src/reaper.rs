//! Reaping: a leader removes members that have not answered it for longer than
//! `-raft-reap-node-timeout` (voters) or `-raft-reap-read-only-node-timeout` (read replicas).

use std::time::{Duration, Instant};

use rq_store::Store;
use rq_store::types::raft_id;

use crate::Network;

/// How long each kind of member may stay silent; zero means never reaped.
#[derive(Debug, Clone, Copy)]
pub struct ReapTimeouts {
    pub voter: Duration,
    pub non_voter: Duration,
}

impl ReapTimeouts {
    fn enabled(&self) -> bool {
        !self.voter.is_zero() || !self.non_voter.is_zero()
    }

    fn for_member(&self, voter: bool) -> Duration {
        if voter { self.voter } else { self.non_voter }
    }

    /// Checks run several times per shortest timeout, and at least every ten seconds.
    fn tick(&self) -> Duration {
        let shortest = [self.voter, self.non_voter]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(10));
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// Whether a member is overdue: silent for longer than its timeout, counting from its last
/// answer or from when this node became leader, whichever is later. A leader only knows about
/// answers since it started leading, so a member gets its full timeout after every election.
pub fn overdue(timeout: Duration, leader_since: Instant, last_answer: Option<Instant>, now: Instant) -> bool {
    if timeout.is_zero() {
        return false;
    }
    let since = last_answer.map_or(leader_since, |a| a.max(leader_since));
    now.saturating_duration_since(since) > timeout
}

/// Runs for the life of the node; acts only while it leads.
pub async fn run(store: Store, net: Network, timeouts: ReapTimeouts) {
    if !timeouts.enabled() {
        return;
    }
    let mut leader_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(timeouts.tick());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !store.is_leader() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        let now = Instant::now();
        for (node, voter) in store.nodes() {
            if node.id == store.node_id() {
                continue;
            }
            let timeout = timeouts.for_member(voter);
            if !overdue(timeout, since, net.last_contact(raft_id(&node.id)), now) {
                continue;
            }
            match store.remove(&node.id).await {
                Ok(()) => {
                    tracing::warn!(node = %node.id, addr = %node.addr, ?timeout, "reaped a node that stopped answering");
                    store.stats().store.add("nodes_reaped_ok", 1);
                }
                Err(e) => {
                    tracing::warn!(node = %node.id, error = %e, "could not reap a node that stopped answering");
                    store.stats().store.add("nodes_reaped_failed", 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_overdue_only_after_its_timeout_from_the_later_of_answer_and_leadership() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // Disabled.
        assert!(!overdue(Duration::ZERO, t0, None, t0 + 100 * s));
        // Never answered: counted from leadership.
        assert!(!overdue(10 * s, t0, None, t0 + 10 * s));
        assert!(overdue(10 * s, t0, None, t0 + 11 * s));
        // Answered after leadership began: counted from the answer.
        assert!(!overdue(10 * s, t0, Some(t0 + 5 * s), t0 + 14 * s));
        assert!(overdue(10 * s, t0, Some(t0 + 5 * s), t0 + 16 * s));
        // An answer from before this leadership does not shorten the grace.
        assert!(!overdue(10 * s, t0 + 20 * s, Some(t0), t0 + 29 * s));
    }

    #[test]
    fn checks_run_several_times_per_shortest_timeout() {
        let t = ReapTimeouts {
            voter: Duration::from_secs(8),
            non_voter: Duration::ZERO,
        };
        assert_eq!(t.tick(), Duration::from_secs(2));
        let t = ReapTimeouts {
            voter: Duration::from_secs(3600),
            non_voter: Duration::from_millis(100),
        };
        assert_eq!(t.tick(), Duration::from_millis(100));
        assert!(
            !ReapTimeouts {
                voter: Duration::ZERO,
                non_voter: Duration::ZERO
            }
            .enabled()
        );
    }
}
