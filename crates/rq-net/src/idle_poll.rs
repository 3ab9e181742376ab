//! Polling for the next request for a moment after answering one.
//!
//! A worker with nothing to do sleeps in `epoll_wait`, and the next request has to wake it. On
//! a virtual machine the sleep and the wake-up cost more than a point query: about half of the
//! node's CPU per request from a single client, and a good part of its round trip. For
//! `window` after each answer, a task keeps the worker polling its sockets instead (tokio's
//! `yield_now` makes a worker poll its I/O driver without blocking before it runs the task
//! again), so a client that sends its next request at once finds the node awake.
//!
//! The poll is bounded three ways:
//! - it stops once `window` passes with no new answer;
//! - it runs only while it pays (`worth_polling`, sampled every `SAMPLE`): it is tried when the
//!   worker slept between at least every other answer (a busy worker finds its next request
//!   waiting and seldom sleeps, and polling would only add work), and kept while it catches
//!   requests and the worker stays awake. Requests that wait on something else, such as one
//!   client's writes on their disk flush, leave the worker sleeping between answers all the
//!   same: then the poll stays off, for longer after each try, until answers go out at more
//!   than twice the rate they did then (other requests);
//! - it starts only while the machine leaves a whole CPU idle (`START_IDLE_CPUS`), and goes on
//!   only while it leaves half of one (`KEEP_IDLE_CPUS`) with the poll's own time counted as
//!   busy, sampled from `/proc/stat`. A node sharing a busy machine with others (the nodes of a
//!   cluster on one host, or its clients) takes no CPU from them.
//!
//! Only a runtime with one worker gains from it. With several, the worker holding the I/O
//! driver sleeps in `epoll_wait` while another polls in vain, so `start` leaves polling off.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How often the machine's idle time is sampled while requests are answered.
const SAMPLE: Duration = Duration::from_millis(100);
/// The idle CPU the machine must have for the poll to start, and, polling included, to go on.
const START_IDLE_CPUS: f64 = 1.0;
const KEEP_IDLE_CPUS: f64 = 0.5;
/// A poll that comes back sooner than this found nothing to run: its time counts as idle.
const EMPTY_POLL: Duration = Duration::from_micros(5);

struct Poller {
    window: u64,
    epoch: Instant,
    /// When the last answer went out (nanoseconds since `epoch`).
    last_answer: AtomicU64,
    /// Set while the poll runs, or has been asked to.
    polling: AtomicBool,
    /// Whether the last sample found the poll worth running (it runs only while this is set).
    allowed: AtomicBool,
    /// When the machine was last sampled (nanoseconds since `epoch`).
    sampled: AtomicU64,
    /// Answers that went out.
    answers: AtomicU64,
    /// Requests that arrived while the worker polled, and the time polls found nothing, in
    /// all (for `status`).
    caught: AtomicU64,
    idle_nanos: AtomicU64,
    wake: Notify,
}

static POLLER: OnceLock<Poller> = OnceLock::new();

impl Poller {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn window_open(&self) -> bool {
        self.now().saturating_sub(self.last_answer.load(Ordering::Relaxed)) < self.window
    }
}

/// Polls for `window` after every answer, as described above, when the runtime has one worker
/// and `window` is not zero. Call once, from within the runtime.
pub fn start(window: Duration, workers: usize) {
    if window.is_zero() || workers != 1 {
        return;
    }
    let poller = Poller {
        window: window.as_nanos() as u64,
        epoch: Instant::now(),
        last_answer: AtomicU64::new(0),
        polling: AtomicBool::new(false),
        allowed: AtomicBool::new(false),
        sampled: AtomicU64::new(0),
        answers: AtomicU64::new(0),
        caught: AtomicU64::new(0),
        idle_nanos: AtomicU64::new(0),
        wake: Notify::new(),
    };
    if POLLER.set(poller).is_ok()
        && let Some(p) = POLLER.get()
    {
        tokio::spawn(run(p));
    }
}

