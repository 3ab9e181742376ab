//! HTTPS on the API and TLS between nodes, with certificates made by the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rq_net::KeyPair;
use rq_net::testing::Ca;

use crate::harness::{BIN, DataDir, Node};

/// A CA in a directory of its own, and certificates issued into it.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_path: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(name);
        let ca_path = ca.write(dir.path(), "ca.pem");
        Pki { dir, ca, ca_path }
    }

    /// A certificate for 127.0.0.1 with common name `cn`, written as `file.crt`/`file.key`.
    fn issue(&self, cn: &str, file: &str) -> KeyPair {
        self.ca
            .issue(cn, &["127.0.0.1", "localhost"])
            .write(self.dir.path(), file)
    }
}

fn client_config(ca: &Path, pair: Option<KeyPair>) -> Arc<rq_net::rustls::ClientConfig> {
    rq_net::client_config(&rq_net::ClientOptions {
        ca: Some(ca.to_path_buf()),
        pair,
        ..Default::default()
    })
    .unwrap()
}

/// An HTTPS client trusting `ca`, showing `pair` if the server asks for a certificate.
fn https_client(ca: &Path, pair: Option<KeyPair>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*client_config(ca, pair)).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The common name on the certificate a fresh TLS connection to `addr` is shown.
async fn served_common_name(addr: &str, ca: &Path) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = rq_net::TlsConnector::from(client_config(ca, None));
    let name = rq_net::server_name_of(addr).unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    rq_net::common_name(&certs[0]).unwrap()
}

