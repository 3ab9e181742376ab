//! What was acknowledged survives kill -9, exactly once; replays apply the same values.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{DataDir, Node, acknowledged};

/// Rows of a query as JSON arrays.
async fn rows(n: &Node, sql: &str) -> Vec<serde_json::Value> {
    let body = n.query("?level=none", &serde_json::to_string(&[sql]).unwrap()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["results"][0]["values"].as_array().cloned().unwrap_or_default()
}

/// Asserts that SQLite finds the node's database intact.
async fn assert_intact(n: &Node) {
    assert_eq!(rows(n, "PRAGMA integrity_check").await, vec![serde_json::json!(["ok"])]);
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
    assert_intact(&n).await;
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

#[tokio::test]
async fn a_database_left_by_a_host_crash_is_rebuilt_from_snapshot_and_log() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &["-raft-snap", "20", "-raft-snap-int", "100ms"]).await;
    n.execute(r#"["CREATE TABLE h(id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER)"]"#)
        .await;
    for i in 0..50 {
        n.execute(&format!(r#"[["INSERT INTO h(v) VALUES(?)", {i}]]"#)).await;
    }
    n.wait_for(Duration::from_secs(10), "a snapshot", || async {
        n.status().await["store"]["raft"]["last_snapshot_index"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    for i in 50..60 {
        n.execute(&format!(r#"[["INSERT INTO h(v) VALUES(?)", {i}]]"#)).await;
    }
    n.kill();
    // Pretend the machine rebooted under the node: the run record names another boot and no
    // clean stop. Damage the database file too: it must not be trusted.
    std::fs::write(d.path.join("run.json"), r#"{"boot_id":"another-boot","clean":false}"#).unwrap();
    std::fs::write(d.path.join("db.sqlite"), b"torn").unwrap();
    n.kill_and_restart().await;
    n.wait_for(Duration::from_secs(10), "the rebuild to catch up", || async {
        rows(&n, "SELECT COUNT(*) FROM h").await.first() == Some(&serde_json::json!([60]))
    })
    .await;
    assert_eq!(
        rows(&n, "SELECT COUNT(*), COUNT(DISTINCT v), MIN(v), MAX(v) FROM h").await,
        vec![serde_json::json!([60, 60, 0, 59])]
    );
    assert_eq!(n.expvar().await["store"]["num_recoveries"], 1);
    assert_intact(&n).await;
}

#[tokio::test]
async fn a_clean_stop_checkpoints_and_is_trusted() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &[]).await;
    n.execute(r#"["CREATE TABLE c(x)", "INSERT INTO c VALUES(1)"]"#).await;
    let status = n.terminate().expect("exit status");
    assert!(status.success(), "{status:?}");
    // The WAL was folded into the database file.
    let wal = std::fs::metadata(d.path.join("db.sqlite-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0);
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["clean"], true);
    n.kill_and_restart().await;
    assert_eq!(rows(&n, "SELECT x FROM c").await, vec![serde_json::json!([1])]);
}

/// A tmpfs of `mb` MiB mounted at `dir` for the life of the value (the test runs as root, as
/// the fault tests do).
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, mb: u32) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "mounting a tmpfs at {} needs root", dir.display());
        SmallDisk { dir: dir.to_path_buf() }
    }

    fn grow(&self, mb: u32) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "resizing the tmpfs at {}", self.dir.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test]
async fn a_full_disk_stops_the_node_and_loses_nothing_acknowledged() {
    let d = DataDir::new();
    let disk = SmallDisk::mount(&d.path.join("disk"), 40);
    let data = disk.dir.join("data");
    let mut n = Node::start_in(&data, &[]).await;
    n.execute(r#"["CREATE TABLE f(id INTEGER PRIMARY KEY, v TEXT)"]"#).await;
    let pad = "x".repeat(2000);
    let mut acked = Vec::new();
    let client = reqwest::Client::new();
    for id in 0..100_000u64 {
        let body = format!(r#"[["INSERT INTO f(id, v) VALUES(?, ?)", {id}, "{pad}"]]"#);
        if !acknowledged(&client, &n.url("/db/execute"), body).await {
            break;
        }
        acked.push(id);
    }
    assert!(acked.len() > 100, "the disk filled after {} rows", acked.len());
    // The node does not limp on without its log or database: it stops, with a failure status.
    let status = n.wait_exit_status(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "the node went on running on a full disk"
    );

    // Room again: the node starts, holds every acknowledged row once, and takes writes.
    disk.grow(200);
    n.kill_and_restart().await;
    let got = rows(&n, "SELECT id FROM f ORDER BY id").await;
    let ids: Vec<u64> = got.iter().map(|r| r[0].as_u64().unwrap()).collect();
    let have: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(have.len(), ids.len());
    let missing = acked.iter().filter(|id| !have.contains(id)).count();
    assert_eq!(missing, 0, "{missing} acknowledged rows lost");
    assert_intact(&n).await;
    let after = n
        .execute(r#"[["INSERT INTO f(id, v) VALUES(?, ?)", 1000000, "after"]]"#)
        .await;
    assert!(after.contains("rows_affected"), "{after}");
    n.kill();
}

#[tokio::test]
async fn a_second_node_on_the_same_directory_is_refused() {
    let (d, n) = crate::harness::single().await;
    n.execute(r#"["CREATE TABLE one(id INTEGER PRIMARY KEY)"]"#).await;
    let mut second = Node::spawn_in(&d.path, &[]);
    let status = second.wait_exit_status(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second node ran on the same directory"
    );
    // The first goes on serving, its data untouched.
    assert_eq!(
        rows(&n, "SELECT name FROM sqlite_master WHERE name = 'one'").await,
        vec![serde_json::json!(["one"])]
    );
    let after = n.execute(r#"["INSERT INTO one(id) VALUES(1)"]"#).await;
    assert!(after.contains("rows_affected"), "{after}");
}
