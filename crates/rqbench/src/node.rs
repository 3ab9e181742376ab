//! A fresh `rqlited` in a temporary directory, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Client;

pub struct Node {
    child: Child,
    dir: std::path::PathBuf,
    pub http_addr: String,
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
        let child = Command::new(bin)
            .args(["-http-addr", &http_addr, "-raft-addr", &raft_addr])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let node = Node { child, dir, http_addr };
        let client = Client::new(&node.http_addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if client.get("/readyz").await.is_ok() {
                return Ok(node);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("node at {} did not become ready", node.http_addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
