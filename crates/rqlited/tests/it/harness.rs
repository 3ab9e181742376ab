//! Starting, stopping and talking to real nodes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_rqlited");

/// How long a node may take to start and elect itself.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node. Killed (SIGKILL) when dropped; its directory lives as long as `dir`.
pub struct Node {
    child: Option<Child>,
    pub dir: PathBuf,
    pub http: String,
    pub raft: String,
    extra: Vec<String>,
    /// Environment of the next start (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
    client: reqwest::Client,
    /// `http`, or `https` for a node serving its API over TLS.
    scheme: &'static str,
}

/// A data directory that outlives node restarts.
pub struct DataDir {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl DataDir {
    pub fn new() -> DataDir {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().join("data");
        DataDir { _tmp: tmp, path }
    }
}

/// Starts `rqlited` on `dir`; addresses ending in `:0` get a port from the kernel.
fn spawn(dir: &Path, http: &str, raft: &str, extra: &[String], env: &[(String, String)]) -> (Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["-http-addr", http, "-raft-addr", raft])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rqlited");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let log = dir.with_extension("log");
    std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(log).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = out.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if line.contains("listening") {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .map(str::to_string)
                };
                let _ = tx.send((field("http="), field("raft=")));
            }
        }
    });
    let Ok((http, raft)) = rx.recv_timeout(START_TIMEOUT) else {
        let output = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
        panic!("node did not report its addresses; its output:\n{output}");
    };
    (child, http.expect("http address"), raft.expect("raft address"))
}

impl Node {
    /// Starts a node in `dir` with extra flags, and waits until it is leader and ready.
    pub async fn start_in(dir: &Path, extra: &[&str]) -> Node {
        let node = Node::spawn_in(dir, extra);
        node.wait_ready().await;
        node
    }

    /// Starts a node without waiting for it to be ready.
    pub fn spawn_in(dir: &Path, extra: &[&str]) -> Node {
        Node::spawn_env(dir, extra, &[])
    }

