//! `-auth`: users and permissions on every endpoint, on a leader and on a follower that passes
//! requests on, and `-join-as`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{DataDir, Node};

/// Every permission has a user of its own (`u-<perm>`, password `pw-<perm>`); `root` has
/// `all`, `reader-writer` has `query` and `execute`, `joiner` joins; `*` may only check
/// readiness.
const USERS: &str = r#"[
    {"username": "root", "password": "rootpw", "perms": ["all"]},
    {"username": "u-execute", "password": "pw-execute", "perms": ["execute"]},
    {"username": "u-query", "password": "pw-query", "perms": ["query"]},
    {"username": "u-backup", "password": "pw-backup", "perms": ["backup"]},
    {"username": "u-load", "password": "pw-load", "perms": ["load"]},
    {"username": "u-snapshot", "password": "pw-snapshot", "perms": ["snapshot"]},
    {"username": "u-remove", "password": "pw-remove", "perms": ["remove"]},
    {"username": "u-status", "password": "pw-status", "perms": ["status"]},
    {"username": "u-leader-ops", "password": "pw-leader-ops", "perms": ["leader-ops"]},
    {"username": "u-ui", "password": "pw-ui", "perms": ["ui"]},
    {"username": "reader-writer", "password": "pw-rw", "perms": ["query", "execute"]},
    {"username": "joiner", "password": "pw-join", "perms": ["join"]},
    {"username": "replica", "password": "pw-replica", "perms": ["join-read-only"]},
    {"username": "*", "perms": ["ready"]}
]"#;

fn write_users(dir: &Path, json: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("users.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// One endpoint: method, path, body, and the user granted it (`None`: `*` is).
struct Case {
    method: reqwest::Method,
    path: &'static str,
    body: Vec<u8>,
    user: Option<(&'static str, &'static str)>,
}

fn case(
    method: &str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    user: Option<(&'static str, &'static str)>,
) -> Case {
    Case {
        method: method.parse().unwrap(),
        path,
        body: body.into(),
        user,
    }
}

/// A small SQLite database file's bytes.
fn sqlite_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES(1);").unwrap();
    drop(c);
    std::fs::read(path).unwrap()
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "POST",
            "/db/execute",
            r#"["INSERT INTO t VALUES(1)"]"#,
            Some(("u-execute", "pw-execute")),
        ),
        case(
            "POST",
            "/db/query",
            r#"["SELECT * FROM t"]"#,
            Some(("u-query", "pw-query")),
        ),
        case("GET", "/db/query?q=SELECT%201", "", Some(("u-query", "pw-query"))),
        case("GET", "/db/sql?q=SELECT%201", "", Some(("u-query", "pw-query"))),
        case(
            "POST",
            "/db/request",
            r#"["SELECT 1"]"#,
            Some(("reader-writer", "pw-rw")),
        ),
        case("GET", "/db/backup", "", Some(("u-backup", "pw-backup"))),
        // A SQLite file: a SQL dump is run as an execute, which a follower passes on as one.
        case("POST", "/db/load", sqlite_file(), Some(("u-load", "pw-load"))),
        case("POST", "/boot", "not a database", Some(("u-load", "pw-load"))),
        case("POST", "/snapshot", "", Some(("u-snapshot", "pw-snapshot"))),
        case("POST", "/reap", "", Some(("u-snapshot", "pw-snapshot"))),
        case(
            "DELETE",
            "/remove",
            r#"{"id": "not-a-member"}"#,
            Some(("u-remove", "pw-remove")),
        ),
        case("GET", "/status", "", Some(("u-status", "pw-status"))),
        case("GET", "/nodes", "", Some(("u-status", "pw-status"))),
        case("GET", "/debug/vars", "", Some(("u-status", "pw-status"))),
        case("GET", "/metrics", "", Some(("u-status", "pw-status"))),
        case("GET", "/leader", "", Some(("u-leader-ops", "pw-leader-ops"))),
        case("GET", "/console/", "", Some(("u-ui", "pw-ui"))),
        case("GET", "/readyz", "", None),
    ]
}

