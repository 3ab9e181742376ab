//! The leader's read lease: how recently a quorum acknowledged this node as its leader.
//!
//! A follower that accepts an AppendEntries from its leader refuses every vote for openraft's
//! leader lease (`election_timeout_max`) after it (openraft 0.9 does this). So if a quorum
//! accepted AppendEntries that this leader sent at or after `t`, no other leader can be elected
//! before `t` plus that lease, and for that long this leader's applied state, once it holds an
//! entry of its own term, includes every write any client has seen acknowledged. The leader
//! serves linearizable reads without a round of messages for a fraction of that lease
//! (`Store::read_lease`), which leaves a wide margin for the nodes' clocks to run at
//! different rates.
//!
//! openraft also refuses votes for that lease after a node starts, if it had followed a leader
//! (its vote is restored as if just renewed), which covers acknowledgements given before a
//! restart. What it does not refuse is a vote asked of the leader itself; the store does
//! (`Store::vote`), while the read lease holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use crate::types::Vote;

/// When each node last accepted an AppendEntries, by the time this leader sent it.
#[derive(Debug, Default)]
pub struct LeaseClock {
    acks: Mutex<BTreeMap<u64, (Vote, Instant)>>,
}

impl LeaseClock {
    /// `target` accepted an AppendEntries carrying `vote` that was sent at `sent`.
    pub fn acked(&self, target: u64, vote: Vote, sent: Instant) {
        let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        match acks.get_mut(&target) {
            Some((v, t)) if *v == vote => *t = (*t).max(sent),
            _ => {
                acks.insert(target, (vote, sent));
            }
        }
    }

    /// The latest time that a quorum of every configuration in `configs` (one, or two while
    /// the membership is joint) acknowledged `vote` at or after: `me` counts as acknowledging
    /// at `now`. None when some configuration has no such quorum.
    pub fn quorum_acked_at(&self, me: u64, vote: &Vote, configs: &[BTreeSet<u64>], now: Instant) -> Option<Instant> {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        let mut earliest: Option<Instant> = None;
        for voters in configs {
            let mut times: Vec<Instant> = voters
                .iter()
                .filter_map(|v| match acks.get(v) {
                    _ if *v == me => Some(now),
                    Some((acked, t)) if acked == vote => Some(*t),
                    _ => None,
                })
                .collect();
            let quorum = voters.len() / 2 + 1;
            if voters.is_empty() || times.len() < quorum {
                return None;
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            let t = times[quorum - 1];
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        earliest
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn vote(term: u64) -> Vote {
        let mut v = Vote::new(term, 1);
        v.commit();
        v
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_quorum_time_is_the_majoritys_oldest_acknowledgement() {
        let clock = LeaseClock::default();
        let now = Instant::now();
        let s = |ms: u64| now - Duration::from_millis(ms);
        clock.acked(2, vote(3), s(300));
        clock.acked(3, vote(3), s(100));
        clock.acked(4, vote(3), s(500));
        clock.acked(5, vote(3), s(200));
        // Five voters: this node (now), then 100, 200, 300 and 500 ms ago; a quorum is three.
        let five = [set(&[1, 2, 3, 4, 5])];
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &five, now), Some(s(200)));
        // An older acknowledgement does not move a node's time back.
        clock.acked(3, vote(3), s(900));
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &five, now), Some(s(200)));
        // A leader outside the voter set counts only the others.
        let without_me = [set(&[2, 3, 4])];
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &without_me, now), Some(s(300)));
    }

    #[test]
    fn no_quorum_no_lease() {
        let clock = LeaseClock::default();
        let now = Instant::now();
        let three = [set(&[1, 2, 3])];
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &three, now), None);
        clock.acked(2, vote(3), now);
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &three, now), Some(now));
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &[BTreeSet::new()], now), None);
    }

    #[test]
    fn acknowledgements_of_another_term_do_not_count() {
        let clock = LeaseClock::default();
        let now = Instant::now();
        let three = [set(&[1, 2, 3])];
        clock.acked(2, vote(3), now);
        assert_eq!(clock.quorum_acked_at(1, &vote(4), &three, now), None);
        // A new term replaces the old acknowledgement, even with an earlier send time.
        let earlier = now - Duration::from_millis(50);
        clock.acked(2, vote(4), earlier);
        assert_eq!(clock.quorum_acked_at(1, &vote(4), &three, now), Some(earlier));
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &three, now), None);
        // Same term, another leader: not this leader's lease.
        let other = Vote {
            leader_id: openraft::LeaderId::new(4, 2),
            committed: true,
        };
        assert_eq!(clock.quorum_acked_at(1, &other, &three, now), None);
    }

    #[test]
    fn a_joint_membership_needs_a_quorum_of_both() {
        let clock = LeaseClock::default();
        let now = Instant::now();
        let s = |ms: u64| now - Duration::from_millis(ms);
        clock.acked(2, vote(3), s(10));
        clock.acked(4, vote(3), s(40));
        clock.acked(5, vote(3), s(20));
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        // Old: this node and 2 (10 ms ago). New: 5 (20 ms) and 4 (40 ms).
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &joint, now), Some(s(40)));
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 6])];
        assert_eq!(clock.quorum_acked_at(1, &vote(3), &joint, now), None);
    }
}