fn pair_args(side: &str, pair: &KeyPair) -> Vec<String> {
    vec![
        format!("-{side}-cert"),
        pair.cert.display().to_string(),
        format!("-{side}-key"),
        pair.key.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn https_api_answers_only_in_tls_advertises_https_and_reloads_its_certificate() {
    let pki = Pki::new("api CA");
    let pair = pki.issue("api-1", "api");
    let d = DataDir::new();
    let args = pair_args("http", &pair);
    let node = Node::spawn_in(&d.path, &strs(&args)).over_https(https_client(&pki.ca_path, None));
    node.wait_ready().await;
    node.execute(r#"["CREATE TABLE t(v TEXT)", "INSERT INTO t VALUES('x')"]"#)
        .await;
    assert!(node.query("", r#"["SELECT * FROM t"]"#).await.contains(r#"[["x"]]"#));

    // What the node tells others about itself names https.
    let (_, nodes) = node.get("/nodes").await;
    assert!(nodes.contains(&format!("\"https://{}\"", node.http)), "{nodes}");
    let status = node.status().await;
    assert_eq!(status["cluster"]["https"], "true");
    assert_eq!(status["cluster"]["api_addr"], node.http.as_str());

    // Nothing answers in plain text.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/status", node.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // HTTP/2 when the client offers it.
    let mut h2 = (*client_config(&pki.ca_path, None)).clone();
    h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(h2)
        .build()
        .unwrap();
    let r = h2.get(node.url("/readyz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);

    // A new certificate in the same files is served from the next handshake; a connection
    // made before keeps working.
    let kept = https_client(&pki.ca_path, None);
    assert_eq!(kept.get(node.url("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(served_common_name(&node.http, &pki.ca_path).await, "api-1");
    tokio::time::sleep(Duration::from_millis(20)).await;
    pki.ca
        .issue("api-1-renewed", &["127.0.0.1"])
        .write(pki.dir.path(), "api");
    assert_eq!(served_common_name(&node.http, &pki.ca_path).await, "api-1-renewed");
    assert_eq!(kept.get(node.url("/readyz")).send().await.unwrap().status(), 200);
    assert!(node.query("", r#"["SELECT * FROM t"]"#).await.contains(r#"[["x"]]"#));
}

#[tokio::test]
async fn mutual_tls_on_the_api_needs_a_client_certificate_from_the_ca_with_the_common_name() {
    let pki = Pki::new("api CA");
    let d = DataDir::new();
    let mut args = pair_args("http", &pki.issue("api-1", "api"));
    args.extend(
        [
            "-http-verify-client",
            "-http-ca-cert",
            &pki.ca_path.display().to_string(),
            "-http-verify-common-name",
            "client-1",
        ]
        .map(String::from),
    );
    let good = https_client(&pki.ca_path, Some(pki.issue("client-1", "client-1")));
    let node = Node::spawn_in(&d.path, &strs(&args)).over_https(good.clone());
    node.wait_ready().await;
    let url = node.url("/db/query?q=SELECT%201");
    assert_eq!(good.get(&url).send().await.unwrap().status(), 200);

    let stranger = Pki::new("another CA");
    let refused = [
        ("no certificate", https_client(&pki.ca_path, None)),
        (
            "another common name",
            https_client(&pki.ca_path, Some(pki.issue("client-2", "client-2"))),
        ),
        (
            "another CA",
            https_client(&pki.ca_path, Some(stranger.issue("client-1", "client-1"))),
        ),
    ];
    for (what, client) in refused {
        let r = client.get(&url).send().await;
        assert!(r.is_err(), "{what}: answered {r:?}");
    }
    assert_eq!(good.get(&url).send().await.unwrap().status(), 200);
}

/// Runs rqlited with `args` and a fresh directory; its exit code and standard error.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let d = DataDir::new();
    let out = Command::new(BIN)
        .args(["-http-addr", "127.0.0.1:0", "-raft-addr", "127.0.0.1:0"])
        .args(args)
        .arg(&d.path)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn tls_flags_that_do_not_go_together_or_do_not_load_stop_the_node() {
    let pki = Pki::new("CA");
    let pair = pki.issue("n", "n");
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let missing = pki.dir.path().join("missing.crt").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-http-cert", &cert],
            "either both -http-cert and -http-key must be set, or neither",
        ),
        (
            vec!["-node-key", &key],
            "either both -node-cert and -node-key must be set, or neither",
        ),
        (
            vec!["-http-cert", &cert, "-http-key", &key, "-http-verify-common-name", "x"],
            "-http-verify-common-name requires -http-verify-client",
        ),
        (
            vec!["-node-cert", &cert, "-node-key", &key, "-node-verify-common-name", "x"],
            "-node-verify-common-name requires -node-verify-client",
        ),
        (vec!["-http-cert", &missing, "-http-key", &key], "missing.crt"),
        (vec!["-node-cert", &key, "-node-key", &key], "no PEM certificate"),
    ];
    for (args, message) in cases {
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// Node-to-node TLS flags for a node with certificate `pair`, verifying peers against `ca`
/// and requiring their certificates.
fn node_tls(pair: &KeyPair, ca: &Path) -> Vec<String> {
    let mut args = pair_args("node", pair);
    args.extend([
        "-node-ca-cert".into(),
        ca.display().to_string(),
        "-node-verify-client".into(),
    ]);
    args
}

async fn members(node: &Node) -> usize {
    let (_, body) = node.get("/nodes?nonvoters").await;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_object().map(|m| m.len()))
        .unwrap_or(0)
}

/// Starts a node that tries to join through `join` twice, quickly; its exit code and log.
async fn try_to_join(join: &str, args: &[String]) -> (Option<i32>, String) {
    let mut all = vec![
        "-join".to_string(),
        join.to_string(),
        "-join-attempts".into(),
        "2".into(),
    ];
    all.extend(["-join-interval".into(), "200ms".into()]);
    all.extend_from_slice(args);
    let d = DataDir::new();
    let mut node = Node::spawn_in(&d.path, &strs(&all));
    let status = node.wait_exit_status(Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(d.path.with_extension("log")).unwrap_or_default();
    (status.and_then(|s| s.code()), log)
}

#[tokio::test]
async fn nodes_talk_only_in_tls_with_certificates_from_their_ca() {
    let pki = Pki::new("cluster CA");
    let dirs: Vec<DataDir> = (0..3).map(|_| DataDir::new()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let mut args = vec!["-node-id".to_string(), format!("n{i}")];
        args.extend(node_tls(&pki.issue(&format!("n{i}"), &format!("n{i}")), &pki.ca_path));
        if i > 0 {
            args.extend(["-join".to_string(), nodes[0].raft.clone()]);
        }
        let node = Node::spawn_in(&d.path, &strs(&args));
        node.wait_ready().await;
        nodes.push(node);
    }
    nodes[0]
        .wait_for(Duration::from_secs(20), "three members", || async {
            members(&nodes[0]).await == 3
        })
        .await;

    // Writes through a follower are forwarded to the leader, and replicated, all in TLS.
    nodes[2]
        .execute(r#"["CREATE TABLE t(v TEXT)", "INSERT INTO t VALUES('over tls')"]"#)
        .await;
    for n in &nodes {
        n.wait_for(Duration::from_secs(10), "the row everywhere", || async {
            n.query("?level=none", r#"["SELECT * FROM t"]"#)
                .await
                .contains("over tls")
        })
        .await;
    }
    let (_, body) = nodes[1].get("/nodes").await;
    assert!(body.matches("\"reachable\":true").count() == 3, "{body}");

    // A backup through a follower comes from the leader, and a load through a follower goes
    // to it: both streamed between nodes in TLS.
    let mut leader = None;
    for (i, n) in nodes.iter().enumerate() {
        if n.get("/status?key=store.raft.state").await.1 == "\"Leader\"" {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a leader");
    let follower = &nodes[(leader + 1) % 3];
    let backup = reqwest::get(follower.url("/db/backup")).await.unwrap();
    assert_eq!(backup.status(), 200);
    let file = backup.bytes().await.unwrap();
    assert!(file.starts_with(b"SQLite format 3"), "{} bytes", file.len());
    follower.execute(r#"["DELETE FROM t"]"#).await;
    let loaded = reqwest::Client::new()
        .post(follower.url("/db/load"))
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(loaded.status(), 200);
    assert_eq!(loaded.headers()["x-rqlite-served-by"], nodes[leader].raft.as_str());
    assert!(
        follower
            .query("?level=strong", r#"["SELECT * FROM t"]"#)
            .await
            .contains("over tls")
    );

    // The node-to-node port answers nothing in plain text.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/meta", nodes[0].raft))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain text was answered: {plain:?}");

    // A node with a certificate from another CA, or with no TLS at all, cannot join, and its
    // log says why.
    let stranger = Pki::new("another CA");
    let (code, log) = try_to_join(
        &nodes[0].raft,
        &node_tls(&stranger.issue("n9", "n9"), &stranger.ca_path),
    )
    .await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("UnknownIssuer") || log.contains("certificate"), "{log}");
    let (code, log) = try_to_join(&nodes[0].raft, &[]).await;
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(members(&nodes[0]).await, 3);
    assert!(nodes[0].query("", r#"["SELECT * FROM t"]"#).await.contains("over tls"));
}

#[tokio::test]
async fn a_peer_without_the_required_common_name_is_refused() {
    let pki = Pki::new("cluster CA");
    let require = |pair: &KeyPair| {
        let mut a = node_tls(pair, &pki.ca_path);
        a.extend(["-node-verify-common-name".to_string(), "rqlite-node".to_string()]);
        a
    };
    let d = DataDir::new();
    let first = Node::spawn_in(&d.path, &strs(&require(&pki.issue("rqlite-node", "a"))));
    first.wait_ready().await;
    let (code, log) = try_to_join(&first.raft, &require(&pki.issue("intruder", "b"))).await;
    assert_eq!(code, Some(1), "{log}");
    let first_log = std::fs::read_to_string(d.path.with_extension("log")).unwrap_or_default();
    assert!(first_log.contains("is not the required"), "{first_log}");

    // The same CA and the right name: joins.
    let d2 = DataDir::new();
    let mut args = require(&pki.issue("rqlite-node", "c"));
    args.extend(["-join".to_string(), first.raft.clone()]);
    let second = Node::spawn_in(&d2.path, &strs(&args));
    second.wait_ready().await;
    first
        .wait_for(Duration::from_secs(20), "two members", || async {
            members(&first).await == 2
        })
        .await;
}
