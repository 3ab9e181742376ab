//! `GET /metrics`: the Prometheus text format of every `/debug/vars` counter (as
//! `rqlite_<map>_<key>`), of the histograms the node records through the `metrics` facade
//! (requests per endpoint, reads per level, and the store's: Raft commit, log fsync, entries'
//! batch sizes, apply, snapshots, loads, read-connection waits), and of gauges read when
//! scraped (indexes, replication lag per follower on the leader, database and WAL sizes).
//!
//! Labels take bounded values: endpoints are a fixed list, status codes a fixed list plus
//! `other`, read levels five, followers the cluster's members. No SQL text, no client address.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use rq_proto::Level;

use crate::Service;

/// The endpoints requests are counted under, by path.
const ENDPOINTS: &[&str] = &[
    "execute",
    "query",
    "request",
    "sql",
    "backup",
    "load",
    "boot",
    "snapshot",
    "remove",
    "reap",
    "status",
    "nodes",
    "leader",
    "readyz",
    "debug_vars",
    "metrics",
    "console",
    "other",
];

/// The endpoint a path is counted under: an index into `ENDPOINTS`.
pub(crate) fn endpoint_of(path: &str) -> usize {
    let prefixed = [
        ("/db/execute", 0),
        ("/db/query", 1),
        ("/db/request", 2),
        ("/db/sql", 3),
        ("/db/backup", 4),
        ("/db/load", 5),
        ("/remove", 8),
        ("/status", 10),
        ("/nodes", 11),
        ("/readyz", 13),
        ("/console", 16),
    ];
    if let Some((_, i)) = prefixed.iter().find(|(p, _)| path.starts_with(p)) {
        return *i;
    }
    match path {
        "/boot" => 6,
        "/snapshot" => 7,
        "/reap" => 9,
        "/leader" => 12,
        "/debug/vars" => 14,
        "/metrics" => 15,
        "/" | "" => 16,
        _ => ENDPOINTS.len() - 1,
    }
}

