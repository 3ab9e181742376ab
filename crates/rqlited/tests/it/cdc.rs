//! Change data capture (`-cdc-config`) against a real HTTP sink on loopback (axum) that records
//! what it receives and fails on demand.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{DataDir, Node, refused_start};

/// An HTTP sink: every request body it took, and a status to answer with instead of 200.
#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Vec<Value>>>,
    fail_with: Arc<AtomicU16>,
    content_types: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    async fn start(tls: Option<Arc<rq_net::rustls::ServerConfig>>) -> (Sink, String) {
        let sink = Sink::default();
        let s = sink.clone();
        let app = axum::Router::new().route(
            "/cdc",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let s = s.clone();
                async move {
                    let status = s.fail_with.load(Ordering::Relaxed);
                    if status != 0 {
                        return StatusCode::from_u16(status).unwrap();
                    }
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    s.content_types.lock().unwrap().push(ct);
                    s.received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).expect("JSON body"));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/cdc", listener.local_addr().unwrap());
        let opts = rq_net::ServeOptions {
            tls,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            port: "sink",
        };
        tokio::spawn(rq_net::serve(listener, app, opts, std::future::pending()));
        (sink, url)
    }

    /// Every message received, by log index (the last copy of each), and how many copies.
    fn by_index(&self) -> BTreeMap<u64, (Value, usize)> {
        let mut out: BTreeMap<u64, (Value, usize)> = BTreeMap::new();
        for env in self.received.lock().unwrap().iter() {
            for m in env["payload"].as_array().unwrap() {
                let i = m["index"].as_u64().unwrap();
                let e = out.entry(i).or_insert((Value::Null, 0));
                e.0 = m.clone();
                e.1 += 1;
            }
        }
        out
    }

    /// Waits (bounded) until messages for all of `indexes` have arrived.
    async fn wait_for(&self, indexes: &[u64], timeout: Duration) -> BTreeMap<u64, (Value, usize)> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.by_index();
            if indexes.iter().all(|i| got.contains_key(i)) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "missing {:?} of {indexes:?}",
                indexes.iter().filter(|i| !got.contains_key(i)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs a write; its log index.
async fn write(node: &Node, body: &str) -> u64 {
    let (status, text) = node.post("/db/execute?raft_index", body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("error").is_none()),
        "{text}"
    );
    v["raft_index"].as_u64().expect("raft_index")
}

