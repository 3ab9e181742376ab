//! The user's database holds only the user's objects: no table of the node's own in schema
//! listings, dumps or backups. What the node must know about the file (which log entries it
//! holds) lives beside it, and a restart neither replays nor skips an entry.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::{DataDir, Node, acknowledged, single};

/// Rows of a query as JSON arrays.
async fn rows(n: &Node, sql: &str) -> Vec<serde_json::Value> {
    let body = n.query("?level=none", &serde_json::to_string(&[sql]).unwrap()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["results"][0]["values"].as_array().cloned().unwrap_or_default()
}

/// `(type, name)` of every object in the schema of the SQLite file at `path`.
fn schema_of_file(path: &Path) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    assert_eq!(
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .unwrap(),
        "ok"
    );
    let mut st = c.prepare("SELECT type, name FROM sqlite_master ORDER BY name").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Whether `bytes` contain `needle` anywhere.
fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_database_holds_only_the_users_objects() {
    let (d, mut n) = single().await;
    n.execute(
        r#"["CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT)",
            "CREATE INDEX person_name ON person(name)",
            "CREATE VIEW names AS SELECT name FROM person",
            "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)",
            "CREATE TRIGGER person_audit AFTER INSERT ON person BEGIN INSERT INTO audit(what) VALUES(new.name); END",
            "INSERT INTO person(name) VALUES('fiona')",
            "INSERT INTO person(name) VALUES('declan')"]"#,
    )
    .await;
    let expected = owned(&[
        ("table", "audit"),
        ("view", "names"),
        ("table", "person"),
        ("trigger", "person_audit"),
        ("index", "person_name"),
        ("table", "sqlite_sequence"),
    ]);

    // Phase 1: schema listings through the API show the user's objects and SQLite's own only.
    let listed: Vec<(String, String)> = rows(&n, "SELECT type, name FROM sqlite_master ORDER BY name")
        .await
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, expected);
    let tables: Vec<String> = rows(&n, "SELECT name FROM pragma_table_list WHERE schema = 'main'")
        .await
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert!(
        tables
            .iter()
            .all(|t| ["audit", "names", "person", "sqlite_sequence", "sqlite_schema"].contains(&t.as_str())),
        "{tables:?}"
    );

    // Phase 2: backups in both binary forms are plain SQLite files of the user's objects.
    for fmt in ["binary", "delete"] {
        let bytes = reqwest::get(n.url(&format!("/db/backup?fmt={fmt}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(!contains(&bytes, b"rqlite"), "{fmt} backup carries the node's own data");
        let f = d.path.with_extension(format!("backup-{fmt}.sqlite"));
        std::fs::write(&f, &bytes).unwrap();
        assert_eq!(schema_of_file(&f), expected, "{fmt} backup");
    }
    let dump = reqwest::get(n.url("/db/backup?fmt=sql"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!dump.contains("rqlite"), "{dump}");

    // Phase 3: the node's own file, after a snapshot and a clean stop, is the same.
    assert_eq!(n.post("/snapshot", "").await.0, 200);
    assert!(n.terminate().is_some_and(|s| s.success()));
    let file = std::fs::read(d.path.join("db.sqlite")).unwrap();
    assert!(!contains(&file, b"rqlite"));
    assert_eq!(schema_of_file(&d.path.join("db.sqlite")), expected);

    // Phase 4: a client that drops every table it lists (as DB-API drivers do to reset a
    // database) meets no table it may not drop.
    n.kill_and_restart().await;
    for t in rows(
        &n,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .await
    {
        let drop = serde_json::to_string(&[format!("DROP TABLE {}", t[0].as_str().unwrap())]).unwrap();
        assert!(!n.execute(&drop).await.contains("error"));
    }
    assert!(
        rows(
            &n,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        .await
        .is_empty()
    );
}

/// The value of the counter row.
async fn counter(n: &Node) -> u64 {
    rows(n, "SELECT n FROM k WHERE id = 1").await[0][0].as_u64().unwrap()
}

#[tokio::test]
async fn a_restart_neither_replays_nor_skips_an_entry() {
    let d = DataDir::new();
    // Frequent checkpoints and snapshots, so kills land between every kind of step.
    let mut n = Node::start_in(
        &d.path,
        &[
            "-raft-snap",
            "40",
            "-raft-snap-int",
            "100ms",
            "-raft-snap-wal-size",
            "32768",
        ],
    )
    .await;
    n.execute(r#"["CREATE TABLE k(id INTEGER PRIMARY KEY, n INTEGER)", "INSERT INTO k VALUES(1, 0)"]"#)
        .await;
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut recorded_at_kill = 0;
    for round in 0..4u64 {
        // Phase 1: clients increment the counter flat out; the node is killed under them.
        let mut clients = Vec::new();
        for _ in 0..4 {
            let url = n.url("/db/execute");
            let (sent, acked) = (sent.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !acknowledged(&client, &url, r#"["UPDATE k SET n = n + 1 WHERE id = 1"]"#.into()).await {
                        break;
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500 + round * 200)).await;
        // On a loaded machine the WAL may take a while to reach the checkpoint size: wait (a
        // bounded time, writes going on) until the file's record is past its creation.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline && !recorded_past_creation(&d.path) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.kill();
        for c in clients {
            c.await.unwrap();
        }
        // A kill may land inside a checkpoint, when the file has no record.
        recorded_at_kill += usize::from(recorded_past_creation(&d.path));

        // Phase 2: after the restart the counter counts every acknowledged increment once,
        // and no more increments than were sent.
        n.kill_and_restart().await;
        let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
        let got = counter(&n).await;
        assert!(
            acked <= got && got <= sent,
            "round {round}: counter {got}, acknowledged {acked}, sent {sent}"
        );
    }
    // Kills found the file recorded past its creation: restarts took the path that discards
    // the WAL and replays the log after the recorded state.
    assert!(recorded_at_kill > 0);

    // Phase 3: a clean stop and start change nothing.
    let before = counter(&n).await;
    assert!(n.terminate().is_some_and(|s| s.success()));
    n.kill_and_restart().await;
    assert_eq!(counter(&n).await, before);
    assert_eq!(
        rows(&n, "PRAGMA integrity_check").await,
        vec![serde_json::json!(["ok"])]
    );
}

/// A data directory written by the previous format (state table inside the database), made
/// by that build: a node with `-raft-snap 20` that took 73 entries (a snapshot at index 68,
/// the log purged behind it, the rest in the WAL) and was then killed with SIGKILL. Table `t`
/// holds rows "row 1" to "row 70" and `n` a counter bumped with each, at 70.
const LEGACY_DIR: &str = "tests/it/fixtures/legacy-data-dir.tar.gz";
/// The node id (its Raft address then) the directory was written under.
const LEGACY_NODE_ID: &str = "127.0.0.1:38965";

/// Unpacks the legacy directory and marks its last run as one of this host's boot (`same_boot`)
/// or another's: the database is trusted only after a restart of the process, not of the host.
fn unpack_legacy(same_boot: bool) -> DataDir {
    let d = DataDir::new();
    let parent = d.path.parent().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(LEGACY_DIR);
    let ok = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(parent)
        .status()
        .unwrap()
        .success();
    assert!(ok, "unpacking {}", fixture.display());
    let boot = if same_boot {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap()
    } else {
        "another-boot".into()
    };
    let run = serde_json::json!({"boot_id": boot.trim(), "clean": false});
    std::fs::write(d.path.join("run.json"), run.to_string()).unwrap();
    d
}

/// Starts a node on the legacy directory. Its membership names the Raft address it was
/// written under, not this one's, so it is its own leader without being reachable there: it
/// is ready once it serves, leader check aside.
async fn start_legacy(d: &DataDir) -> Node {
    let n = Node::spawn_in(&d.path, &["-node-id", LEGACY_NODE_ID]);
    serving(&n).await;
    n
}

async fn serving(n: &Node) {
    n.wait_for(Duration::from_secs(30), "the node to serve", || async {
        let leader = async {
            let status: serde_json::Value = reqwest::get(n.url("/status")).await.ok()?.json().await.ok()?;
            Some(status["store"]["raft"]["state"] == "Leader")
        };
        leader.await == Some(true)
    })
    .await;
}

async fn assert_legacy_rows(n: &Node) {
    assert_eq!(
        rows(
            n,
            "SELECT count(*), count(DISTINCT v), min(id), max(id), (SELECT c FROM n) FROM t"
        )
        .await,
        vec![serde_json::json!([70, 70, 1, 70, 70])]
    );
    let listed = rows(n, "SELECT name FROM sqlite_master ORDER BY name").await;
    assert_eq!(
        listed,
        vec![
            serde_json::json!(["n"]),
            serde_json::json!(["sqlite_autoindex_n_1"]),
            serde_json::json!(["t"])
        ]
    );
}

#[tokio::test]
async fn a_data_directory_of_the_previous_format_is_migrated_in_place() {
    let d = unpack_legacy(true);
    let mut n = start_legacy(&d).await;
    assert_legacy_rows(&n).await;
    // The database was kept (its state moved out of it), not rebuilt from the snapshot.
    let store = &n.expvar().await["store"];
    assert_eq!(store["num_restores_start"], 0, "{store}");
    assert_eq!(store["num_restores_start_skipped"], 1, "{store}");

    // The node goes on from there, and the file holds nothing of the old table.
    n.execute(r#"["INSERT INTO t(v) VALUES('row 71')"]"#).await;
    n.kill_and_respawn();
    serving(&n).await;
    assert_eq!(rows(&n, "SELECT count(*) FROM t").await, vec![serde_json::json!([71])]);
    assert!(n.terminate().is_some_and(|s| s.success()));
    assert!(!contains(&std::fs::read(d.path.join("db.sqlite")).unwrap(), b"rqlite"));
}

#[tokio::test]
async fn a_snapshot_of_the_previous_format_restores_without_its_state_table() {
    // After a host restart the old database is not trusted: it is rebuilt from the old
    // snapshot, which carries the state table, and the log after it.
    let d = unpack_legacy(false);
    let mut n = start_legacy(&d).await;
    assert_legacy_rows(&n).await;
    assert_eq!(n.expvar().await["store"]["num_restores_start"], 1);
    assert!(n.terminate().is_some_and(|s| s.success()));
    assert!(!contains(&std::fs::read(d.path.join("db.sqlite")).unwrap(), b"rqlite"));
}

/// Whether the data directory's state record names a state past the database's creation.
fn recorded_past_creation(dir: &Path) -> bool {
    std::fs::read(dir.join("db.sqlite.state"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|r| r["state"].as_array().is_some_and(|s| !s.is_empty()))
}
