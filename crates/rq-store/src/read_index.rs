//! Confirming leadership for linearizable reads, one round of heartbeats for every read waiting.
//!
//! A linearizable read may be answered from the leader's state once the leader knows that no
//! other leader existed when the read arrived: a quorum of every configuration (one, or two
//! while the membership is joint) must have accepted an AppendEntries that this leader sent
//! after that moment. The network wrapper (`commit_gate`) notes, for each node, the send time
//! of the last AppendEntries it accepted (any answer but a higher vote) and of the last one that
//! failed. A round asks openraft to send heartbeats at once, on the replication connections it
//! already has, and waits until those notes say the quorum is there, or can no longer be there
//! because too many nodes failed to answer: then the reads fail at once, as rqlite's do, rather
//! than wait out their timeout. Every read that arrived before a round began is answered by it.
//!
//! A round needs no AppendEntries at all when the node can ask the others directly
//! (`VoteProbe`): each voter answers with the vote it has saved, which openraft saves before it
//! answers a request that granted it. A voter that still holds this leader's committed vote
//! when the question reaches it (after the round began) had granted no newer candidate its vote
//! by then, so it counts for the round as an accepted AppendEntries would. The leader counts
//! itself only while its own saved vote is still that vote. A round asks only the fewest voters
//! that make a quorum with the leader (`plan`), and the others if those are slow or cannot say.
//! This is one small request and answer per voter asked, handled outside the Raft cores of
//! both nodes, where a heartbeat goes through the leader's core, its replication tasks and
//! every follower's core.
//!
//! Most reads need no round at all: the leader holds a lease (`AckClock::lease_holds`). A
//! follower that accepts an AppendEntries refuses every vote request for the leader lease
//! (openraft's `election_timeout_max`) from then on, and does not stand itself for longer (a
//! restarted node counts from its start). So once a quorum of every configuration accepted
//! AppendEntries this leader sent at `t`, no other leader can be elected before `t` plus the
//! lease by the followers' clocks. The leader counts on three quarters of it by its own, which
//! holds while the clocks tick at rates within a third of each other, and counts itself only
//! while its own saved vote is still its own. A probe's answer extends no lease: the voter
//! that gives it promises nothing about its next vote. A node that failed since its last
//! accepted AppendEntries (no answer, or it closed its connection, which the network reports
//! at once) no longer counts: like rqlite's, a leader whose quorum just lost a node it needs
//! refuses linearizable reads at once rather than answer from its lease, though the lease
//! would still make those answers right.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

use crate::error::StoreError;
use crate::types::Vote;

/// Asks the node at a node-to-node address for the vote it has saved, within a timeout.
pub type VoteProbe = std::sync::Arc<
    dyn Fn(String, std::time::Duration) -> futures::future::BoxFuture<'static, Result<Option<Vote>, StoreError>>
        + Send
        + Sync,
>;

/// Per node: when the last question it answered for a vote was asked (an AppendEntries it
/// accepted, or a probe that found the vote held), the send time of the last AppendEntries it
/// accepted, and that of the last one that got no answer.
#[derive(Debug, Clone, Copy, Default)]
struct Answers {
    acked: Option<(Vote, Instant)>,
    appended: Option<(Vote, Instant)>,
    failed: Option<Instant>,
}

/// `slot` moves to `sent` if it holds an older time for the same vote; another vote's is
/// replaced.
fn note(slot: &mut Option<(Vote, Instant)>, vote: Vote, sent: Instant) {
    match slot {
        Some((v, t)) if *v == vote => *t = (*t).max(sent),
        other => *other = Some((vote, sent)),
    }
}

/// What the other nodes said to this leader's AppendEntries, and a signal for each new answer.
#[derive(Debug)]
pub struct AckClock {
    answers: Mutex<BTreeMap<u64, Answers>>,
    changed: watch::Sender<u64>,
}

