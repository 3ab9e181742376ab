//! What was acknowledged survives kill -9, exactly once; replays apply the same values.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{DataDir, Node};

/// Rows of a query as JSON arrays.
async fn rows(n: &Node, sql: &str) -> Vec<serde_json::Value> {
    let body = n.query("?level=none", &serde_json::to_string(&[sql]).unwrap()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["results"][0]["values"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_exactly_once() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &["-raft-snap", "50", "-raft-snap-int", "100ms"]).await;
    n.execute(
        r#"["CREATE TABLE w(id INTEGER PRIMARY KEY AUTOINCREMENT, client INTEGER, seq INTEGER, UNIQUE(client, seq))"]"#,
    )
    .await;
    let acked: Arc<Mutex<HashSet<(u64, u64)>>> = Arc::default();

    for round in 0..3u64 {
        // Phase 1: writers run flat out; the node is killed under them.
        let mut writers = Vec::new();
        for c in 0..6u64 {
            let url = n.url("/db/execute");
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0..u64::MAX {
                    let body = format!(
                        r#"[["INSERT INTO w(client, seq) VALUES(?, ?)", {}, {i}]]"#,
                        round * 100 + c
                    );
                    let Ok(r) = client.post(&url).body(body).send().await else {
                        break;
                    };
                    let Ok(text) = r.text().await else { break };
                    if text == r#"{"results":[]}"# || text.contains("error") {
                        break;
                    }
                    acked.lock().unwrap().insert((round * 100 + c, i));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700 + round * 300)).await;
        n.kill();
        for w in writers {
            w.await.unwrap();
        }
        // Phase 2: restart; every acknowledged row is there exactly once.
        n.kill_and_restart().await;
        let got = rows(&n, "SELECT client, seq, COUNT(*) FROM w GROUP BY client, seq").await;
        let present: HashSet<(u64, u64)> = got
            .iter()
            .map(|r| {
                assert_eq!(r[2], 1, "row {r} applied more than once");
                (r[0].as_u64().unwrap(), r[1].as_u64().unwrap())
            })
            .collect();
        let acked = acked.lock().unwrap().clone();
        let missing: Vec<_> = acked.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged rows missing",
            missing.len()
        );
        assert!(!acked.is_empty());
    }
    assert_eq!(
        rows(&n, "PRAGMA integrity_check").await,
        vec![serde_json::json!(["ok"])]
    );
}

#[tokio::test]
async fn rewritten_statements_replay_identically() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &[]).await;
    n.execute(r#"["CREATE TABLE r(id INTEGER PRIMARY KEY, a INTEGER, b BLOB, c TEXT, d REAL)"]"#)
        .await;
    for _ in 0..20 {
        n.execute(
            r#"["INSERT INTO r(a, b, c, d) VALUES(random(), randomblob(8), datetime('now'), julianday('now'))"]"#,
        )
        .await;
    }
    let before = rows(&n, "SELECT * FROM r ORDER BY id").await;
    assert_eq!(before.len(), 20);

    // Throw the database away: the restart rebuilds it by replaying the whole log.
    n.kill();
    for f in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
        let _ = std::fs::remove_file(d.path.join(f));
    }
    n.kill_and_restart().await;
    n.wait_for(Duration::from_secs(10), "the log to be replayed", || async {
        rows(&n, "SELECT COUNT(*) FROM r").await.first() == Some(&serde_json::json!([20]))
    })
    .await;
    assert_eq!(rows(&n, "SELECT * FROM r ORDER BY id").await, before);
}
