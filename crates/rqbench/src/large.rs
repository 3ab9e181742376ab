//! Whole-database operations on a large database: boot, snapshot, backup, load, restart.
//!
//! Builds a SQLite file of the given number of rows (about 100 bytes each), then, on a fresh
//! node, times each operation, samples the node's RSS throughout (peak per phase), and
//! measures the longest write latency seen while a snapshot is taken.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Client;
use crate::node::Node;

/// Creates `path` with `rows` rows of about 100 bytes in table `big`.
fn build_file(path: &Path, rows: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE big(id INTEGER PRIMARY KEY, name TEXT, value INTEGER, pad TEXT)")?;
    let tx = c.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare("INSERT INTO big(name, value, pad) VALUES(?1, ?2, ?3)")?;
        let pad = "x".repeat(64);
        for i in 0..rows {
            stmt.execute(rusqlite::params![format!("name-{i:012}"), i as i64, pad])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn rss_of(pid: u32) -> u64 {
    crate::workload::status_bytes(pid, "VmRSS").unwrap_or(0)
}

/// Samples a process's RSS every 20 ms, keeping the peak since the last `take`.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak { peak, stop }
    }

    /// The peak RSS in MiB since the last call.
    fn take(&self) -> f64 {
        self.peak.swap(0, Ordering::Relaxed) as f64 / 1048576.0
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn status(client: &Client) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&client.get("/status").await?)?)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub async fn run(bin: &str, rows: u64) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("rqbench-large-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let file = work.join("big.db");
    let t = Instant::now();
    let f = file.clone();
    tokio::task::spawn_blocking(move || build_file(&f, rows)).await??;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "built {rows} rows, {:.0} MB, in {:.1} s",
        mb(size),
        t.elapsed().as_secs_f64()
    );
    let result = phases(bin, &file, size).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn phases(bin: &str, file: &PathBuf, size: u64) -> anyhow::Result<()> {
    let mut node = Node::start(bin).await?;
    let client = Client::new(&node.http_addr);
    let st = status(&client).await?;
    let pid = st["os"]["pid"].as_u64().context("pid")? as u32;
    let dir = PathBuf::from(st["store"]["dir"].as_str().context("dir")?);
    let rss = RssPeak::start(pid);
    println!(
        "{:<10} {:>9} {:>9} {:>10} {:>12}",
        "operation", "seconds", "MB", "MB/s", "peak RSS MiB"
    );
    let line = |op: &str, secs: f64, bytes: u64, peak: f64| {
        println!(
            "{op:<10} {secs:>9.2} {:>9.0} {:>10.0} {peak:>12.1}",
            mb(bytes),
            mb(bytes) / secs
        );
    };

    // Boot.
    let body = tokio::fs::read(file).await?;
    let t = Instant::now();
    client.post_raw("/boot", body).await?;
    line("boot", t.elapsed().as_secs_f64(), size, rss.take());

    // Snapshot, with a writer measuring its longest wait meanwhile.
    client
        .post_json("/db/execute", br#"["CREATE TABLE IF NOT EXISTS w(x)"]"#.to_vec())
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, stop) = (Client::new(&node.http_addr), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.post_json("/db/execute", br#"["INSERT INTO w VALUES(1)"]"#.to_vec())
                    .await?;
                worst = worst.max(t.elapsed());
            }
            anyhow::Ok(worst)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    client.post_raw("/snapshot", Vec::new()).await?;
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let worst = writer.await??;
    let snap_bytes = dir_bytes(&dir.join("snapshots"));
    line("snapshot", secs, snap_bytes, rss.take());
    println!("longest write during the snapshot: {:.1} ms", worst.as_secs_f64() * 1e3);

    // Backup, streamed to nowhere.
    let t = Instant::now();
    let n = client.get_discard("/db/backup").await?;
    line("backup", t.elapsed().as_secs_f64(), n, rss.take());

    // Load through the log.
    let body = tokio::fs::read(file).await?;
    let t = Instant::now();
    client.post_raw("/db/load", body).await?;
    line("load", t.elapsed().as_secs_f64(), size, rss.take());

    // Restart after kill -9: time until /readyz answers 200.
    let t = node.restart().await?;
    line(
        "restart",
        t.as_secs_f64(),
        size,
        rss_of_restarted(&node, &client).await?,
    );
    let got: serde_json::Value = serde_json::from_slice(
        &client
            .post_json("/db/query", br#"["SELECT COUNT(*) FROM big"]"#.to_vec())
            .await?,
    )?;
    if got["results"][0]["values"][0][0].as_u64().is_none() {
        bail!("the restarted node lost the table: {got}");
    }
    Ok(())
}

async fn rss_of_restarted(_node: &Node, client: &Client) -> anyhow::Result<f64> {
    let st = status(client).await?;
    let pid = st["os"]["pid"].as_u64().context("pid")? as u32;
    Ok(rss_of(pid) as f64 / 1048576.0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
