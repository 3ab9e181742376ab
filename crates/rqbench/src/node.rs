//! A fresh `rqlited` in a temporary directory, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Client;

pub struct Node {
    bin: String,
    child: Option<Child>,
    dir: std::path::PathBuf,
    pub http_addr: String,
    pub raft_addr: String,
    extra: Vec<String>,
}

/// Flags every spawned node gets (`-http-cert` and `-http-key` with `--tls`, `-cdc-config`
/// with `--cdc`).
static COMMON_FLAGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Starts every node from now on with `flags` too.
pub fn add_flags_to_every_node(flags: Vec<String>) {
    COMMON_FLAGS.lock().unwrap().extend(flags);
}

/// Whether nodes run under valgrind's callgrind, to count their instructions (`--instructions`).
static UNDER_CALLGRIND: AtomicBool = AtomicBool::new(false);

/// Whether nodes run under callgrind.
pub fn under_callgrind() -> bool {
    UNDER_CALLGRIND.load(Ordering::Relaxed)
}

/// Starts every node from now on under callgrind, its instrumentation off until a workload
/// turns it on (`crate::instructions`).
pub fn run_every_node_under_callgrind() {
    UNDER_CALLGRIND.store(true, Ordering::Relaxed);
}

/// A free loopback port (bound, then released for the node to take).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Node {
    pub async fn start(bin: &str) -> anyhow::Result<Node> {
        Node::start_with(bin, &[]).await
    }

    /// Starts a node with extra flags (such as `-join`) and waits until it is ready.
    pub async fn start_with(bin: &str, extra: &[String]) -> anyhow::Result<Node> {
        let dir = std::env::temp_dir().join(format!("rqbench-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let http_addr = format!("127.0.0.1:{}", free_port()?);
        let raft_addr = format!("127.0.0.1:{}", free_port()?);
        let child = spawn(bin, &http_addr, &raft_addr, &dir, extra)?;
        let node = Node {
            bin: bin.to_string(),
            child: Some(child),
            dir,
            http_addr,
            raft_addr,
            extra: extra.to_vec(),
        };
        node.wait_ready().await?;
        Ok(node)
    }

    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = Client::new(&self.http_addr);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if client.get("/readyz").await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("node at {} did not become ready", self.http_addr)
    }

    /// Kills the node (SIGKILL), starts it again on the same directory and addresses, and
    /// returns how long it took to be ready.
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        self.kill();
        let t = Instant::now();
        self.child = Some(spawn(
            &self.bin,
            &self.http_addr,
            &self.raft_addr,
            &self.dir,
            &self.extra,
        )?);
        self.wait_ready().await?;
        Ok(t.elapsed())
    }

    /// Kills the node (SIGKILL) and leaves it down.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            crate::instructions::remove_counts(c.id());
        }
    }

    /// Whether the node says it is the leader.
    pub async fn is_leader(&self) -> bool {
        let Ok(body) = Client::new(&self.http_addr).get("/status").await else {
            return false;
        };
        serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|s| s["store"]["raft"]["state"] == "Leader")
    }
}

/// Nodes of one cluster: the first forms it, the others join it.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub async fn start(bin: &str, size: usize) -> anyhow::Result<Cluster> {
        let first = Node::start(bin).await?;
        let join = vec!["-join".to_string(), first.raft_addr.clone()];
        let mut nodes = vec![first];
        for _ in 1..size {
            nodes.push(Node::start_with(bin, &join).await?);
        }
        Ok(Cluster { nodes })
    }

    /// Index of the node that leads, waiting up to 30 s for one.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.child.is_some() && n.is_leader().await {
                    return Ok(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("no leader")
    }
}

fn spawn(bin: &str, http: &str, raft: &str, dir: &std::path::Path, extra: &[String]) -> anyhow::Result<Child> {
    let mut cmd = if under_callgrind() {
        let mut c = Command::new("valgrind");
        c.args(crate::instructions::valgrind_args()).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(["-http-addr", http, "-raft-addr", raft])
        .args(COMMON_FLAGS.lock().unwrap().iter())
        .args(extra)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {bin}"))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