async fn send(node: &Node, c: &Case, user: Option<(&str, &str)>) -> (u16, String, bool) {
    let mut req = reqwest::Client::new()
        .request(c.method.clone(), node.url(c.path))
        .timeout(Duration::from_secs(10))
        .body(c.body.clone());
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    let challenged = r
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v == r#"Basic realm="rqlite""#);
    (r.status().as_u16(), r.text().await.unwrap(), challenged)
}

/// The matrix on one node: no credentials, a wrong password, a user without the permission,
/// and the user with it.
async fn check_matrix(node: &Node, role: &str) {
    for c in cases() {
        let what = format!("{role} {} {}", c.method, c.path);
        let Some((user, password)) = c.user else {
            // Everyone has it: no credentials needed.
            let (status, _, _) = send(node, &c, None).await;
            assert_ne!(status, 401, "{what} anonymous");
            continue;
        };
        let (status, body, challenged) = send(node, &c, None).await;
        assert_eq!((status, body.as_str()), (401, ""), "{what} without credentials");
        assert!(challenged, "{what}: no WWW-Authenticate");
        let (status, _, _) = send(node, &c, Some((user, "wrong"))).await;
        assert_eq!(status, 401, "{what} with a wrong password");
        let other = if user == "u-status" { "u-ui" } else { "u-status" };
        let other_pw = if user == "u-status" { "pw-ui" } else { "pw-status" };
        let (status, _, _) = send(node, &c, Some((other, other_pw))).await;
        assert_eq!(status, 401, "{what} as {other}");
        let (status, body, _) = send(node, &c, Some((user, password))).await;
        assert_ne!(status, 401, "{what} as {user}: {body}");
        let (status, body, _) = send(node, &c, Some(("root", "rootpw"))).await;
        assert_ne!(status, 401, "{what} as root: {body}");
    }
}