    /// Starts a node with extra environment variables, without waiting for it to be ready.
    pub fn spawn_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
        Node::spawn_at(dir, "127.0.0.1:0", extra, env)
    }

    /// Starts a node on a given Raft address (others must know it in advance), without waiting.
    pub fn spawn_fixed(dir: &Path, raft: &str, extra: &[&str]) -> Node {
        Node::spawn_at(dir, raft, extra, &[])
    }

    fn spawn_at(dir: &Path, raft: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, http, raft) = spawn(dir, "127.0.0.1:0", raft, &extra, &env);
        Node {
            child: Some(child),
            dir: dir.to_path_buf(),
            http,
            raft,
            extra,
            env,
            client: reqwest::Client::new(),
            scheme: "http",
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`; returns whether it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        self.wait_exit_status(timeout).await.is_some()
    }

    /// Waits for the process to exit by itself, up to `timeout`; returns its exit status if it
    /// did (a default status if it had already been reaped).
    pub async fn wait_exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return Some(status);
                }
                None => return Some(std::process::ExitStatus::default()),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        None
    }

    /// Kills the node (SIGKILL) and starts it again on the same directory, addresses and flags
    /// (its identity is its Raft address).
    pub async fn kill_and_restart(&mut self) {
        self.kill_and_respawn();
        self.wait_ready().await;
    }

    /// Kills the node and starts it again on the same addresses, without waiting for it.
    pub fn kill_and_respawn(&mut self) {
        self.kill();
        let (child, http, raft) = spawn(&self.dir, &self.http, &self.raft, &self.extra, &self.env);
        self.child = Some(child);
        self.http = http;
        self.raft = raft;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the node with SIGTERM and returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe_free_sigterm(c.id());
        c.wait().ok()
    }

    /// CPU time the process has used so far (user and system, from `/proc`).
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.as_ref().expect("a running node").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses: utime and stime are the
        // 12th and 13th, in clock ticks of 1/100 s.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
        Duration::from_millis((f[11] + f[12]) * 10)
    }

    /// Freezes the process (SIGSTOP) until `resume`.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "CONT");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.http, path)
    }

    /// Talks to the node over HTTPS with `client` from now on.
    pub fn over_https(mut self, client: reqwest::Client) -> Node {
        self.client = client;
        self.scheme = "https";
        self
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} did not become ready", self.http);
    }

    /// POSTs a JSON body; returns status and body text.
    pub async fn post(&self, path: &str, body: &str) -> (u16, String) {
        let r = self
            .client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// Runs statements through `/db/execute`, expects 200, returns the body.
    pub async fn execute(&self, body: &str) -> String {
        let (status, text) = self.post("/db/execute", body).await;
        assert_eq!(status, 200, "{text}");
        text
    }

    /// Runs statements through `/db/query` with the given query string.
    pub async fn query(&self, query: &str, body: &str) -> String {
        let (status, text) = self.post(&format!("/db/query{query}"), body).await;
        assert_eq!(status, 200, "{text}");
        text
    }

    pub async fn status(&self) -> Value {
        let (s, body) = self.get("/status").await;
        assert_eq!(s, 200);
        serde_json::from_str(&body).expect("status json")
    }

    pub async fn expvar(&self) -> Value {
        let (s, body) = self.get("/debug/vars").await;
        assert_eq!(s, 200);
        serde_json::from_str(&body).expect("expvar json")
    }

    /// Polls `f` every 50 ms until it returns true, failing after `timeout`.
    pub async fn wait_for<F, Fut>(&self, timeout: Duration, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGTERM through the `kill` command (the tests keep `unsafe` out).
fn unsafe_free_sigterm(pid: u32) {
    signal(pid, "TERM");
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// The index of the node in `nodes` that reports itself leader, within 20 s.
pub async fn leader_index(nodes: &[Node]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        for (i, n) in nodes.iter().enumerate() {
            if let Ok(r) = reqwest::get(n.url("/status?key=store.raft.state")).await
                && r.text().await.is_ok_and(|t| t == "\"Leader\"")
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader");
}

/// A fresh single node, ready.
pub async fn single() -> (DataDir, Node) {
    let d = DataDir::new();
    let n = Node::start_in(&d.path, &[]).await;
    (d, n)
}

/// Posts a write to `url`; whether it was acknowledged (answered 200 with no error). A node that
/// stops while the request is in flight gives no answer, which is no acknowledgement.
pub async fn acknowledged(client: &reqwest::Client, url: &str, body: String) -> bool {
    let Ok(r) = client
        .post(url)
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
    else {
        return false;
    };
    let code = r.status().as_u16();
    r.text().await.is_ok_and(|text| code == 200 && !text.contains("error"))
}

/// Starts three voters `n0` (which bootstraps and leads), `n1` and `n2` (which join it), `env`
/// for `n2`, and waits until the leader lists all three.
pub async fn three_nodes(env: &[(&str, &str)]) -> (Vec<DataDir>, Vec<Node>) {
    three_nodes_with(env, &[]).await
}

/// As `three_nodes`, with `extra` arguments for every node.
pub async fn three_nodes_with(env: &[(&str, &str)], extra: &[&str]) -> (Vec<DataDir>, Vec<Node>) {
    let dirs: Vec<DataDir> = (0..3).map(|_| DataDir::new()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let id = format!("n{i}");
        let mut args = vec!["-node-id".to_string(), id];
        args.extend(extra.iter().map(|a| a.to_string()));
        if i > 0 {
            args.extend(["-join".to_string(), nodes[0].raft.clone()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let n = Node::spawn_env(&d.path, &a, if i == 2 { env } else { &[] });
        n.wait_ready().await;
        nodes.push(n);
    }
    nodes[0]
        .wait_for(Duration::from_secs(20), "three voters", || async {
            let (_, body) = nodes[0].get("/nodes").await;
            serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.as_object().map(|m| m.len()))
                == Some(3)
        })
        .await;
    (dirs, nodes)
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` different free loopback ports: all are held at once before they are released, so no two
/// are the same.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [std::net::TcpListener; N] = std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().port())
}

/// Starts `rqlited` with `args` on `dir` (loopback, port 0), expecting it to refuse to start:
/// asserts exit status 1 and returns what it wrote on stderr.
pub fn refused_start(args: &[&str], dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["-http-addr", "127.0.0.1:0", "-raft-addr", "127.0.0.1:0"])
        .args(args)
        .arg(dir)
        .output()
        .expect("run rqlited");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

/// Kills every node, starts each again on its directory and addresses, and waits until all
/// are ready.
pub async fn restart_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.kill();
    }
    for n in nodes.iter_mut() {
        n.kill_and_respawn();
    }
    for n in nodes.iter() {
        n.wait_ready().await;
    }
}

/// The directory of the PyPI test tools (`RQ_TEST_VENV`, or `target/test-venv`), which
/// `scripts/test.sh` makes.
pub fn test_venv() -> PathBuf {
    std::env::var_os("RQ_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv"))
}

/// The npm packages of the client tests (`RQ_TEST_NODE_MODULES`, or
/// `target/test-node/node_modules`), which `scripts/test.sh` installs.
pub fn test_node_modules() -> PathBuf {
    std::env::var_os("RQ_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-node/node_modules"))
}