/// The poll's settings and what it did, for the node's status.
pub fn status() -> serde_json::Value {
    match POLLER.get() {
        None => serde_json::json!({ "enabled": false }),
        Some(p) => serde_json::json!({
            "enabled": true,
            "window_us": p.window / 1_000,
            "polling_allowed": p.allowed.load(Ordering::Relaxed),
            "requests_caught": p.caught.load(Ordering::Relaxed),
            "idle_poll_us": p.idle_nanos.load(Ordering::Relaxed) / 1_000,
        }),
    }
}

/// Notes an answer going out; starts the poll unless it runs already, or a sample less than
/// `SAMPLE` ago found it not worth running.
pub(crate) fn answered() {
    let Some(p) = POLLER.get() else {
        return;
    };
    let now = p.now();
    p.last_answer.store(now, Ordering::Relaxed);
    p.answers.fetch_add(1, Ordering::Relaxed);
    if p.polling.load(Ordering::Relaxed) {
        return;
    }
    let stale = now.saturating_sub(p.sampled.load(Ordering::Relaxed)) >= SAMPLE.as_nanos() as u64;
    if (p.allowed.load(Ordering::Relaxed) || stale) && !p.polling.swap(true, Ordering::AcqRel) {
        p.wake.notify_one();
    }
}

async fn run(p: &'static Poller) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut machine = Machine::default();
    let mut wakes = Wakes::default();
    loop {
        p.wake.notified().await;
        loop {
            // Whether the last poll found nothing to run.
            let mut idle = false;
            loop {
                let now = p.now();
                if now.saturating_sub(p.sampled.load(Ordering::Relaxed)) >= SAMPLE.as_nanos() as u64 {
                    // Tests force the machine to count as idle.
                    let spare = machine.sample(p.allowed.load(Ordering::Relaxed))
                        || fail::eval("idle-poll-spare-cpu", |_| ()).is_some();
                    let worth = wakes.sample(
                        p.answers.load(Ordering::Relaxed),
                        metrics.worker_park_count(0),
                        p.allowed.load(Ordering::Relaxed),
                    );
                    p.allowed.store(spare && worth, Ordering::Relaxed);
                    p.sampled.store(now, Ordering::Relaxed);
                }
                if !p.allowed.load(Ordering::Relaxed) || !p.window_open() {
                    break;
                }
                let before = Instant::now();
                tokio::task::yield_now().await;
                let took = before.elapsed();
                if took < EMPTY_POLL {
                    p.idle_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
                    idle = true;
                } else if std::mem::take(&mut idle) {
                    // Work arrived while the worker polled: without the poll it would have
                    // slept and been woken for it.
                    wakes.caught += 1;
                    p.caught.fetch_add(1, Ordering::Relaxed);
                }
            }
            p.polling.store(false, Ordering::SeqCst);
            // An answer that went out as the poll stopped may not have restarted it.
            let again = p.allowed.load(Ordering::Relaxed) && p.window_open();
            if !again || p.polling.swap(true, Ordering::SeqCst) {
                break;
            }
        }
    }
}

/// The longest the poll stays off, in samples, after it failed to keep the worker awake.
const MAX_HOLD: u32 = 64;

/// How often the worker went to sleep, and how many requests the poll caught, against how
/// many answers went out since the last sample; and how long the poll stays off after it did
/// not pay.
#[derive(Default)]
struct Wakes {
    answers: u64,
    parks: u64,
    caught: u64,
    /// Samples left before the poll may be tried again.
    hold: u32,
    /// The hold after the next try that does not pay (doubling up to `MAX_HOLD`).
    backoff: u32,
    /// Answers in the sample that found the last try useless.
    useless_at: u64,
}

