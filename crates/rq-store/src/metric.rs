//! Names of the histograms the store records through the `metrics` facade (those in seconds
//! end in `_seconds`). Whatever recorder the process installs receives them (`rqlited`
//! installs a Prometheus one, rendered at `GET /metrics`); without one they cost a check and
//! nothing more. Every name is fixed and labels take a handful of values, so the set of series
//! stays bounded.

/// From proposing a log entry to its being committed and applied on the leader, in seconds.
pub const COMMIT_SECONDS: &str = "rqlite_raft_commit_seconds";
/// Client requests carried by one log entry (group commit).
pub const ENTRY_REQUESTS: &str = "rqlite_raft_entry_requests";
/// One `fdatasync` of a Raft log segment, in seconds.
pub const FSYNC_SECONDS: &str = "rqlite_raft_log_fsync_seconds";
/// Applying a run of committed entries to the database, in seconds.
pub const APPLY_SECONDS: &str = "rqlite_apply_seconds";
/// Building a snapshot, in seconds.
pub const SNAPSHOT_SECONDS: &str = "rqlite_snapshot_seconds";
/// A whole load (`kind="load"`, `/db/load` of a SQLite file) or boot (`kind="boot"`), in
/// seconds.
pub const LOAD_SECONDS: &str = "rqlite_load_seconds";
/// Waiting for a read connection when none was idle, in seconds.
pub const POOL_WAIT_SECONDS: &str = "rqlite_read_pool_wait_seconds";

/// Histogram boundaries of values in seconds: 50 us to 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Histogram boundaries of counts.
pub const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Describes the store's metrics to the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_histogram};
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "From proposing a log entry to its being applied on the leader."
    );
    describe_histogram!(ENTRY_REQUESTS, Unit::Count, "Client requests carried by one log entry.");
    describe_histogram!(FSYNC_SECONDS, Unit::Seconds, "One fdatasync of the Raft log.");
    describe_histogram!(
        APPLY_SECONDS,
        Unit::Seconds,
        "Applying a run of committed entries to the database."
    );
    describe_histogram!(SNAPSHOT_SECONDS, Unit::Seconds, "Building a snapshot.");
    describe_histogram!(LOAD_SECONDS, Unit::Seconds, "A whole load or boot of a SQLite file.");
    describe_histogram!(
        POOL_WAIT_SECONDS,
        Unit::Seconds,
        "Waiting for a read connection when none was idle."
    );
}

/// A histogram's handle, made on first use and kept: recording is then an atomic operation,
/// with no lookup by name. The process installs its recorder before the store records
/// anything.
macro_rules! kept {
    ($(#[$doc:meta])* $f:ident, $name:expr) => {
        $(#[$doc])*
        pub(crate) fn $f() -> &'static metrics::Histogram {
            static H: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
            H.get_or_init(|| metrics::histogram!($name))
        }
    };
}

kept!(commit, COMMIT_SECONDS);
kept!(entry_requests, ENTRY_REQUESTS);
kept!(fsync, FSYNC_SECONDS);
kept!(apply, APPLY_SECONDS);
kept!(snapshot, SNAPSHOT_SECONDS);
kept!(pool_waits, POOL_WAIT_SECONDS);

/// Runs `get` (a blocking wait for a read connection) and records how long it took.
pub(crate) fn pool_wait<T>(get: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let r = get();
    pool_waits().record(started.elapsed().as_secs_f64());
    r
}
