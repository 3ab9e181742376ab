//! The command line behaves as rqlited's: Go flag rules, exit codes, usage on stderr.

use std::process::Command;

use crate::harness::{BIN, DataDir, Node};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().expect("run rqlited");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn flags_version_and_usage() {
    let (code, err) = run(&["-version"]);
    assert_eq!(code, Some(0));
    assert!(err.starts_with("rqlited v10."), "{err}");

    let (code, err) = run(&["-h"]);
    assert_eq!(code, Some(0));
    assert!(err.contains("Usage: rqlited [flags] <data directory>"), "{err}");
    assert!(err.contains("  -raft-snap uint\n"), "{err}");

    let (code, err) = run(&["-no-such-flag", "/tmp/x"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("flag provided but not defined: -no-such-flag\n"),
        "{err}"
    );

    let (code, err) = run(&["-fk=maybe", "/tmp/x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid boolean value \"maybe\" for -fk"), "{err}");

    let (code, err) = run(&["-fk"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("data directory path is required"), "{err}");
}

#[tokio::test]
async fn foreign_keys_follow_the_flag() {
    let d = DataDir::new();
    let n = Node::start_in(&d.path, &["-fk"]).await;
    assert!(n.query("", r#"["PRAGMA foreign_keys"]"#).await.contains("[[1]]"));
    let st = n.status().await;
    assert_eq!(st["store"]["sqlite3"]["pragmas"]["rw"]["foreign_keys"], "1");
    n.execute(r#"["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(pid INTEGER REFERENCES p(id))"]"#)
        .await;
    assert_eq!(
        n.execute(r#"["INSERT INTO c VALUES(7)"]"#).await,
        r#"{"results":[{"error":"FOREIGN KEY constraint failed"}]}"#
    );
}

#[tokio::test]
async fn a_bootstrapped_node_refuses_to_join_another_cluster() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &[]).await;
    n.terminate();
    // Same addresses, so the same identity (the node id defaults to the Raft address).
    let mut child = Command::new(BIN)
        .args(["-http-addr", &n.http, "-raft-addr", &n.raft, "-join", "127.0.0.1:1"])
        .arg(&d.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    // It must exit on its own, promptly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a bootstrapped node started with -join did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("joining other clusters not supported"), "{err}");
}
