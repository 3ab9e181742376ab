//! `GET /metrics`, read by a Prometheus text-format parser: every `/debug/vars` counter, the
//! request, read and Raft histograms, and the gauges read when scraped.

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value};

use crate::harness::{Node, single, three_nodes};

async fn scrape(n: &Node) -> Scrape {
    let r = reqwest::get(n.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let body = r.text().await.unwrap();
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("the Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels`; for a histogram, its count.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

fn count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn every_counter_and_histogram_is_exported_and_moves_with_requests() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]"#).await;
    let before = scrape(&n).await;

    // Every integer of /debug/vars is there under rqlite_<map>_<key>.
    let (_, body) = n.get("/debug/vars").await;
    let vars: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut checked = 0;
    for (map, keys) in vars.as_object().unwrap() {
        if map == "cmdline" || map == "memstats" {
            continue;
        }
        for key in keys.as_object().unwrap().keys() {
            let name = format!("rqlite_{}_{key}", map.replace('.', "_"));
            assert!(value(&before, &name, &[]).is_some(), "{name} is missing");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked}");

    for i in 0..10 {
        n.execute(&format!(r#"["INSERT INTO t(v) VALUES('{i}')"]"#)).await;
    }
    for level in ["weak", "none", "strong", "linearizable"] {
        for _ in 0..3 {
            n.query(&format!("?level={level}"), r#"["SELECT * FROM t"]"#).await;
        }
    }
    assert_eq!(n.get("/no/such/path").await.0, 404);
    let after = scrape(&n).await;
    let delta = |name: &str, labels: &[(&str, &str)]| count(&after, name, labels) - count(&before, name, labels);

    // Requests by endpoint and status, and their latency.
    let execute = [("endpoint", "execute"), ("status", "200")];
    assert_eq!(delta("rqlite_http_requests_total", &execute), 10.0);
    assert_eq!(
        delta(
            "rqlite_http_requests_total",
            &[("endpoint", "query"), ("status", "200")]
        ),
        12.0
    );
    assert_eq!(
        count(
            &after,
            "rqlite_http_requests_total",
            &[("endpoint", "other"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        delta("rqlite_http_request_seconds_count", &[("endpoint", "execute")]),
        10.0
    );
    for level in ["weak", "none", "strong", "linearizable"] {
        assert_eq!(
            count(&after, "rqlite_read_seconds_count", &[("level", level)]),
            3.0,
            "{level}"
        );
    }
    // The store's histograms: each write is an entry, committed, applied and synced.
    assert!(delta("rqlite_raft_commit_seconds_count", &[]) >= 10.0);
    assert!(delta("rqlite_raft_entry_requests_count", &[]) >= 10.0);
    assert!(delta("rqlite_raft_log_fsync_seconds_count", &[]) >= 10.0);
    assert!(delta("rqlite_apply_seconds_count", &[]) >= 10.0);
    assert!(count(&after, "rqlite_raft_commit_seconds_sum", &[]) > 0.0);
    // The expvar counters move as /debug/vars says.
    assert_eq!(delta("rqlite_http_executions", &[]), 10.0);
    // Scrape-time gauges; the node saw one leader come.
    assert_eq!(count(&after, "rqlite_store_leader_changes_observed", &[]), 1.0);
    assert_eq!(count(&after, "rqlite_raft_leader", &[]), 1.0);
    let applied = count(&after, "rqlite_raft_applied_index", &[]);
    assert!(applied >= 11.0, "{applied}");
    assert!(count(&after, "rqlite_raft_last_log_index", &[]) >= applied);
    assert!(count(&after, "rqlite_db_size_bytes", &[]) > 0.0);

    // A snapshot and a boot are timed.
    assert_eq!(n.post("/snapshot", "").await.0, 200);
    let s = scrape(&n).await;
    assert!(count(&s, "rqlite_snapshot_seconds_count", &[]) >= 1.0);
}

#[tokio::test]
async fn the_leader_reports_each_followers_replication_lag() {
    let (_dirs, nodes) = three_nodes(&[]).await;
    let (leader, followers) = (&nodes[0], &nodes[1..]);
    leader.execute(r#"["CREATE TABLE t(x)"]"#).await;
    // A paused follower falls behind by every entry logged since it stopped.
    followers[1].pause();
    leader.execute(r#"["INSERT INTO t VALUES(0)"]"#).await;
    let lags = || async {
        let s = scrape(leader).await;
        s.samples
            .iter()
            .filter(|x| x.metric == "rqlite_raft_replication_lag_entries")
            .map(|x| {
                let Value::Gauge(v) = x.value else { panic!("{x:?}") };
                (x.labels.get("node").unwrap().to_string(), v)
            })
            .collect::<HashMap<String, f64>>()
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = lags().await["n2"];
    assert!(before >= 1.0, "{before}");
    for i in 1..=5 {
        leader.execute(&format!(r#"["INSERT INTO t VALUES({i})"]"#)).await;
    }
    // The follower that acknowledged every write has none to acknowledge once the leader has
    // heard back (its acknowledgement may trail the answer by a moment).
    leader
        .wait_for(std::time::Duration::from_secs(5), "n1 to have no lag", || async {
            lags().await.get("n1") == Some(&0.0)
        })
        .await;
    let lag = lags().await;
    assert_eq!(lag.len(), 2, "{lag:?}");
    assert_eq!(lag["n2"], before + 5.0, "{lag:?}");
    followers[1].resume();
    // Followers report no lag of their own.
    let f = scrape(&followers[0]).await;
    assert!(value(&f, "rqlite_raft_replication_lag_entries", &[]).is_none());
    assert_eq!(count(&f, "rqlite_raft_leader", &[]), 0.0);
}

#[tokio::test]
async fn concurrent_writers_share_entries_and_fsyncs() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, c INTEGER, i INTEGER)"]"#)
        .await;
    let before = scrape(&n).await;
    const CLIENTS: usize = 16;
    const EACH: usize = 30;
    let writers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = n.url("/db/execute");
            tokio::spawn(async move {
                // A connection of its own, as a client process would have.
                let client = reqwest::Client::new();
                for i in 0..EACH {
                    let r = client
                        .post(&url)
                        .body(format!(r#"[["INSERT INTO t(c, i) VALUES(?, ?)", {c}, {i}]]"#))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let body = r.text().await.unwrap();
                    assert!(body.contains(r#""rows_affected":1"#), "{body}");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let after = scrape(&n).await;
    let delta = |name: &str| count(&after, name, &[]) - count(&before, name, &[]);
    let entries = delta("rqlite_raft_entry_requests_count");
    let requests = delta("rqlite_raft_entry_requests_sum");
    assert_eq!(requests, (CLIENTS * EACH) as f64);
    // Group commit: writers that wait at the same time share an entry, and so its fsync.
    assert!(requests / entries >= 2.0, "{requests} requests in {entries} entries");
    assert!(delta("rqlite_raft_log_fsync_seconds_count") <= entries + 5.0);
    let rows = n
        .query("", r#"["SELECT COUNT(*), COUNT(DISTINCT c * 1000 + i) FROM t"]"#)
        .await;
    let want = CLIENTS * EACH;
    assert!(rows.contains(&format!("[[{want},{want}]]")), "{rows}");
}