/// The status codes the API answers with; anything else is counted as `other`.
const CODES: &[(u16, &str)] = &[
    (200, "200"),
    (204, "204"),
    (301, "301"),
    (302, "302"),
    (303, "303"),
    (307, "307"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (413, "413"),
    (415, "415"),
    (500, "500"),
    (503, "503"),
];

const LEVELS: &[&str] = &["none", "weak", "linearizable", "strong", "auto"];

fn level_index(l: Level) -> usize {
    match l {
        Level::None => 0,
        Level::Weak => 1,
        Level::Linearizable => 2,
        Level::Strong => 3,
        Level::Auto => 4,
    }
}

/// The HTTP layer's instruments, each registered on first use (so that only the series in use
/// are exported), after which recording is an atomic operation.
pub(crate) struct HttpMetrics {
    /// Per endpoint, per status code (the last slot is `other`).
    duration: Vec<Vec<OnceLock<Histogram>>>,
    requests: Vec<Vec<OnceLock<Counter>>>,
    reads: Vec<OnceLock<Histogram>>,
}

impl HttpMetrics {
    pub(crate) fn new() -> HttpMetrics {
        HttpMetrics {
            duration: ENDPOINTS
                .iter()
                .map(|_| (0..=CODES.len()).map(|_| OnceLock::new()).collect())
                .collect(),
            requests: ENDPOINTS
                .iter()
                .map(|_| (0..=CODES.len()).map(|_| OnceLock::new()).collect())
                .collect(),
            reads: LEVELS.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one answered request and how long it took.
    pub(crate) fn request(&self, endpoint: usize, status: StatusCode, took: Duration) {
        let code = CODES.iter().position(|(c, _)| *c == status.as_u16());
        let slot = code.unwrap_or(CODES.len());
        let status = code.map_or("other", |i| CODES[i].1);
        let labels = [("endpoint", ENDPOINTS[endpoint]), ("status", status)];
        self.duration[endpoint][slot]
            .get_or_init(|| metrics::histogram!(REQUEST_SECONDS, &labels))
            .record(took.as_secs_f64());
        self.requests[endpoint][slot]
            .get_or_init(|| metrics::counter!(REQUESTS, &labels))
            .increment(1);
    }

    /// Records a read served at `level`.
    pub(crate) fn read(&self, level: Level, took: Duration) {
        let i = level_index(level);
        self.reads[i]
            .get_or_init(|| metrics::histogram!(READ_SECONDS, "level" => LEVELS[i]))
            .record(took.as_secs_f64());
    }
}

const REQUEST_SECONDS: &str = "rqlite_http_request_seconds";
const REQUESTS: &str = "rqlite_http_requests_total";
const READ_SECONDS: &str = "rqlite_read_seconds";

/// Describes the HTTP layer's metrics to the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer a request, by endpoint and status code."
    );
    metrics::describe_counter!(REQUESTS, "Requests answered, by endpoint and status code.");
    metrics::describe_histogram!(
        READ_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer a /db/query read, by read consistency level."
    );
}

/// Whether rqlite reports an expvar key as a gauge rather than a counter (its OTLP bridge's
/// rule): durations, sizes, ratios and `last_` values, and a few named ones.
pub fn is_gauge(map: &str, key: &str) -> bool {
    let named = matches!(
        (map, key),
        ("db.wal", "compact_frames_input" | "compact_frames_output") | ("snapshot", "reap_snapshots" | "reap_wals")
    );
    named || key.contains("duration") || key.ends_with("_size") || key.ends_with("_ratio") || key.starts_with("last_")
}

/// A Prometheus metric name from an expvar map and key: `rqlite_<map>_<key>`, with every
/// character Prometheus does not allow made `_`.
fn metric_name(map: &str, key: &str) -> String {
    format!("rqlite_{map}_{key}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// A gauge read now: name, description, labels, value.
pub type GaugeReading = (&'static str, &'static str, Vec<(&'static str, String)>, f64);

/// The gauges read when scraped: indexes, leadership, replication lag per follower (on the
/// leader), database and WAL sizes.
pub(crate) fn gauges(svc: &Arc<Service>) -> Vec<GaugeReading> {
    let store = &svc.store;
    let (applied, term) = store.applied();
    let last = store.last_log_index();
    let mut out: Vec<GaugeReading> = vec![
        (
            "rqlite_raft_applied_index",
            "Index of the last log entry applied to the database.",
            vec![],
            applied as f64,
        ),
        (
            "rqlite_raft_applied_term",
            "Term of the last log entry applied to the database.",
            vec![],
            term as f64,
        ),
        (
            "rqlite_raft_commit_index",
            "The commit index this node knows.",
            vec![],
            store.commit_index() as f64,
        ),
        (
            "rqlite_raft_last_log_index",
            "Index of the last entry in this node's log.",
            vec![],
            last as f64,
        ),
        (
            "rqlite_raft_leader",
            "1 on the leader, 0 elsewhere.",
            vec![],
            f64::from(u8::from(store.is_leader())),
        ),
    ];
    let mut progress: Vec<(String, u64)> = store.replication_progress().into_iter().collect();
    progress.retain(|(id, _)| id != store.node_id());
    progress.sort();
    for (node, matched) in progress {
        out.push((
            "rqlite_raft_replication_lag_entries",
            "On the leader: log entries each follower has yet to acknowledge.",
            vec![("node", node)],
            last.saturating_sub(matched) as f64,
        ));
    }
    let db = std::fs::metadata(store.db_path()).map(|m| m.len()).unwrap_or(0);
    out.push(("rqlite_db_size_bytes", "Size of the database file.", vec![], db as f64));
    out.push((
        "rqlite_wal_size_bytes",
        "Size of the database's WAL file.",
        vec![],
        store.wal_size() as f64,
    ));
    out
}

/// A label value as the text format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The body of `GET /metrics`.
pub(crate) fn render(svc: &Arc<Service>) -> Response {
    let mut out = String::with_capacity(32 * 1024);
    if let Some(h) = &svc.cfg.prometheus {
        out.push_str(&h.render());
    }
    for (map, entries) in crate::node::expvar_maps(svc) {
        for (key, v) in entries {
            let name = metric_name(&map, key);
            let kind = if is_gauge(&map, key) { "gauge" } else { "counter" };
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
    }
    let mut described: Option<&str> = None;
    for (name, help, labels, v) in gauges(svc) {
        if described != Some(name) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            described = Some(name);
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{}}} {v}", labels.join(","));
        }
    }
    let mut r = (StatusCode::OK, out).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_a_bounded_endpoint_label() {
        assert_eq!(ENDPOINTS[endpoint_of("/db/query/")], "query");
        assert_eq!(ENDPOINTS[endpoint_of("/boot")], "boot");
        assert_eq!(ENDPOINTS[endpoint_of("/metrics")], "metrics");
        assert_eq!(ENDPOINTS[endpoint_of("/x/../secret")], "other");
        assert_eq!(metric_name("cdc.service", "num_sent"), "rqlite_cdc_service_num_sent");
        assert!(is_gauge("store", "snapshot_create_duration"));
        assert!(is_gauge("snapshot", "persist_size"));
        assert!(!is_gauge("store", "num_snapshots"));
    }
}
