//! Crashes at each step of the snapshot, purge, restore and load paths: after a restart every
//! acknowledged row is there exactly once, the database passes its integrity check, and the
//! node serves.

use std::time::Duration;

use crate::harness::{DataDir, Node};

async fn count_rows(n: &Node) -> Vec<serde_json::Value> {
    let body = n
        .query("?level=none", r#"["SELECT v, COUNT(*) FROM c GROUP BY v ORDER BY v"]"#)
        .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["results"][0]["values"].as_array().cloned().unwrap_or_default()
}

/// Writes until the node dies at `failpoint`, restarts it without, and checks what survived.
async fn crash_at(failpoint: &str) {
    crash_at_pass(failpoint, 0).await;
}

/// As `crash_at`, with the failpoint passed over `skip` times first.
async fn crash_at_pass(failpoint: &str, skip: u32) {
    let d = DataDir::new();
    let fp = format!("{failpoint}={skip}*off->panic");
    let mut n = Node::spawn_env(
        &d.path,
        &["-raft-snap", "20", "-raft-snap-int", "50ms"],
        &[("FAILPOINTS", fp.as_str())],
    );
    n.wait_ready().await;
    n.execute(r#"["CREATE TABLE c(id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER UNIQUE)"]"#)
        .await;

    // Phase 1: acknowledged writes until the failpoint ends the process.
    let mut acked = Vec::new();
    let client = reqwest::Client::new();
    for v in 0..10_000i64 {
        let body = format!(r#"[["INSERT INTO c(v) VALUES(?)", {v}]]"#);
        let Ok(r) = client.post(n.url("/db/execute")).body(body).send().await else {
            break;
        };
        let Ok(text) = r.text().await else { break };
        if text.contains("error") {
            break;
        }
        acked.push(v);
    }
    assert!(n.wait_exit(Duration::from_secs(10)).await, "{failpoint} never fired");
    assert!(!acked.is_empty());

    // Phase 2: restart without the failpoint; everything acknowledged is there, once.
    n.env.clear();
    n.kill_and_restart().await;
    let rows = count_rows(&n).await;
    for v in &acked {
        assert!(
            rows.iter().any(|r| r[0] == *v && r[1] == 1),
            "{failpoint}: acknowledged row {v} missing or duplicated"
        );
    }
    assert!(
        n.query("?level=none", r#"["PRAGMA integrity_check"]"#)
            .await
            .contains(r#"[["ok"]]"#)
    );

    // Phase 3: it serves writes and snapshots again.
    n.execute(r#"["INSERT INTO c(v) VALUES(-1)"]"#).await;
    n.wait_for(Duration::from_secs(10), "a snapshot after the crash", || async {
        n.status().await["store"]["snapshot_store"]["snapshots"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
}

#[tokio::test]
async fn crash_at_snapshot_start() {
    crash_at("snapshot-start").await;
}

#[tokio::test]
async fn crash_before_snapshot_fsync() {
    crash_at("snapshot-before-fsync").await;
}

#[tokio::test]
async fn crash_before_snapshot_rename() {
    crash_at("snapshot-before-rename").await;
}

#[tokio::test]
async fn crash_between_snapshot_and_sidecar() {
    crash_at("snapshot-before-sidecar").await;
}

#[tokio::test]
async fn crash_during_log_purge() {
    crash_at("log-purge").await;
}

// A snapshot first checkpoints the database file and records its state beside it; a crash at
// each step of that leaves a file that is either recorded exactly or not trusted. (A new
// database is checkpointed and recorded once when it is created: that pass is let through.)
#[tokio::test]
async fn crash_at_checkpoint_start() {
    crash_at_pass("checkpoint-start", 1).await;
}

#[tokio::test]
async fn crash_between_checkpoint_and_state_record() {
    crash_at_pass("checkpoint-before-record", 1).await;
}

#[tokio::test]
async fn crash_while_writing_the_state_record() {
    crash_at_pass("state-record-before-rename", 1).await;
}

/// A SQLite file of `rows` rows in table `numbers`.
fn numbers_file(dir: &std::path::Path, rows: i64) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("numbers.db");
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE numbers(n INTEGER)").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute("INSERT INTO numbers VALUES(?1)", [i]).unwrap();
    }
    tx.commit().unwrap();
    drop(c);
    std::fs::read(&path).unwrap()
}

#[tokio::test]
async fn crash_while_a_load_replaces_the_database() {
    let d = DataDir::new();
    let mut n = Node::spawn_env(&d.path, &[], &[("FAILPOINTS", "replace-before-rename=panic")]);
    n.wait_ready().await;
    n.execute(r#"["CREATE TABLE old(x)", "INSERT INTO old VALUES(1)"]"#)
        .await;
    let file = numbers_file(&d.path.with_extension("src"), 300_000);
    let _ = reqwest::Client::new().post(n.url("/db/load")).body(file).send().await;
    assert!(n.wait_exit(Duration::from_secs(10)).await, "the failpoint never fired");
    // Every piece was committed before the crash: the replay finishes the load.
    n.env.clear();
    n.kill_and_restart().await;
    n.wait_for(Duration::from_secs(10), "the load to be replayed", || async {
        n.query("?level=none", r#"["SELECT COUNT(*) FROM numbers"]"#)
            .await
            .contains("[[300000]]")
    })
    .await;
    assert!(
        n.query("", r#"["PRAGMA integrity_check"]"#)
            .await
            .contains(r#"[["ok"]]"#)
    );
}

#[tokio::test]
async fn crash_in_the_middle_of_a_load() {
    let d = DataDir::new();
    let mut n = Node::spawn_env(
        &d.path,
        &["-raft-snap", "5", "-raft-snap-int", "50ms"],
        &[("FAILPOINTS", "load-before-record=1*off->panic")],
    );
    n.wait_ready().await;
    n.execute(r#"["CREATE TABLE old(x)", "INSERT INTO old VALUES(1)"]"#)
        .await;
    // Several pieces (4 MiB each): the crash comes while the second is applied.
    let file = numbers_file(&d.path.with_extension("src"), 1_500_000);
    assert!(file.len() > 3 * 4 * 1024 * 1024);
    let _ = reqwest::Client::new().post(n.url("/db/load")).body(file).send().await;
    assert!(n.wait_exit(Duration::from_secs(10)).await, "the failpoint never fired");
    // The load was cut short: the old data stands, the unfinished load is dropped, and
    // snapshots, held back while it was open, resume.
    n.env.clear();
    n.kill_and_restart().await;
    assert!(n.query("", r#"["SELECT x FROM old"]"#).await.contains("[[1]]"));
    for i in 0..10 {
        n.execute(&format!(r#"[["INSERT INTO old VALUES(?)", {i}]]"#)).await;
    }
    n.wait_for(Duration::from_secs(10), "a snapshot after the dropped load", || async {
        n.status().await["store"]["snapshot_store"]["snapshots"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert!(
        n.query("", r#"["SELECT * FROM numbers"]"#)
            .await
            .contains("no such table")
    );
}

#[tokio::test]
async fn crash_while_restoring_after_a_host_crash() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &["-raft-snap", "10", "-raft-snap-int", "50ms"]).await;
    n.execute(r#"["CREATE TABLE c(id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER UNIQUE)"]"#)
        .await;
    for v in 0..30 {
        n.execute(&format!(r#"[["INSERT INTO c(v) VALUES(?)", {v}]]"#)).await;
    }
    n.wait_for(Duration::from_secs(10), "a snapshot", || async {
        n.status().await["store"]["raft"]["last_snapshot_index"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    n.kill();
    // A host crash: the database is rebuilt from the snapshot, and the rebuild crashes too.
    std::fs::write(d.path.join("run.json"), r#"{"boot_id":"another-boot","clean":false}"#).unwrap();
    let mut restarting = Node::spawn_env(&d.path, &[], &[("FAILPOINTS", "replace-before-rename=panic")]);
    assert!(
        restarting.wait_exit(Duration::from_secs(10)).await,
        "the rebuild never reached the failpoint"
    );
    // The next start rebuilds again and finishes.
    n.kill_and_restart().await;
    assert_eq!(count_rows(&n).await.len(), 30);
}
