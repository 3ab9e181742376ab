//! The register workload's sequential specification, for the linearizability checker: a few
//! integer registers (rows of one table), each read, written and compare-and-set.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use porcupine_rs::{Model, Operation};

/// What became of a compare-and-set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// It matched and wrote (one row affected).
    Applied,
    /// It did not match (no row affected).
    Refused,
    /// No answer: it may or may not have happened.
    Unknown,
}

#[derive(Clone, Debug)]
pub enum RegOp {
    Read {
        key: u32,
        value: i64,
    },
    /// A write; one with no answer is recorded as returning at the end of time.
    Write {
        key: u32,
        value: i64,
    },
    Cas {
        key: u32,
        from: i64,
        to: i64,
        outcome: CasOutcome,
    },
}

impl RegOp {
    fn key(&self) -> u32 {
        match self {
            RegOp::Read { key, .. } | RegOp::Write { key, .. } | RegOp::Cas { key, .. } => *key,
        }
    }
}

/// Registers start at 0; registers are independent, so each is checked on its own.
#[derive(Clone, Debug)]
pub struct Registers;

impl Model for Registers {
    type State = i64;
    type Op = RegOp;
    type Metadata = ();

    fn partition_operations(history: &[Operation<Self>]) -> Vec<Vec<Operation<Self>>> {
        let mut by_key: BTreeMap<u32, Vec<Operation<Self>>> = BTreeMap::new();
        for op in history {
            by_key.entry(op.op.key()).or_default().push(op.clone());
        }
        by_key.into_values().collect()
    }

    fn init() -> i64 {
        0
    }

    fn step(state: &i64, op: &RegOp) -> (bool, i64) {
        match *op {
            RegOp::Read { value, .. } => (value == *state, *state),
            RegOp::Write { value, .. } => (true, value),
            RegOp::Cas { from, to, outcome, .. } => match outcome {
                CasOutcome::Applied => (*state == from, to),
                CasOutcome::Refused => (*state != from, *state),
                // If it took effect it matched; if it did not, the checker may place it after
                // every other operation, where its effect is invisible.
                CasOutcome::Unknown if *state == from => (true, to),
                CasOutcome::Unknown => (true, *state),
            },
        }
    }
}

/// Operations as clients saw them, with call and return times in nanoseconds since the start.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Operation<Registers>>>,
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn now(&self) -> i64 {
        self.start.elapsed().as_nanos() as i64
    }

    /// Records an operation that returned at `ret`, or never (`None`: outcome unknown).
    pub fn record(&self, client: u32, call: i64, ret: Option<i64>, op: RegOp) {
        self.ops.lock().unwrap().push(Operation {
            client_id: Some(client),
            call_time: call,
            return_time: ret.unwrap_or(i64::MAX),
            op,
            metadata: None,
        });
    }

    pub fn operations(&self) -> Vec<Operation<Registers>> {
        self.ops.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use porcupine_rs::CheckResult;

    use super::*;

    fn op(client: u32, call: i64, ret: i64, op: RegOp) -> Operation<Registers> {
        Operation {
            client_id: Some(client),
            call_time: call,
            return_time: ret,
            op,
            metadata: None,
        }
    }

    fn check(h: &[Operation<Registers>]) -> CheckResult {
        porcupine_rs::check_operations_timeout(h, std::time::Duration::from_secs(10))
    }

    #[test]
    fn the_checker_catches_a_stale_read() {
        // Write 1 completes, then a read returns the old 0: not linearizable.
        let h = [
            op(0, 0, 10, RegOp::Write { key: 0, value: 1 }),
            op(1, 20, 30, RegOp::Read { key: 0, value: 0 }),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
        // Overlapping, it is.
        let h = [
            op(0, 0, 25, RegOp::Write { key: 0, value: 1 }),
            op(1, 20, 30, RegOp::Read { key: 0, value: 0 }),
        ];
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn the_checker_catches_a_lost_or_doubled_compare_and_set() {
        // Two CAS from 0 both claim success: impossible.
        let h = [
            op(
                0,
                0,
                10,
                RegOp::Cas {
                    key: 0,
                    from: 0,
                    to: 1,
                    outcome: CasOutcome::Applied,
                },
            ),
            op(
                1,
                0,
                10,
                RegOp::Cas {
                    key: 0,
                    from: 0,
                    to: 2,
                    outcome: CasOutcome::Applied,
                },
            ),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
        // A refused CAS whose expected value was current: impossible.
        let h = [op(
            0,
            0,
            10,
            RegOp::Cas {
                key: 0,
                from: 0,
                to: 1,
                outcome: CasOutcome::Refused,
            },
        )];
        assert_eq!(check(&h), CheckResult::Illegal);
        // An unanswered CAS may explain a later read of its value, or not happen at all.
        for seen in [0, 5] {
            let h = [
                op(
                    0,
                    0,
                    i64::MAX,
                    RegOp::Cas {
                        key: 0,
                        from: 0,
                        to: 5,
                        outcome: CasOutcome::Unknown,
                    },
                ),
                op(1, 20, 30, RegOp::Read { key: 0, value: seen }),
            ];
            assert_eq!(check(&h), CheckResult::Ok, "{seen}");
        }
        // Registers are independent: a history on key 1 does not excuse key 0.
        let h = [
            op(0, 0, 10, RegOp::Write { key: 1, value: 7 }),
            op(1, 20, 30, RegOp::Read { key: 0, value: 7 }),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
    }
}