fn config_file(dir: &Path, v: Value) -> String {
    let path = dir.join("cdc.json");
    std::fs::write(&path, v.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_node_sends_each_committed_change_once_and_no_rolled_back_one() {
    let (sink, url) = Sink::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(
        tmp.path(),
        json!({"endpoint": url, "service_id": "svc-1", "table_filter": "^(foo|bar)$",
               "max_batch_size": 2, "max_batch_delay": 20_000_000}),
    );
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-node-id", "n1", "-cdc-config", &cfg]).await;
    write(
        &node,
        r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, data BLOB, score REAL)", "CREATE TABLE other (x)"]"#,
    )
    .await;
    let i1 = write(
        &node,
        r#"[["INSERT INTO foo(name, data, score) VALUES(?, x'010203', 2.5)", "fiona"]]"#,
    )
    .await;
    let i2 = write(
        &node,
        r#"["UPDATE foo SET name = '<b>' WHERE id = 1", "INSERT INTO other VALUES(1)"]"#,
    )
    .await;
    // A failed transaction: nothing of it is sent.
    let (status, text) = node
        .post(
            "/db/execute?transaction&raft_index",
            r#"["INSERT INTO foo(name) VALUES('never')", "INSERT INTO nowhere VALUES(1)"]"#,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let i3 = write(&node, r#"["DELETE FROM foo WHERE id = 1"]"#).await;
    let got = sink.wait_for(&[i1, i2, i3], Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "only these indexes: {got:?}");
    assert_eq!(
        got[&i1].0["events"],
        json!([{"op": "INSERT", "table": "foo", "new_row_id": 1,
                "after": {"data": "AQID", "id": 1, "name": "fiona", "score": 2.5}}])
    );
    assert_eq!(
        got[&i2].0["events"],
        json!([{"op": "UPDATE", "table": "foo", "new_row_id": 1, "old_row_id": 1,
                "before": {"data": "AQID", "id": 1, "name": "fiona", "score": 2.5},
                "after": {"data": "AQID", "id": 1, "name": "<b>", "score": 2.5}}])
    );
    assert_eq!(got[&i3].0["events"][0]["op"], "DELETE");
    assert!(got.values().all(|(_, copies)| *copies == 1), "{got:?}");
    let first = sink.received.lock().unwrap()[0].clone();
    assert_eq!(first["service_id"], "svc-1");
    assert_eq!(first["node_id"], "n1");
    assert!(first["payload"][0]["commit_timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(
        sink.content_types
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "application/json")
    );

    let status = node.status().await;
    assert_eq!(status["cdc"]["highwater_mark"], i3);
    assert_eq!(status["cdc"]["is_leader"], true);
    assert_eq!(status["cdc"]["service_id"], "svc-1");
    assert_eq!(status["store"]["cdc"]["enabled"], true);
    let vars = node.expvar().await["cdc.service"].clone();
    assert_eq!(vars["highwater_mark"], i3);
    assert!(vars["num_events_tx_ok"].as_i64().unwrap() >= 2, "{vars}");
}

#[tokio::test]
async fn a_sink_down_for_a_while_then_gets_everything_in_order_also_across_a_kill_9() {
    let (sink, url) = Sink::start(None).await;
    sink.fail_with.store(503, Ordering::Relaxed);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(
        tmp.path(),
        json!({"endpoint": url, "transmit_min_backoff": 50_000_000, "max_batch_delay": 10_000_000}),
    );
    let d = DataDir::new();
    let mut node = Node::start_in(&d.path, &["-cdc-config", &cfg]).await;
    write(&node, r#"["CREATE TABLE t (x)"]"#).await;
    let mut indexes = Vec::new();
    for i in 0..30 {
        indexes.push(write(&node, &format!(r#"["INSERT INTO t VALUES({i})"]"#)).await);
    }
    node.wait_for(Duration::from_secs(10), "failed sends retried", || async {
        node.expvar().await["cdc.service"]["retries"].as_i64().unwrap_or(0) >= 3
    })
    .await;
    assert!(
        node.status().await["cdc"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    // The changes wait on disk, and survive the process being killed.
    node.kill_and_restart().await;
    for i in 30..40 {
        indexes.push(write(&node, &format!(r#"["INSERT INTO t VALUES({i})"]"#)).await);
    }
    sink.fail_with.store(0, Ordering::Relaxed);
    let got = sink.wait_for(&indexes, Duration::from_secs(20)).await;
    let values: Vec<i64> = indexes
        .iter()
        .map(|i| got[i].0["events"][0]["after"]["x"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (0..40).collect::<Vec<i64>>());
    // Requests arrive in index order.
    let order: Vec<u64> = sink
        .received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|e| {
            e["payload"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["index"].as_u64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[tokio::test]
async fn a_three_node_cluster_keeps_sending_after_its_leader_is_killed() {
    let (sink, url) = Sink::start(None).await;
    let dirs: Vec<DataDir> = (0..3).map(|_| DataDir::new()).collect();
    let args = |id: &str, join: Option<&str>| {
        let mut a = vec![
            "-node-id".to_string(),
            id.to_string(),
            "-cdc-config".to_string(),
            url.clone(),
        ];
        if let Some(j) = join {
            a.extend(["-join".to_string(), j.to_string()]);
        }
        a
    };
    let a0 = args("c0", None);
    let mut nodes = vec![Node::start_in(&dirs[0].path, &a0.iter().map(String::as_str).collect::<Vec<_>>()).await];
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let a = args(&format!("c{i}"), Some(&nodes[0].raft));
        nodes.push(Node::start_in(&d.path, &a.iter().map(String::as_str).collect::<Vec<_>>()).await);
    }
    write(&nodes[0], r#"["CREATE TABLE t (x)"]"#).await;
    let mut indexes = Vec::new();
    for i in 0..20 {
        indexes.push(write(&nodes[0], &format!(r#"["INSERT INTO t VALUES({i})"]"#)).await);
    }
    // Followers keep the mark the leader sends them and prune up to it.
    sink.wait_for(&indexes, Duration::from_secs(10)).await;
    let last = *indexes.last().unwrap();
    for n in &nodes[1..] {
        n.wait_for(Duration::from_secs(10), "the leader's mark", || async {
            n.status().await["cdc"]["highwater_mark"].as_u64().unwrap_or(0) >= last
        })
        .await;
        assert_eq!(n.status().await["cdc"]["is_leader"], false);
    }
    // The leader dies mid-stream; the new one sends what follows (and perhaps some again).
    for i in 20..30 {
        indexes.push(write(&nodes[0], &format!(r#"["INSERT INTO t VALUES({i})"]"#)).await);
    }
    nodes.remove(0).kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    while written < 10 {
        assert!(Instant::now() < deadline, "no new leader took writes");
        for n in &nodes {
            let (status, text) = n
                .post(
                    "/db/execute?raft_index",
                    &format!(r#"["INSERT INTO t VALUES({})"]"#, 30 + written),
                )
                .await;
            if status == 200 && !text.contains("error") {
                let v: Value = serde_json::from_str(&text).unwrap();
                indexes.push(v["raft_index"].as_u64().unwrap());
                written += 1;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = sink.wait_for(&indexes, Duration::from_secs(20)).await;
    let mut values: Vec<i64> = indexes
        .iter()
        .map(|i| got[i].0["events"][0]["after"]["x"].as_i64().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, (0..40).collect::<Vec<i64>>());
    // Within every request, indexes ascend.
    for env in sink.received.lock().unwrap().iter() {
        let idx: Vec<u64> = env["payload"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["index"].as_u64().unwrap())
            .collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
    }
}

#[tokio::test]
async fn tls_to_the_sink_and_a_request_dropped_after_its_retries() {
    let certs = tempfile::tempdir().unwrap();
    let ca = rq_net::testing::Ca::new("sink CA");
    let pair = ca.issue("sink", &["127.0.0.1"]).write(certs.path(), "sink");
    let tls = rq_net::server_config(&rq_net::ServerOptions {
        pair,
        ca: None,
        verify_client: false,
        verify_common_name: None,
        alpn: vec![b"http/1.1".to_vec()],
    })
    .unwrap();
    let (sink, url) = Sink::start(Some(tls)).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = ca.write(certs.path(), "ca.crt");
    let cfg = config_file(
        tmp.path(),
        json!({"endpoint": url, "tls": {"ca_cert_file": ca_file}, "transmit_max_retries": 2,
               "transmit_min_backoff": 20_000_000, "max_batch_delay": 10_000_000}),
    );
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-cdc-config", &cfg]).await;
    write(&node, r#"["CREATE TABLE t (x)"]"#).await;
    sink.fail_with.store(500, Ordering::Relaxed);
    let dropped = write(&node, r#"["INSERT INTO t VALUES(1)"]"#).await;
    node.wait_for(
        Duration::from_secs(10),
        "the request dropped after 2 attempts",
        || async {
            node.expvar().await["cdc.service"]["dropped_failed_to_send"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        },
    )
    .await;
    sink.fail_with.store(0, Ordering::Relaxed);
    let kept = write(&node, r#"["INSERT INTO t VALUES(2)"]"#).await;
    let got = sink.wait_for(&[kept], Duration::from_secs(10)).await;
    assert!(!got.contains_key(&dropped));
    assert_eq!(node.expvar().await["cdc.service"]["num_events_tx_failed"], 2);
}

#[tokio::test]
async fn refused_configurations_stop_the_node_with_rqlites_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_policy = config_file(
        tmp.path(),
        json!({"endpoint": "http://127.0.0.1:1/x", "table_filter": "("}),
    );
    let dir = tmp.path().join("data");
    for (args, message) in [
        (
            vec!["-cdc-config", "http://127.0.0.1:1/x", "-raft-non-voter"],
            "CDC cannot be enabled on non-voting nodes",
        ),
        (
            vec!["-cdc-config", "/no/such/cdc.json"],
            "failed to create CDC Service: failed to create CDC config: open /no/such/cdc.json: no such file or directory",
        ),
        (
            vec!["-cdc-config", &bad_policy],
            "failed to create CDC config: invalid regexp \"(\"",
        ),
    ] {
        let err = refused_start(&args, &dir);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