impl Wakes {
    /// Whether to poll until the next sample; `polled` says whether the poll ran since the
    /// last one.
    fn sample(&mut self, answers: u64, parks: u64, polled: bool) -> bool {
        let answered = answers.saturating_sub(self.answers);
        let slept = parks.saturating_sub(self.parks);
        let caught = std::mem::take(&mut self.caught);
        (self.answers, self.parks) = (answers, parks);
        let worth = worth_polling(answered, slept, caught, polled);
        if worth == Worth::Useless {
            self.backoff = (self.backoff * 2).clamp(1, MAX_HOLD);
            self.hold = self.backoff;
            self.useless_at = answered;
        } else if worth == Worth::Yes && polled {
            self.backoff = 0;
        } else if worth == Worth::Yes && answered > 2 * self.useless_at {
            // Answers go out at more than twice the rate of those the poll failed on: other
            // requests (reads after one client's writes in a cluster), worth a try now.
            (self.hold, self.backoff) = (0, 0);
        }
        if self.hold > 0 {
            self.hold -= 1;
            return false;
        }
        worth == Worth::Yes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worth {
    Yes,
    No,
    /// The worker went on sleeping between answers while the poll ran: the requests wait on
    /// something else (a write on its disk flush), and polling only burns CPU.
    Useless,
}

/// Whether polling pays, from what happened since the last sample: `answered` answers went
/// out, the worker slept `slept` times and the poll caught `caught` requests. Without the poll
/// it is worth a try when the worker slept between at least every other answer (a busy worker
/// finds its next request waiting and seldom sleeps, and polling would only add work). With
/// it, it pays when it caught at least every other request and the worker seldom slept.
fn worth_polling(answered: u64, slept: u64, caught: u64, polled: bool) -> Worth {
    let often = |n: u64| n * 2 >= answered;
    match (answered, polled) {
        (0, _) => Worth::No,
        (_, true) if often(slept) => Worth::Useless,
        (_, true) if often(caught) => Worth::Yes,
        (_, false) if often(slept) => Worth::Yes,
        _ => Worth::No,
    }
}

/// CPU time the whole machine has spent, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    /// Idle and I/O wait.
    idle: u64,
    total: u64,
    cpus: usize,
}

impl CpuTimes {
    fn parse(stat: &str) -> Option<CpuTimes> {
        let mut lines = stat.lines();
        let first: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let cpus = lines.filter(|l| l.starts_with("cpu")).count();
        (first.len() >= 5 && cpus > 0).then(|| CpuTimes {
            idle: first[3] + first[4],
            total: first.iter().sum(),
            cpus,
        })
    }
}

/// Whether the machine had CPU to spare between two samples: `START_IDLE_CPUS` idle, or
/// `KEEP_IDLE_CPUS` if the poll was running.
fn spare(before: CpuTimes, after: CpuTimes, polling: bool) -> bool {
    let total = after.total.saturating_sub(before.total);
    let idle = after.idle.saturating_sub(before.idle) as f64 / total.max(1) as f64 * after.cpus as f64;
    total > 0 && idle >= if polling { KEEP_IDLE_CPUS } else { START_IDLE_CPUS }
}

#[derive(Default)]
struct Machine {
    last: Option<CpuTimes>,
}

impl Machine {
    /// Samples the machine; whether it had CPU to spare since the last sample (never on the
    /// first, or where `/proc/stat` cannot be read).
    fn sample(&mut self, polling: bool) -> bool {
        let Some(cur) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(CpuTimes::parse)
        else {
            return false;
        };
        let ok = self.last.is_some_and(|prev| spare(prev, cur, polling));
        self.last = Some(cur);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "cpu  100 5 50 1000 20 0 3 0 0 0\ncpu0 50 2 25 500 10 0 1 0 0 0\ncpu1 50 3 25 500 10 0 2 0 0 0\nintr 1\n";

    #[test]
    fn reads_the_machine_line_and_counts_cpus() {
        let t = CpuTimes::parse(STAT).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                idle: 1020,
                total: 1178,
                cpus: 2
            }
        );
        assert_eq!(CpuTimes::parse("intr 1\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5\ncpu0 1\n"), None);
    }

