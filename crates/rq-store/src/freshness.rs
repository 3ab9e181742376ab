//! `freshness` and `freshness_strict`: when a read at level `none` on a follower is too stale.

use std::time::Duration;

/// What a follower knows when it judges a read's freshness. Times are Unix milliseconds; 0
/// means "never".
#[derive(Debug, Clone, Copy, Default)]
pub struct Freshness {
    /// Last message from a leader (local clock).
    pub leader_contact_ms: u64,
    /// Last apply of committed entries (local clock).
    pub last_apply_ms: u64,
    /// When the leader logged the last applied command (the leader's clock).
    pub last_appended_at_ms: u64,
    /// Index the state machine has applied, and the commit index the leader last reported.
    pub applied_index: u64,
    pub commit_index: u64,
}

impl Freshness {
    /// As rqlite: stale if the leader has been silent for longer than `max`; with `strict`,
    /// also stale if this node is behind the commit index and the data it last applied was
    /// older than `max` when it applied it (which compares two clocks, so it assumes they
    /// agree). A zero `max` checks nothing.
    pub fn is_stale(&self, now_ms: u64, max: Duration, strict: bool) -> bool {
        if max.is_zero() {
            return false;
        }
        let max = max.as_millis() as u64;
        if self.leader_contact_ms == 0 || now_ms.saturating_sub(self.leader_contact_ms) > max {
            return true;
        }
        if !strict || self.last_appended_at_ms == 0 || self.applied_index == self.commit_index {
            return false;
        }
        self.last_apply_ms.saturating_sub(self.last_appended_at_ms) > max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn fresh() -> Freshness {
        Freshness {
            leader_contact_ms: 10_000,
            last_apply_ms: 9_000,
            last_appended_at_ms: 8_900,
            applied_index: 5,
            commit_index: 5,
        }
    }

    #[test]
    fn leader_silence_makes_a_read_stale() {
        let f = fresh();
        assert!(!f.is_stale(10_500, S, false));
        assert!(f.is_stale(11_001, S, false));
        assert!(!f.is_stale(99_999, Duration::ZERO, false));
        // Never heard from a leader.
        let never = Freshness {
            leader_contact_ms: 0,
            ..f
        };
        assert!(never.is_stale(10_000, S, false));
    }

    #[test]
    fn strict_also_checks_the_age_of_applied_data_while_behind() {
        // Applied 2 s after the leader logged it, and still behind the commit index.
        let behind = Freshness {
            last_apply_ms: 11_000,
            last_appended_at_ms: 9_000,
            applied_index: 4,
            commit_index: 9,
            leader_contact_ms: 11_000,
        };
        assert!(behind.is_stale(11_100, S, true));
        assert!(!behind.is_stale(11_100, S, false));
        // Caught up: the age of the last write does not matter.
        let caught_up = Freshness {
            applied_index: 9,
            ..behind
        };
        assert!(!caught_up.is_stale(11_100, S, true));
        // No command applied since start: nothing to judge.
        let none = Freshness {
            last_appended_at_ms: 0,
            ..behind
        };
        assert!(!none.is_stale(11_100, S, true));
        // Applied promptly.
        let prompt = Freshness {
            last_appended_at_ms: 10_500,
            ..behind
        };
        assert!(!prompt.is_stale(11_100, S, true));
    }
}
