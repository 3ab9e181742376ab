//! Data directories written by rqlite, opened in place: converted into this node's layout,
//! crash-safely, with rqlite's files kept aside. The directories are built here from rqlite's
//! documented formats (BoltDB `raft.db`, protobuf commands, v10 `wsnapshots/` with CRC-32C
//! sidecars).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rq_upgrade::raft_db::{Server, Suffrage};
use rq_upgrade::testing::{configuration_bytes, crc_sidecar, execute_command, log_bytes, snapshot_meta, write_bolt};
use serde_json::Value;

use crate::harness::{DataDir, Node, free_port, free_ports, refused_start};

/// Rows 1..=ROWS: `(i, "row i")`.
const ROWS: i64 = 14;

fn insert(i: i64) -> String {
    format!("INSERT INTO foo(name) VALUES('row {i}')")
}

const CREATE: &str = "CREATE TABLE foo(id INTEGER PRIMARY KEY, name TEXT)";

/// The entries' statements, by index (2 is a no-op, 1 the configuration, 12 a barrier).
fn commands() -> Vec<(u64, u64, Vec<String>)> {
    let mut out = vec![(3, 2, vec![CREATE.to_string()])];
    // Rows 1..=8 at indexes 4..=11 in term 2.
    for i in 1..=8 {
        out.push((3 + i as u64, 2, vec![insert(i)]));
    }
    // Rows 9..=12 at 13..=16, then 13 and 14 together at 17, in term 3.
    for i in 9..=12 {
        out.push((4 + i as u64, 3, vec![insert(i)]));
    }
    out.push((17, 3, vec![insert(13), insert(14)]));
    out
}

fn servers(ports: &[u16]) -> Vec<Server> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| Server {
            suffrage: Suffrage::Voter,
            id: (i + 1).to_string(),
            address: format!("127.0.0.1:{p}"),
        })
        .collect()
}

/// A WAL-mode database after `upto` of the commands, and the WAL that the next `more` write.
fn database_and_wal(scratch: &Path, upto: usize, more: usize) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(scratch).unwrap();
    let db = scratch.join("live.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;")
        .unwrap();
    let cmds = commands();
    for (_, _, sqls) in &cmds[..upto] {
        for s in sqls {
            c.execute_batch(s).unwrap();
        }
    }
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    let base = scratch.join("base.db");
    std::fs::copy(&db, &base).unwrap();
    for (_, _, sqls) in &cmds[upto..upto + more] {
        for s in sqls {
            c.execute_batch(s).unwrap();
        }
    }
    let wal = scratch.join("frames.wal");
    std::fs::copy(format!("{}-wal", db.display()), &wal).unwrap();
    (base, wal)
}

/// Writes the directory an rqlite v10 node would have after the commands above: `raft.db`
/// holding entries 1..=17 and the vote, and, with `snapshot`, `wsnapshots/` holding a full
/// snapshot at index 8 (rows 1..=5) and an incremental one at index 11 (rows 6..=8).
fn rqlite_v10_dir(dir: &Path, servers: &[Server], snapshot: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut logs = vec![
        (
            1u64.to_be_bytes().to_vec(),
            log_bytes(1, 1, 5, Some(&configuration_bytes(servers))),
        ),
        (2u64.to_be_bytes().to_vec(), log_bytes(2, 2, 1, None)),
        (12u64.to_be_bytes().to_vec(), log_bytes(12, 3, 4, None)),
    ];
    for (index, term, sqls) in commands() {
        let sqls: Vec<&str> = sqls.iter().map(String::as_str).collect();
        let data = execute_command(&sqls, index % 2 == 0);
        logs.push((index.to_be_bytes().to_vec(), log_bytes(index, term, 0, Some(&data))));
    }
    logs.sort();
    let conf = vec![
        (b"CurrentTerm".to_vec(), 3u64.to_be_bytes().to_vec()),
        (b"LastVoteCand".to_vec(), servers[0].address.as_bytes().to_vec()),
        (b"LastVoteTerm".to_vec(), 3u64.to_be_bytes().to_vec()),
    ];
    write_bolt(&dir.join("raft.db"), &[(b"conf", conf, true), (b"logs", logs, false)]);
    if snapshot {
        // Index 8 is after the CREATE and rows 1..=5 (commands 0..6); 11 after rows 6..=8.
        let (base, wal) = database_and_wal(&dir.with_extension("scratch"), 6, 3);
        let root = dir.join("wsnapshots");
        snapshot_meta(&root, "2-8-1000", 8, 2, servers, 1);
        std::fs::copy(&base, root.join("2-8-1000/data.db")).unwrap();
        crc_sidecar(&root.join("2-8-1000/data.db"));
        snapshot_meta(&root, "2-11-2000", 11, 2, servers, 1);
        let w = root.join("2-11-2000/00000000000000000001.wal");
        std::fs::copy(&wal, &w).unwrap();
        crc_sidecar(&w);
    }
    // What rqlite v10 leaves beside them; never read.
    std::fs::write(dir.join("db.sqlite"), b"stale").unwrap();
    std::fs::write(dir.join("clean_snapshot"), b"{}").unwrap();
}