    #[test]
    fn starts_polling_with_a_cpu_idle_and_goes_on_with_half_of_one() {
        let at = |idle, total| CpuTimes { idle, total, cpus: 2 };
        // 20 of 20 ticks busy: nothing idle.
        assert!(!spare(at(0, 0), at(0, 20), true));
        // 8 of 20 ticks idle over two CPUs: 0.8 of a CPU, enough to go on but not to start.
        assert!(spare(at(0, 0), at(8, 20), true));
        assert!(!spare(at(0, 0), at(8, 20), false));
        // 4 of 20: 0.4, not enough to go on.
        assert!(!spare(at(0, 0), at(4, 20), true));
        // Half the ticks idle: a whole CPU, enough to start.
        assert!(spare(at(100, 200), at(110, 220), false));
        // No ticks between the samples: no decision but no.
        assert!(!spare(at(5, 20), at(5, 20), true));
    }

    #[test]
    fn polls_while_it_keeps_the_worker_awake_between_answers() {
        // One client, no poll: a sleep for every answer; worth a try.
        assert_eq!(worth_polling(2000, 2000, 0, false), Worth::Yes);
        // Polling, the client's next request is caught and the worker stays awake.
        assert_eq!(worth_polling(2000, 30, 1900, true), Worth::Yes);
        // Sixteen clients: the worker seldom sleeps, the next request is already there.
        assert_eq!(worth_polling(6800, 750, 0, false), Worth::No);
        assert_eq!(worth_polling(6800, 750, 100, true), Worth::No);
        // One client's writes: caught, but each waits on a flush and the worker sleeps anyway.
        assert_eq!(worth_polling(400, 400, 390, true), Worth::Useless);
        // No answers since the last sample: the node is idle, nothing to poll for.
        assert_eq!(worth_polling(0, 100, 0, false), Worth::No);
        assert_eq!(worth_polling(10, 5, 0, false), Worth::Yes);
    }

    #[test]
    fn a_poll_that_does_not_pay_stays_off_longer_each_time() {
        let mut w = Wakes::default();
        let (mut answers, mut parks) = (0, 0);
        let mut step = |w: &mut Wakes, slept_per_answer: u64, polled: bool| {
            answers += 100;
            parks += 100 * slept_per_answer;
            w.sample(answers, parks, polled)
        };
        // Tried, useless: off for one sample, then tried again.
        assert!(step(&mut w, 1, false));
        assert!(!step(&mut w, 1, true));
        assert!(step(&mut w, 1, false));
        // Useless again: off for two, then four.
        assert!(!step(&mut w, 1, true));
        assert!(!step(&mut w, 1, false));
        assert!(step(&mut w, 1, false));
        assert!(!step(&mut w, 1, true));
        for _ in 0..3 {
            assert!(!step(&mut w, 1, false));
        }
        assert!(step(&mut w, 1, false));
        // A poll that pays keeps running and clears the backoff.
        w.caught = 100;
        assert!(step(&mut w, 0, true));
        assert_eq!(w.backoff, 0);
    }

    #[test]
    fn a_poll_held_off_is_tried_again_at_once_when_requests_come_faster() {
        let mut w = Wakes::default();
        let (mut answers, mut parks) = (0, 0);
        let mut step = |w: &mut Wakes, answered: u64, polled: bool| {
            answers += answered;
            parks += answered;
            w.sample(answers, parks, polled)
        };
        // One client's writes wait on the other nodes: useless three times, then off for eight.
        for hold in [1, 2, 4] {
            assert!(step(&mut w, 100, false));
            assert!(!step(&mut w, 100, true));
            for _ in 1..hold {
                assert!(!step(&mut w, 100, false));
            }
        }
        assert!(step(&mut w, 100, false));
        assert!(!step(&mut w, 100, true));
        assert!(!step(&mut w, 100, false));
        // At twice the rate, the same requests still; at more, others: tried at once.
        assert!(!step(&mut w, 200, false));
        assert!(step(&mut w, 201, false));
        assert_eq!((w.hold, w.backoff), (0, 0));
    }
}