impl Default for AckClock {
    fn default() -> AckClock {
        AckClock {
            answers: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

/// How a round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    Confirmed,
    /// Too many nodes failed to answer since the round began for a quorum to be reached.
    Impossible,
    Pending,
}

impl AckClock {
    fn update(&self, target: u64, f: impl FnOnce(&mut Answers)) {
        f(self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target)
            .or_default());
        self.changed.send_modify(|n| *n += 1);
    }

    /// `target` accepted an AppendEntries carrying `vote` that was sent at `sent`.
    pub fn appended(&self, target: u64, vote: Vote, sent: Instant) {
        self.update(target, |a| {
            note(&mut a.acked, vote, sent);
            note(&mut a.appended, vote, sent);
        });
    }

    /// `target`, asked at `sent`, said it holds `vote`.
    pub fn acked(&self, target: u64, vote: Vote, sent: Instant) {
        self.update(target, |a| note(&mut a.acked, vote, sent));
    }

    /// An AppendEntries to `target` sent at `sent` got no answer (or a higher vote), or
    /// `target` closed its connection at `sent`.
    pub fn failed(&self, target: u64, sent: Instant) {
        self.update(target, |a| a.failed = Some(a.failed.map_or(sent, |t| t.max(sent))));
    }

    /// Wakes on every answer noted from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether a quorum of every configuration in `configs` accepted `vote` in AppendEntries
    /// sent at or after `since`; `me` always counts.
    pub fn round(&self, me: u64, vote: &Vote, configs: &[BTreeSet<u64>], since: Instant) -> Round {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = false;
        for voters in configs {
            let quorum = voters.len() / 2 + 1;
            let (mut acked, mut failed) = (0, 0);
            for v in voters {
                let a = answers.get(v).copied().unwrap_or_default();
                if *v == me || a.acked.is_some_and(|(av, t)| av == *vote && t >= since) {
                    acked += 1;
                } else if a.failed.is_some_and(|t| t >= since) {
                    failed += 1;
                }
            }
            if voters.is_empty() || voters.len() - failed < quorum {
                return Round::Impossible;
            }
            if acked < quorum {
                pending = true;
            }
        }
        if pending { Round::Pending } else { Round::Confirmed }
    }

    /// Whether a quorum of every configuration in `configs` accepted AppendEntries carrying
    /// `vote` that were sent at or after `since`, and has not failed since; `me` always counts.
    pub fn lease_holds(&self, me: u64, vote: &Vote, configs: &[BTreeSet<u64>], since: Instant) -> bool {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let holds = |v: &u64| {
            let Some(a) = answers.get(v) else {
                return false;
            };
            a.appended
                .is_some_and(|(av, t)| av == *vote && t >= since && a.failed.is_none_or(|f| f < t))
        };
        !configs.is_empty()
            && configs.iter().all(|voters| {
                let held = voters.iter().filter(|v| **v == me || holds(v)).count();
                held * 2 > voters.len()
            })
    }
}

/// The fewest voters to ask first for a quorum of every configuration in `configs` with `me`,
/// preferring those that answered their last question quickest (`answer_times`; one never asked
/// counts as quickest, so each is measured); and the others, asked only if those do not answer
/// in time. A voter in `busy` (a probe to it still out) is in neither: its answer may predate
/// the round.
pub(crate) fn plan(
    me: u64,
    configs: &[BTreeSet<u64>],
    busy: &BTreeSet<u64>,
    answer_times: &BTreeMap<u64, std::time::Duration>,
) -> (Vec<u64>, Vec<u64>) {
    let mut free: Vec<u64> = configs
        .iter()
        .flatten()
        .copied()
        .filter(|id| *id != me && !busy.contains(id))
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    free.sort_by_key(|id| answer_times.get(id).copied().unwrap_or_default());
    let mut first: Vec<u64> = Vec::new();
    for c in configs {
        let quorum = c.len() / 2 + 1;
        let mut have = c.iter().filter(|id| **id == me || first.contains(id)).count();
        for id in free.iter().filter(|id| c.contains(id)) {
            if have >= quorum {
                break;
            }
            if !first.contains(id) {
                first.push(*id);
                have += 1;
            }
        }
    }
    let rest = free.into_iter().filter(|id| !first.contains(id)).collect();
    (first, rest)
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
    fn a_round_needs_a_quorum_of_answers_sent_after_it_began() {
        let clock = AckClock::default();
        let before = Instant::now();
        let since = before + Duration::from_millis(10);
        let after = since + Duration::from_millis(10);
        let five = [set(&[1, 2, 3, 4, 5])];
        clock.acked(2, vote(3), after);
        clock.acked(3, vote(3), before);
        assert_eq!(clock.round(1, &vote(3), &five, since), Round::Pending);
        clock.acked(4, vote(3), after);
        assert_eq!(clock.round(1, &vote(3), &five, since), Round::Confirmed);
        // Answers to another term do not count.
        assert_eq!(clock.round(1, &vote(4), &five, since), Round::Pending);
        // A leader outside the voter set counts only the others.
        let without_me = [set(&[2, 3, 4])];
        assert_eq!(clock.round(1, &vote(3), &without_me, since), Round::Confirmed);
    }

    #[test]
    fn a_round_fails_once_too_many_nodes_failed_to_answer() {
        let clock = AckClock::default();
        let since = Instant::now();
        let later = since + Duration::from_millis(5);
        let two = [set(&[1, 2])];
        assert_eq!(clock.round(1, &vote(3), &two, since), Round::Pending);
        // A failure from before the round does not count against it.
        clock.failed(2, since - Duration::from_millis(5));
        assert_eq!(clock.round(1, &vote(3), &two, since), Round::Pending);
        clock.failed(2, later);
        assert_eq!(clock.round(1, &vote(3), &two, since), Round::Impossible);
        let three = [set(&[1, 2, 3])];
        assert_eq!(clock.round(1, &vote(3), &three, since), Round::Pending);
        clock.acked(3, vote(3), later);
        assert_eq!(clock.round(1, &vote(3), &three, since), Round::Confirmed);
        assert_eq!(clock.round(1, &vote(3), &[BTreeSet::new()], since), Round::Impossible);
    }

    #[test]
    fn a_round_asks_the_fewest_and_quickest_voters_first() {
        let none = BTreeSet::new();
        let answered: BTreeMap<u64, Duration> = [
            (2, Duration::from_micros(150)),
            (3, Duration::from_millis(5)),
            (6, Duration::MAX),
        ]
        .into();
        // Three voters: one other makes the quorum, the quickest.
        let (first, rest) = plan(1, &[set(&[1, 2, 3])], &none, &answered);
        assert_eq!((first, rest), (vec![2], vec![3]));
        // Five voters: two others, those never asked first (they are measured), then the
        // quickest; one that did not answer last comes last.
        let (first, rest) = plan(1, &[set(&[1, 2, 3, 4, 6])], &none, &answered);
        assert_eq!((first, rest), (vec![4, 2], vec![3, 6]));
        // A voter with a probe out is skipped.
        let (first, rest) = plan(1, &[set(&[1, 2, 3])], &set(&[2]), &answered);
        assert_eq!((first, rest), (vec![3], vec![]));
        // A leader outside the voter set needs a quorum of others.
        let (first, _) = plan(1, &[set(&[2, 3, 6])], &none, &answered);
        assert_eq!(first, vec![2, 3]);
        // Joint: a quorum of each.
        let (first, rest) = plan(1, &[set(&[1, 2, 3]), set(&[1, 4, 6])], &none, &answered);
        assert_eq!((first, rest), (vec![2, 4], vec![3, 6]));
        // A sole voter asks nobody.
        assert_eq!(plan(1, &[set(&[1])], &none, &answered), (vec![], vec![]));
    }

    #[test]
    fn a_lease_needs_a_quorum_of_accepted_appends_and_no_probe_extends_it() {
        let clock = AckClock::default();
        let since = Instant::now();
        let (before, after) = (since - Duration::from_millis(1), since + Duration::from_millis(1));
        let three = [set(&[1, 2, 3])];
        // A probe's answer confirms a round, but extends no lease.
        clock.acked(2, vote(3), after);
        assert_eq!(clock.round(1, &vote(3), &three, since), Round::Confirmed);
        assert!(!clock.lease_holds(1, &vote(3), &three, since));
        // An append sent before `since` is too old.
        clock.appended(3, vote(3), before);
        assert!(!clock.lease_holds(1, &vote(3), &three, since));
        clock.appended(3, vote(3), after);
        assert!(clock.lease_holds(1, &vote(3), &three, since));
        // Another term's appends do not count; a later probe keeps the append's time.
        assert!(!clock.lease_holds(1, &vote(4), &three, since));
        clock.acked(3, vote(3), after + Duration::from_millis(1));
        assert!(clock.lease_holds(1, &vote(3), &three, after));
        assert!(!clock.lease_holds(1, &vote(3), &three, after + Duration::from_millis(1)));
        // A node that failed after its last accepted append no longer counts, until it accepts
        // one sent after the failure.
        clock.failed(3, after + Duration::from_millis(2));
        assert!(!clock.lease_holds(1, &vote(3), &three, since));
        clock.appended(3, vote(3), after + Duration::from_millis(3));
        assert!(clock.lease_holds(1, &vote(3), &three, since));
        // Joint: a quorum of both; a leader outside a configuration counts only the others.
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!clock.lease_holds(1, &vote(3), &joint, since));
        clock.appended(4, vote(3), after);
        assert!(clock.lease_holds(1, &vote(3), &joint, since));
        assert!(!clock.lease_holds(1, &vote(3), &[set(&[2, 3, 5])], since));
        assert!(!clock.lease_holds(1, &vote(3), &[], since));
    }

    #[test]
    fn a_joint_membership_needs_a_quorum_of_both() {
        let clock = AckClock::default();
        let since = Instant::now();
        let later = since + Duration::from_millis(1);
        clock.acked(2, vote(3), later);
        clock.acked(4, vote(3), later);
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert_eq!(clock.round(1, &vote(3), &joint, since), Round::Pending);
        clock.acked(5, vote(3), later);
        assert_eq!(clock.round(1, &vote(3), &joint, since), Round::Confirmed);
    }
}
