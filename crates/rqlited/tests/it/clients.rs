//! rqlite's own client libraries against a node, and against followers of a cluster, which
//! pass on to the leader what needs it: pyrqlite and SQLAlchemy (sqlalchemy-rqlite) from PyPI,
//! and rqlite-js from the npm registry, as `scripts/test.sh` installs them. Each
//! runs a script of `fixtures/clients/` that checks what the client returns and ends by
//! printing `ok`; the scripts pass against rqlite v8.26.8 too, but for the check of a kept
//! `SELECT *` after its table is made again, where rqlite v8 answers with the old columns.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::harness::{Node, leader_index, single, test_node_modules, test_venv, three_nodes};

/// Longest a client script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/clients")
        .join(name)
}

/// Runs `cmd` to its end and checks it succeeded and printed `ok` last.
async fn passes(mut cmd: Command, what: &str) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} ran past {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("start {what} ({e}); scripts/test.sh installs it"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ok"),
        "{what}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// pyrqlite and SQLAlchemy against `node`.
async fn python_clients(node: &Node) {
    let (host, port) = node.http.rsplit_once(':').unwrap();
    let mut cmd = Command::new(test_venv().join("bin/python"));
    cmd.arg(script("python_clients.py"))
        .env("RQ_HOST", host)
        .env("RQ_PORT", port);
    passes(cmd, "python_clients.py").await;
}

/// rqlite-js against `node`.
async fn rqlite_js(node: &Node) {
    let mut cmd = Command::new("node");
    cmd.arg(script("rqlite_js_client.cjs"))
        .env("RQ_URL", node.url(""))
        .env("NODE_PATH", test_node_modules());
    passes(cmd, "rqlite_js_client.cjs").await;
}

#[tokio::test]
async fn pyrqlite_and_sqlalchemy_read_and_write_through_the_node() {
    let (_d, node) = single().await;
    python_clients(&node).await;
}

#[tokio::test]
async fn rqlite_js_reads_writes_and_backs_up_through_the_node() {
    let (_d, node) = single().await;
    rqlite_js(&node).await;
}

#[tokio::test]
async fn the_clients_work_through_followers() {
    let (_d, nodes) = three_nodes(&[]).await;
    let leader = leader_index(&nodes).await;
    let mut followers = nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| n);
    python_clients(followers.next().unwrap()).await;
    rqlite_js(followers.next().unwrap()).await;
}
