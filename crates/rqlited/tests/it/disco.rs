//! Clusters formed by discovery (`-disco-mode`): against a real etcd (Debian's `etcd-server`),
//! a stand-in for Consul's KV API written here (no Consul package can be installed), a DNS
//! server on loopback written here, and rqlite's `RQLITE_DISCO_DNS_HOSTS` override.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record};
use serde_json::{Value, json};

use crate::harness::{DataDir, Node, free_port, free_ports, refused_start, restart_all};

fn random_key() -> String {
    format!("rq{}", rand::random::<u32>())
}

/// The leader every node names, once all name the same one; panics after `timeout`.
async fn agreed_leader(nodes: &[&Node], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            let s = n.status().await;
            seen.push(s["store"]["leader"]["node_id"].as_str().unwrap_or_default().to_string());
        }
        if !seen[0].is_empty() && seen.iter().all(|l| *l == seen[0]) {
            return seen[0].clone();
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn id_of(node: &Node) -> String {
    node.status().await["store"]["node_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The position in `nodes` of the node with id `id`.
async fn position(nodes: &[Node], id: &str) -> usize {
    for (i, n) in nodes.iter().enumerate() {
        if id_of(n).await == id {
            return i;
        }
    }
    panic!("no node {id}");
}

/// The ids of the members `node` lists, with whether each votes.
async fn members(node: &Node) -> Vec<(String, bool)> {
    let (_, body) = node.get("/nodes?nonvoters").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut out: Vec<(String, bool)> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, n)| (id.clone(), n["voter"].as_bool().unwrap_or(false)))
        .collect();
    out.sort();
    out
}

/// Waits (bounded) until `node` lists exactly `want`: a joined voter counts once promoted.
async fn wait_members(node: &Node, want: Vec<(String, bool)>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = members(node).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "members {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(names: &[&str], voter: bool) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), voter)).collect()
}

// ---------------------------------------------------------------------------------------------
// etcd

/// A real etcd on loopback ports with a temporary data directory; killed when dropped.
struct Etcd {
    child: Child,
    url: String,
    /// How the test itself calls it.
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Certificates for an etcd that serves TLS and wants client certificates from its CA.
struct EtcdTls {
    ca: PathBuf,
    server: rq_net::KeyPair,
    client: reqwest::Client,
}

impl Etcd {
    async fn start() -> Etcd {
        Etcd::start_with(None).await
    }

    async fn start_with(tls: Option<EtcdTls>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let [client, peer] = free_ports::<2>();
        let url = format!("{scheme}://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args(["--data-dir", &dir.path().join("etcd").display().to_string()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")]);
        let client = match tls {
            Some(t) => {
                cmd.arg("--cert-file")
                    .arg(&t.server.cert)
                    .arg("--key-file")
                    .arg(&t.server.key)
                    .arg("--trusted-ca-file")
                    .arg(&t.ca)
                    .arg("--client-cert-auth");
                t.client
            }
            None => reqwest::Client::new(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian's etcd-server package; scripts/test.sh installs it)");
        let etcd = Etcd {
            child,
            url,
            client,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while etcd
            .call("/v3/kv/range", json!({"key": B64.encode("x")}))
            .await
            .is_none()
        {
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd
    }

    async fn call(&self, path: &str, body: Value) -> Option<Value> {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// The leader record under `/<key>/leader`, if set.
    async fn leader(&self, key: &str) -> Option<Value> {
        let v = self
            .call("/v3/kv/range", json!({"key": B64.encode(format!("/{key}/leader"))}))
            .await?;
        let value = B64.decode(v["kvs"][0]["value"].as_str()?).ok()?;
        serde_json::from_slice(&value).ok()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the leader key names the node that leads, and returns that node's id.
async fn key_names_leader<F, Fut>(nodes: &[&Node], timeout: Duration, key: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let leader = agreed_leader(nodes, timeout).await;
        // Right after a leader dies the others still name it for a moment: wait for one of
        // `nodes` to lead and for the key to name it.
        if let Some(v) = key().await
            && v["id"] == leader.as_str()
            && let Some(lead) = nodes.iter().find(|n| n.raft == v["addr"].as_str().unwrap_or_default())
        {
            assert_eq!(v["api_addr"], format!("http://{}", lead.http));
            return leader;
        }
        assert!(Instant::now() < deadline, "the key does not name leader {leader}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn etcd_forms_a_cluster_that_grows_fails_over_and_restarts() {
    let etcd = Etcd::start().await;
    let key = random_key();
    let config = json!({"endpoints": [etcd.url.clone()], "dial-timeout": 5_000_000_000u64}).to_string();
    let flags = |id: &'static str| -> Vec<String> {
        [
            "-node-id",
            id,
            "-disco-mode",
            "etcd-kv",
            "-disco-key",
            &key,
            "-disco-config",
            &config,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let start = |d: &DataDir, id: &'static str, extra: &[&str]| {
        let mut args = flags(id);
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::spawn_in(&d.path, &a)
    };
    // A read replica started first waits: it never claims the key.
    let dirs: Vec<DataDir> = (0..6).map(|_| DataDir::new()).collect();
    let replica = start(&dirs[5], "r1", &["-raft-non-voter"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(etcd.leader(&key).await.is_none());

    // Three voters started together: exactly one claims the key and bootstraps.
    let mut nodes = vec![
        start(&dirs[0], "n0", &[]),
        start(&dirs[1], "n1", &[]),
        start(&dirs[2], "n2", &[]),
    ];
    for n in &nodes {
        n.wait_ready().await;
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let first = key_names_leader(&all, Duration::from_secs(20), || etcd.leader(&key)).await;
    replica.wait_ready().await;
    let mut expected = ids(&["n0", "n1", "n2"], true);
    expected.push(("r1".into(), false));
    expected.sort();
    wait_members(&nodes[0], expected).await;
    let disco = nodes[1].status().await["disco"].clone();
    assert_eq!(disco["mode"], "etcd-kv");
    assert_eq!(disco["key"], format!("/{key}/leader"));
    assert_eq!(disco["last_leader"]["id"], first.as_str());
    assert_eq!(disco["register_interval"], 3_000_000_000u64);

    // Writes go in; a fourth voter started later joins the current leader.
    let leader = &nodes[position(&nodes, &first).await];
    leader
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    nodes.push(start(&dirs[3], "n3", &["-join-interval", "1s", "-join-attempts", "1"]));
    nodes[3].wait_ready().await;
    let all: Vec<&Node> = nodes.iter().collect();
    assert_eq!(agreed_leader(&all, Duration::from_secs(10)).await, first);

    // The leader dies: within 15 s the key names the new one, and a new node joins it.
    let at = position(&nodes, &first).await;
    let mut dead = nodes.remove(at);
    dead.kill();
    let died = Instant::now();
    let alive: Vec<&Node> = nodes.iter().collect();
    let second = key_names_leader(&alive, Duration::from_secs(15), || etcd.leader(&key)).await;
    assert_ne!(second, first);
    assert!(died.elapsed() < Duration::from_secs(15), "{:?}", died.elapsed());
    nodes.push(start(&dirs[4], "n4", &["-join-interval", "1s", "-join-attempts", "1"]));
    nodes.last().unwrap().wait_ready().await;
    let (_, body) = nodes
        .last()
        .unwrap()
        .get("/db/query?q=SELECT+*+FROM+t&level=none")
        .await;
    assert!(body.contains("[[1]]"), "{body}");

    // Every node restarts with the same flags: the same cluster, the same data.
    let mut everyone = nodes;
    everyone.push(dead);
    everyone.push(replica);
    restart_all(&mut everyone).await;
    let all: Vec<&Node> = everyone.iter().collect();
    agreed_leader(&all, Duration::from_secs(20)).await;
    let mut expected = ids(&["n0", "n1", "n2", "n3", "n4"], true);
    expected.push(("r1".into(), false));
    expected.sort();
    wait_members(&everyone[0], expected).await;
    let (_, body) = everyone[0].get("/db/query?q=SELECT+*+FROM+t&level=strong").await;
    assert!(body.contains("[[1]]"), "{body}");
}

#[tokio::test]
async fn etcd_with_users_and_passwords() {
    let etcd = Etcd::start().await;
    for (path, body) in [
        ("/v3/auth/role/add", json!({"name": "root"})),
        ("/v3/auth/user/add", json!({"name": "root", "password": "rootpw"})),
        ("/v3/auth/user/grant", json!({"user": "root", "role": "root"})),
        ("/v3/auth/enable", json!({})),
    ] {
        assert!(etcd.call(path, body.clone()).await.is_some(), "{path} {body}");
    }
    let key = random_key();
    let d = DataDir::new();
    // Environment variables in the configuration are expanded.
    let config =
        json!({"endpoints": [etcd.url.clone()], "username": "root", "password": "$ETCD_TEST_PASSWORD"}).to_string();
    let mut wrong = Node::spawn_env(
        &d.path,
        &["-disco-mode", "etcd-kv", "-disco-key", &key, "-disco-config", &config],
        &[("ETCD_TEST_PASSWORD", "wrong")],
    );
    wrong
        .wait_for(Duration::from_secs(20), "a refused login in /status", || async {
            wrong.status().await["disco"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("authenticate as root"))
        })
        .await;
    wrong.kill();
    let node = Node::spawn_env(
        &d.path,
        &["-disco-mode", "etcd-kv", "-disco-key", &key, "-disco-config", &config],
        &[("ETCD_TEST_PASSWORD", "rootpw")],
    );
    node.wait_ready().await;
    assert_eq!(node.status().await["disco"]["last_leader"]["addr"], node.raft.as_str());
}

/// A client of the test's CA, presenting `identity` when asked.
fn tls_client(ca: &rq_net::testing::Ca, identity: Option<&rq_net::testing::Issued>) -> reqwest::Client {
    let config = rq_net::client_config_from_pem(&rq_net::PemClientOptions {
        ca: Some(ca.pem.clone().into_bytes()),
        identity: identity.map(|i| (i.cert_pem.clone().into_bytes(), i.key_pem.clone().into_bytes())),
        ..Default::default()
    })
    .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured((*config).clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn etcd_over_tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let ca = rq_net::testing::Ca::new("etcd test CA");
    let client = ca.issue("rqlite", &[]);
    let client_pair = client.write(certs.path(), "client");
    let etcd = Etcd::start_with(Some(EtcdTls {
        ca: ca.write(certs.path(), "ca.crt"),
        server: ca.issue("etcd", &["127.0.0.1"]).write(certs.path(), "etcd"),
        client: tls_client(&ca, Some(&client)),
    }))
    .await;
    let key = random_key();
    let ca_file = certs.path().join("ca.crt").display().to_string();
    // Without a client certificate etcd refuses the connection, and `/status` says so.
    let d = DataDir::new();
    let config = json!({"endpoints": [etcd.url.clone()], "ca-file": ca_file}).to_string();
    let mut refused = Node::spawn_in(
        &d.path,
        &["-disco-mode", "etcd-kv", "-disco-key", &key, "-disco-config", &config],
    );
    refused
        .wait_for(Duration::from_secs(20), "a refused connection in /status", || async {
            refused.status().await["disco"]["last_error"].is_string()
        })
        .await;
    refused.kill();
    let config = json!({
        "endpoints": [etcd.url.clone()],
        "ca-file": ca_file,
        "cert-file": client_pair.cert,
        "key-file": client_pair.key,
    })
    .to_string();
    let node = Node::spawn_in(
        &d.path,
        &["-disco-mode", "etcd-kv", "-disco-key", &key, "-disco-config", &config],
    );
    node.wait_ready().await;
    let v = etcd.leader(&key).await.expect("the key is set");
    assert_eq!(v["addr"], node.raft.as_str());
}

// ---------------------------------------------------------------------------------------------
// Consul

/// What the stand-in holds: keys with their values and modify indexes, and what it was asked.
#[derive(Default)]
struct ConsulKv {
    pairs: HashMap<String, (Vec<u8>, u64)>,
    index: u64,
    datacenters: Vec<String>,
}

/// The parts of Consul's KV HTTP API that a client of it uses: `GET` (404 when absent, else
/// a JSON array with base64 `Value` and `ModifyIndex`), `PUT` with an optional `?cas=` index
/// (0: only if absent), answering `true` or `false`. Requests without the token are refused.
async fn consul_kv(
    State(kv): State<Arc<Mutex<ConsulKv>>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if headers.get("x-consul-token").and_then(|v| v.to_str().ok()) != Some("s3cret") {
        return (StatusCode::FORBIDDEN, "ACL not found").into_response();
    }
    let mut kv = kv.lock().unwrap();
    kv.datacenters.push(q.get("dc").cloned().unwrap_or_default());
    match method {
        Method::GET => match kv.pairs.get(&key) {
            None => StatusCode::NOT_FOUND.into_response(),
            Some((value, index)) => axum::Json(json!([{
                "LockIndex": 0, "Key": key, "Flags": 0, "Value": B64.encode(value),
                "CreateIndex": index, "ModifyIndex": index,
            }]))
            .into_response(),
        },
        Method::PUT => {
            let current = kv.pairs.get(&key).map(|(_, i)| *i);
            let ok = match q.get("cas").map(|c| c.parse::<u64>()) {
                None => true,
                Some(Ok(0)) => current.is_none(),
                Some(Ok(i)) => current == Some(i),
                Some(Err(_)) => return (StatusCode::BAD_REQUEST, "bad cas").into_response(),
            };
            if ok {
                kv.index += 1;
                let index = kv.index;
                kv.pairs.insert(key, (body.to_vec(), index));
            }
            ok.to_string().into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// The stand-in on a loopback port, over TLS with `tls`.
async fn start_consul(tls: Option<Arc<rq_net::rustls::ServerConfig>>) -> (String, Arc<Mutex<ConsulKv>>) {
    let kv = Arc::new(Mutex::new(ConsulKv::default()));
    let app = Router::new()
        .route("/v1/kv/{*key}", axum::routing::any(consul_kv))
        .with_state(kv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let opts = rq_net::ServeOptions {
        tls,
        max_connections: 64,
        header_read_timeout: Duration::from_secs(10),
        port: "consul",
    };
    tokio::spawn(rq_net::serve(listener, app, opts, std::future::pending()));
    (addr, kv)
}

#[tokio::test]
async fn consul_over_tls_with_an_inline_ca_and_server_name() {
    let certs = tempfile::tempdir().unwrap();
    let ca = rq_net::testing::Ca::new("consul test CA");
    let server = ca.issue("consul", &["consul.test"]).write(certs.path(), "consul");
    let tls = rq_net::server_config(&rq_net::ServerOptions {
        pair: server,
        ca: None,
        verify_client: false,
        verify_common_name: None,
        alpn: vec![b"http/1.1".to_vec()],
    })
    .unwrap();
    let (addr, kv) = start_consul(Some(tls)).await;
    let key = random_key();
    // `ca_pem` is base64 in the JSON, as Go writes a byte string; `address` is the name the
    // certificate must carry.
    let config = json!({
        "address": addr,
        "scheme": "https",
        "token": "s3cret",
        "tls_config": {"ca_pem": B64.encode(&ca.pem), "address": "consul.test:8501"},
    })
    .to_string();
    let d = DataDir::new();
    let node = Node::spawn_in(
        &d.path,
        &["-disco-mode", "consul-kv", "-disco-key", &key, "-disco-config", &config],
    );
    node.wait_ready().await;
    let value = kv.lock().unwrap().pairs.get(&format!("{key}/leader")).cloned();
    let v: Value = serde_json::from_slice(&value.expect("the key is set").0).unwrap();
    assert_eq!(v["addr"], node.raft.as_str());
}

#[tokio::test]
async fn consul_forms_a_cluster_and_follows_a_new_leader() {
    let (addr, kv) = start_consul(None).await;
    let key = random_key();
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let config_file = tmp.path().join("consul.json");
    std::fs::write(
        &config_file,
        json!({"address": addr, "datacenter": "dc7", "token_file": token_file}).to_string(),
    )
    .unwrap();
    let config = config_file.display().to_string();
    let dirs: Vec<DataDir> = (0..4).map(|_| DataDir::new()).collect();
    let start = |d: &DataDir, id: &str| {
        Node::spawn_in(
            &d.path,
            &[
                "-node-id",
                id,
                "-disco-mode",
                "consul-kv",
                "-disco-key",
                &key,
                "-disco-config",
                &config,
            ],
        )
    };
    let mut nodes = vec![start(&dirs[0], "c0"), start(&dirs[1], "c1"), start(&dirs[2], "c2")];
    for n in &nodes {
        n.wait_ready().await;
    }
    let consul_leader = || async {
        let kv = kv.lock().unwrap();
        kv.pairs
            .get(&format!("{key}/leader"))
            .and_then(|(v, _)| serde_json::from_slice::<Value>(v).ok())
    };
    let all: Vec<&Node> = nodes.iter().collect();
    let first = key_names_leader(&all, Duration::from_secs(20), consul_leader).await;
    wait_members(&nodes[0], ids(&["c0", "c1", "c2"], true)).await;
    assert_eq!(nodes[0].status().await["disco"]["mode"], "consul-kv");
    assert!(kv.lock().unwrap().datacenters.iter().all(|d| d == "dc7"));

    let at = position(&nodes, &first).await;
    nodes.remove(at).kill();
    let alive: Vec<&Node> = nodes.iter().collect();
    let second = key_names_leader(&alive, Duration::from_secs(15), consul_leader).await;
    assert_ne!(second, first);
    nodes.push(start(&dirs[3], "c3"));
    nodes.last().unwrap().wait_ready().await;
    let all: Vec<&Node> = nodes.iter().collect();
    assert_eq!(agreed_leader(&all, Duration::from_secs(10)).await, second);
    let mut expected: Vec<(String, bool)> = members(&nodes[0]).await;
    expected.retain(|(id, _)| id != &first);
    assert_eq!(expected.len(), 3);

    // Every node restarts with the same flags: the same cluster, led by one of them.
    restart_all(&mut nodes).await;
    let all: Vec<&Node> = nodes.iter().collect();
    agreed_leader(&all, Duration::from_secs(20)).await;
    assert_eq!(members(&nodes[1]).await.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// DNS

/// A DNS server on a loopback UDP port answering `A` and `SRV` questions from `records`.
async fn start_dns(records: Vec<Record>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::response(query.metadata.id, OpCode::Query);
            answer.metadata.recursion_desired = query.metadata.recursion_desired;
            answer.metadata.recursion_available = true;
            answer.metadata.authoritative = true;
            for q in &query.queries {
                answer.add_query(q.clone());
                for r in &records {
                    if r.name == q.name && r.record_type() == q.query_type {
                        answer.add_answer(r.clone());
                    }
                }
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    addr
}

fn a_record(name: &str, ip: Ipv4Addr) -> Record {
    Record::from_rdata(Name::from_ascii(name).unwrap(), 1, RData::A(A(ip)))
}

fn srv_record(name: &str, port: u16, target: &str) -> Record {
    Record::from_rdata(
        Name::from_ascii(name).unwrap(),
        1,
        RData::SRV(SRV::new(0, 0, port, Name::from_ascii(target).unwrap())),
    )
}

/// Three voters that find each other with `mode` and `config` and `env`, on `raft` addresses.
async fn dns_cluster(mode: &str, config: &str, raft: &[String], env: &[(&str, &str)]) -> (Vec<DataDir>, Vec<Node>) {
    let dirs: Vec<DataDir> = (0..raft.len()).map(|_| DataDir::new()).collect();
    let nodes: Vec<Node> = dirs
        .iter()
        .zip(raft)
        .map(|(d, r)| dns_node(d, r, mode, config, env))
        .collect();
    for n in &nodes {
        n.wait_ready().await;
    }
    let all: Vec<&Node> = nodes.iter().collect();
    agreed_leader(&all, Duration::from_secs(20)).await;
    assert_eq!(members(&nodes[0]).await.iter().filter(|(_, v)| *v).count(), 3);
    (dirs, nodes)
}

/// A voter that finds its cluster with `mode`, expecting three.
fn dns_node(d: &DataDir, raft: &str, mode: &str, config: &str, env: &[(&str, &str)]) -> Node {
    let args = [
        "-raft-addr",
        raft,
        "-disco-mode",
        mode,
        "-disco-config",
        config,
        "-bootstrap-expect",
        "3",
    ];
    Node::spawn_env(&d.path, &args, env)
}

#[tokio::test]
async fn dns_a_records_from_a_dns_server() {
    // Loopback addresses and one port: what an A lookup of one name can describe. The name
    // has four addresses; three nodes start and form the cluster, the fourth comes later.
    let port = free_port();
    let ips: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let server = start_dns(ips.iter().map(|ip| a_record("rqlite.test.", *ip)).collect()).await;
    let raft: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let config = json!({"name": "rqlite.test.", "port": port}).to_string();
    let server = server.to_string();
    let env = [("RQLITE_DISCO_DNS_SERVER", server.as_str())];
    let (mut dirs, mut nodes) = dns_cluster("dns", &config, &raft[..3], &env).await;
    let disco = nodes[0].status().await["disco"].clone();
    assert_eq!(disco["mode"], "dns");
    assert_eq!(disco["name"], "rqlite.test.");
    assert_eq!(disco["last_addresses"], json!(raft));
    assert!(disco["last_contact"].is_string());

    dirs.push(DataDir::new());
    nodes.push(dns_node(&dirs[3], &raft[3], "dns", &config, &env));
    nodes[3].wait_ready().await;
    let four = ids(&[&raft[0], &raft[1], &raft[2], &raft[3]], true);
    wait_members(&nodes[0], four.clone()).await;

    // Every node restarts with the same flags: the same cluster.
    restart_all(&mut nodes).await;
    let all: Vec<&Node> = nodes.iter().collect();
    agreed_leader(&all, Duration::from_secs(20)).await;
    wait_members(&nodes[2], four).await;
}

#[tokio::test]
async fn dns_srv_records_from_a_dns_server() {
    let ports = free_ports::<3>();
    let mut records: Vec<Record> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| srv_record("_raft._tcp.rqlite.test.", *p, &format!("n{i}.rqlite.test.")))
        .collect();
    for i in 0..3 {
        records.push(a_record(&format!("n{i}.rqlite.test."), Ipv4Addr::LOCALHOST));
    }
    let server = start_dns(records).await.to_string();
    let raft: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let config = r#"{"name": "rqlite.test.", "service": "raft"}"#;
    let (_dirs, nodes) = dns_cluster("dns-srv", config, &raft, &[("RQLITE_DISCO_DNS_SERVER", &server)]).await;
    let disco = nodes[2].status().await["disco"].clone();
    assert_eq!(disco["mode"], "dns-srv");
    assert_eq!(disco["dns_name:"], "_raft._tcp.rqlite.test..");
    let mut want = raft.clone();
    want.sort();
    assert_eq!(disco["last_addresses"], json!(want));
}

#[tokio::test]
async fn dns_hosts_from_the_environment_and_a_replica_that_joins_later() {
    let raft: Vec<String> = free_ports::<3>().iter().map(|p| format!("localhost:{p}")).collect();
    let hosts = raft.join(",");
    let env = [("RQLITE_DISCO_DNS_HOSTS", hosts.as_str())];
    let (_dirs, nodes) = dns_cluster("dns", r#"{"name": "ignored.example"}"#, &raft, &env).await;
    let d = DataDir::new();
    let replica = Node::spawn_env(
        &d.path,
        &[
            "-node-id",
            "replica",
            "-raft-non-voter",
            "-disco-mode",
            "dns",
            "-disco-config",
            "{}",
        ],
        &env,
    );
    replica.wait_ready().await;
    assert!(members(&nodes[0]).await.contains(&("replica".to_string(), false)));
}

#[test]
fn combinations_rqlite_refuses_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("data");
    for (args, message) in [
        (
            vec![
                "-disco-mode",
                "dns",
                "-join",
                "127.0.0.1:4002",
                "-bootstrap-expect",
                "3",
            ],
            "disco mode cannot be used when also explicitly joining a cluster",
        ),
        (
            vec!["-disco-mode", "etcd-kv", "-bootstrap-expect", "3"],
            "bootstrapping not applicable when using etcd-kv",
        ),
        (
            vec!["-disco-mode", "consul-kv", "-bootstrap-expect", "2"],
            "bootstrapping not applicable when using consul-kv",
        ),
        (
            vec!["-disco-mode", "dns-srv"],
            "bootstrap-expect value required when using dns-srv with a voting node",
        ),
        (
            vec!["-disco-mode", "zookeeper"],
            "disco mode must be one of consul-kv, etcd-kv, dns, or dns-srv",
        ),
        (
            vec!["-raft-non-voter", "-bootstrap-expect", "3", "-join", "127.0.0.1:4002"],
            "bootstrapping only applicable to voting nodes",
        ),
        (
            vec![
                "-disco-mode",
                "consul-kv",
                "-disco-config",
                r#"{"address": "http://127.0.0.1:8500"}"#,
            ],
            "address should not contain HTTP or HTTPS",
        ),
        (
            vec!["-disco-mode", "dns", "-bootstrap-expect", "3", "-disco-config", "{oops"],
            "error reading DNS configuration",
        ),
    ] {
        let err = refused_start(&args, &dir);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