fn expected_rows(n: i64) -> Value {
    Value::Array((1..=n).map(|i| serde_json::json!([i, format!("row {i}")])).collect())
}

async fn rows(n: &Node) -> Value {
    let body = n
        .query("?level=none", r#"["SELECT id, name FROM foo ORDER BY id"]"#)
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["results"][0]["values"].clone()
}

async fn wait_rows(n: &Node, want: i64) {
    let expected = expected_rows(want);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = rows(n).await;
        if got == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {}: {got} is not rows 1..={want}",
            n.http
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Checks that `dir` is in this node's layout with rqlite's files in the backup (named for
/// v10 when rqlite's snapshots say so, and for any release when there were none).
fn is_converted(dir: &Path, snapshot: bool) {
    let have = names(dir);
    for gone in [
        "raft.db",
        "wsnapshots",
        "clean_snapshot",
        "rqlite-upgrade.plan",
        "rqlite-upgrade.tmp",
    ] {
        assert!(!have.iter().any(|n| n == gone), "{gone} is still in {have:?}");
    }
    assert!(have.iter().any(|n| n == "raft-log"), "{have:?}");
    let backup = names(&dir.join(if snapshot {
        "rqlite-v10-backup"
    } else {
        "rqlite-v7-10-backup"
    }));
    let mut kept = vec!["raft.db", "db.sqlite", "clean_snapshot"];
    if snapshot {
        kept.push("wsnapshots");
    }
    for kept in kept {
        assert!(
            backup.iter().any(|n| n == kept),
            "{kept} is not in the backup: {backup:?}"
        );
    }
}

#[tokio::test]
async fn a_v10_directory_is_converted_and_checked_row_by_row() {
    let d = DataDir::new();
    let raft = format!("127.0.0.1:{}", free_port());
    let port: u16 = raft.rsplit(':').next().unwrap().parse().unwrap();
    rqlite_v10_dir(&d.path, &servers(&[port]), true);
    let mut n = Node::spawn_fixed(&d.path, &raft, &["-node-id", "1"]);
    n.wait_ready().await;
    // The snapshot (rows 1..=8) and the log after it (rows 9..=14): each row exactly once.
    wait_rows(&n, ROWS).await;
    assert_eq!(n.expvar().await["snapshot"]["upgrade_ok"], 0);
    is_converted(&d.path, true);
    let status = n.status().await;
    assert_eq!(status["store"]["node_id"], "1", "{status}");

    // It is this node's directory now: writes, restarts, and the backup stays until asked.
    n.execute(r#"["INSERT INTO foo(name) VALUES('row 15')"]"#).await;
    n.kill_and_restart().await;
    wait_rows(&n, ROWS + 1).await;
    is_converted(&d.path, true);
    n.kill();
    let n = Node::spawn_fixed(&d.path, &raft, &["-node-id", "1", "-remove-rqlite-backup"]);
    n.wait_ready().await;
    wait_rows(&n, ROWS + 1).await;
    assert!(!names(&d.path).iter().any(|x| x.starts_with("rqlite-v")));
}

#[tokio::test]
async fn three_converted_nodes_form_the_same_cluster() {
    let ports = free_ports::<3>();
    let members = servers(&ports);
    let dirs: Vec<DataDir> = (0..3).map(|_| DataDir::new()).collect();
    // Only the first had taken a snapshot; the others hold the whole log.
    for (i, d) in dirs.iter().enumerate() {
        rqlite_v10_dir(&d.path, &members, i == 0);
    }
    let nodes: Vec<Node> = dirs
        .iter()
        .zip(&members)
        .map(|(d, s)| Node::spawn_fixed(&d.path, &s.address, &["-node-id", &s.id]))
        .collect();
    for n in &nodes {
        n.wait_ready().await;
        wait_rows(n, ROWS).await;
    }
    let mut leader = None;
    for _ in 0..200 {
        for (i, n) in nodes.iter().enumerate() {
            if n.get("/status?key=store.raft.state").await.1 == "\"Leader\"" {
                leader = Some(i);
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = &nodes[leader.expect("a leader")];
    let (_, body) = l.get("/nodes").await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    let mut ids: Vec<String> = listed.as_object().unwrap().keys().cloned().collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "3"], "{listed}");
    for id in ["1", "2", "3"] {
        assert_eq!(listed[id]["reachable"], true, "{listed}");
        assert_eq!(listed[id]["voter"], true, "{listed}");
    }
    l.execute(r#"["INSERT INTO foo(name) VALUES('row 15')"]"#).await;
    for n in &nodes {
        wait_rows(n, ROWS + 1).await;
    }
    for (i, d) in dirs.iter().enumerate() {
        is_converted(&d.path, i == 0);
    }
}

#[tokio::test]
async fn a_conversion_cut_short_at_any_step_finishes_at_the_next_start() {
    // Where the process dies, and whether rqlite's raft.db is still in place after it.
    let cases = [
        ("snapshot-before-sidecar=panic", true),
        ("upgrade-staged=panic", true),
        ("upgrade-planned=panic", true),
        ("upgrade-rename=panic", true),
        ("upgrade-rename=2*off->panic", false),
        ("upgrade-rename=5*off->panic", false),
        ("upgrade-renamed=panic", false),
    ];
    for (fp, raft_db_stays) in cases {
        let d = DataDir::new();
        let raft = format!("127.0.0.1:{}", free_port());
        let port: u16 = raft.rsplit(':').next().unwrap().parse().unwrap();
        rqlite_v10_dir(&d.path, &servers(&[port]), true);
        let mut n = Node::spawn_env(&d.path, &["-node-id", "1"], &[("FAILPOINTS", fp)]);
        let status = n.wait_exit_status(Duration::from_secs(20)).await;
        assert!(status.is_some_and(|s| !s.success()), "{fp}: the node did not stop");
        assert_eq!(
            d.path.join("raft.db").exists(),
            raft_db_stays,
            "{fp}: {:?}",
            names(&d.path)
        );
        let n = Node::spawn_fixed(&d.path, &raft, &["-node-id", "1"]);
        n.wait_ready().await;
        wait_rows(&n, ROWS).await;
        is_converted(&d.path, true);
    }
}

#[tokio::test]
async fn a_directory_that_cannot_be_read_is_refused_and_left_untouched() {
    // A command of a type rqlite never wrote.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(dir.join("rsnapshots")).unwrap();
    let one = servers(&[4002]);
    let logs = vec![
        (
            1u64.to_be_bytes().to_vec(),
            log_bytes(1, 1, 5, Some(&configuration_bytes(&one))),
        ),
        (2u64.to_be_bytes().to_vec(), log_bytes(2, 2, 0, Some(b"\x08\x03"))),
        (3u64.to_be_bytes().to_vec(), log_bytes(3, 2, 0, Some(b"\x08\x09"))),
    ];
    let conf = vec![(b"CurrentTerm".to_vec(), 2u64.to_be_bytes().to_vec())];
    write_bolt(&dir.join("raft.db"), &[(b"conf", conf, true), (b"logs", logs, false)]);
    let before = tree(&dir);
    let err = refused_start(&[], &dir);
    assert!(err.contains("log entry 3: unknown command type 9"), "{err}");
    assert!(
        err.contains("rqlite v8 or v9 (rsnapshots/), Raft term 2, 3 log entries (1..3, 2 commands, 1 of them not understood), no snapshot"),
        "{err}"
    );
    assert_eq!(tree(&dir), before);
    assert_eq!(names(&dir), ["raft.db", "rsnapshots"]);

    // A v10 snapshot whose WAL does not match its checksum.
    let d = DataDir::new();
    rqlite_v10_dir(&d.path, &servers(&[4002]), true);
    let wal = d.path.join("wsnapshots/2-11-2000/00000000000000000001.wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&wal, bytes).unwrap();
    let before = tree(&d.path);
    let err = refused_start(&[], &d.path);
    assert!(err.contains("does not match its checksum"), "{err}");
    assert_eq!(tree(&d.path), before);

    // A raft.db that is not a BoltDB file.
    let d = DataDir::new();
    std::fs::create_dir_all(&d.path).unwrap();
    std::fs::write(d.path.join("raft.db"), vec![7u8; 8192]).unwrap();
    let before = tree(&d.path);
    let err = refused_start(&[], &d.path);
    assert!(err.contains("raft.db"), "{err}");
    assert_eq!(tree(&d.path), before);
}
