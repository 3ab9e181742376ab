//! A fresh `rqlited` in a temporary directory, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Client;

pub struct Node {
    bin: String,
    child: Child,
    dir: std::path::PathBuf,
    pub http_addr: String,
    raft_addr: String,
}

/// A free loopback port (bound, then released for the node to take).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Node {
    pub async fn start(bin: &str) -> anyhow::Result<Node> {
        let dir = std::env::temp_dir().join(format!("rqbench-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let http_addr = format!("127.0.0.1:{}", free_port()?);
        let raft_addr = format!("127.0.0.1:{}", free_port()?);
        let child = spawn(bin, &http_addr, &raft_addr, &dir)?;
        let node = Node {
            bin: bin.to_string(),
            child,
            dir,
            http_addr,
            raft_addr,
        };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let t = Instant::now();
        self.child = spawn(&self.bin, &self.http_addr, &self.raft_addr, &self.dir)?;
        self.wait_ready().await?;
        Ok(t.elapsed())
    }
}

fn spawn(bin: &str, http: &str, raft: &str, dir: &std::path::Path) -> anyhow::Result<Child> {
    Command::new(bin)
        .args(["-http-addr", http, "-raft-addr", raft])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {bin}"))
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