#[tokio::test]
async fn every_endpoint_checks_its_permission_on_the_leader_and_on_a_follower() {
    let dirs: Vec<DataDir> = (0..2).map(|_| DataDir::new()).collect();
    let users = write_users(&dirs[0].path.with_extension("auth"), USERS);
    let users = users.display().to_string();
    let leader = Node::spawn_in(&dirs[0].path, &["-node-id", "n0", "-auth", &users]);
    leader.wait_ready().await;
    let follower = Node::spawn_in(
        &dirs[1].path,
        &[
            "-node-id",
            "n1",
            "-auth",
            &users,
            "-join-as",
            "joiner",
            "-join",
            &leader.raft,
        ],
    );
    follower.wait_ready().await;
    let root = reqwest::Client::new();
    root.post(leader.url("/db/execute"))
        .basic_auth("root", Some("rootpw"))
        .body(r#"["CREATE TABLE t(x)"]"#)
        .send()
        .await
        .unwrap();
    check_matrix(&leader, "leader").await;
    check_matrix(&follower, "follower").await;

    // A write through the follower was passed to the leader with the client's credentials.
    let r = root
        .post(follower.url("/db/query?level=strong"))
        .basic_auth("u-query", Some("pw-query"))
        .body(r#"["SELECT COUNT(*) FROM t"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-rqlite-served-by"], leader.raft.as_str());

    // Counted as rqlite counts them.
    let as_root = |path: &'static str| {
        let url = leader.url(path);
        let root = root.clone();
        async move {
            let r = root.get(url).basic_auth("root", Some("rootpw")).send().await.unwrap();
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let vars = as_root("/debug/vars").await;
    assert!(vars["http"]["auth_fail"].as_i64().unwrap() > 0);
    assert!(vars["http"]["auth_ok"].as_i64().unwrap() > 0);
    assert_eq!(as_root("/status").await["http"]["auth"], "enabled");
}

#[tokio::test]
async fn the_leader_checks_forwarded_credentials_again() {
    // The follower's file knows mallory; the leader's does not.
    let dirs: Vec<DataDir> = (0..2).map(|_| DataDir::new()).collect();
    let leader_users = write_users(&dirs[0].path.with_extension("auth"), USERS);
    let with_mallory = USERS.replacen(
        "[",
        r#"[{"username": "mallory", "password": "m", "perms": ["all"]},"#,
        1,
    );
    let follower_users = write_users(&dirs[1].path.with_extension("auth"), &with_mallory);
    let leader = Node::spawn_in(
        &dirs[0].path,
        &["-node-id", "n0", "-auth", &leader_users.display().to_string()],
    );
    leader.wait_ready().await;
    let follower = Node::spawn_in(
        &dirs[1].path,
        &[
            "-node-id",
            "n1",
            "-auth",
            &follower_users.display().to_string(),
            "-join-as",
            "joiner",
            "-join",
            &leader.raft,
        ],
    );
    follower.wait_ready().await;
    let refused = [
        (
            "POST",
            "/db/execute",
            r#"["CREATE TABLE m(x)"]"#,
            "remote Execute not authorized",
        ),
        (
            "POST",
            "/db/query?level=strong",
            r#"["SELECT 1"]"#,
            "remote query not authorized",
        ),
        (
            "POST",
            "/db/request",
            r#"["SELECT 1"]"#,
            "remote Request not authorized",
        ),
        ("GET", "/db/backup", "", "remote backup not authorized"),
        ("POST", "/db/load", "CREATE TABLE m(x);", "remote load not authorized"),
    ];
    for (method, path, body, message) in refused {
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), follower.url(path))
            .basic_auth("mallory", Some("m"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        assert_eq!(r.text().await.unwrap(), format!("{message}\n"), "{method} {path}");
    }
    // Someone both files know goes through.
    let r = reqwest::Client::new()
        .post(follower.url("/db/execute"))
        .basic_auth("u-execute", Some("pw-execute"))
        .body(r#"["CREATE TABLE ok(x)"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("error"));
}

/// Starts a node `id` that joins `leader` with `-join-as user`; whether it became a member
/// (else it gave up, and its log says it was not authorized).
async fn joins_as(leader: &Node, id: &str, users: &Path, user: &str, extra: &[&str]) -> bool {
    let d = DataDir::new();
    let users = users.display().to_string();
    let mut args = vec![
        "-node-id",
        id,
        "-auth",
        &users,
        "-join-as",
        user,
        "-join",
        &leader.raft,
        "-join-attempts",
        "2",
        "-join-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    let mut node = Node::spawn_in(&d.path, &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if node.wait_exit(Duration::from_millis(100)).await {
            let log = std::fs::read_to_string(d.path.with_extension("log")).unwrap_or_default();
            assert!(log.contains("unauthorized"), "{log}");
            return false;
        }
        let nodes = reqwest::Client::new()
            .get(leader.url("/nodes?nonvoters"))
            .basic_auth("root", Some("rootpw"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if nodes.contains(&format!("\"{id}\"")) {
            return true;
        }
    }
    panic!("{id} neither joined nor gave up");
}

#[tokio::test]
async fn joining_needs_the_join_permission_and_a_read_replica_join_read_only() {
    let d = DataDir::new();
    let users = write_users(&d.path.with_extension("auth"), USERS);
    let leader = Node::spawn_in(&d.path, &["-auth", &users.display().to_string()]);
    leader.wait_ready().await;
    assert!(!joins_as(&leader, "a", &users, "u-query", &[]).await);
    assert!(!joins_as(&leader, "b", &users, "nobody", &[]).await);
    assert!(!joins_as(&leader, "c", &users, "replica", &[]).await);
    assert!(joins_as(&leader, "d", &users, "replica", &["-raft-non-voter"]).await);
    assert!(joins_as(&leader, "e", &users, "joiner", &[]).await);
}

#[test]
fn an_auth_file_that_does_not_load_stops_the_node() {
    let d = DataDir::new();
    let bad = write_users(&d.path.with_extension("auth"), r#"[{"username": 7}]"#);
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["-http-addr", "127.0.0.1:0", "-raft-addr", "127.0.0.1:0"])
        .args(["-auth", &bad.display().to_string()])
        .arg(&d.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to load credential store") && stderr.contains("username must be a string"),
        "{stderr}"
    );
}
