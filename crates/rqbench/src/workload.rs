//! Named workloads and the loop that drives concurrent clients.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::client::{Client, Connection};

/// When a run ends.
#[derive(Clone, Copy)]
pub enum Stop {
    /// After this many requests per client.
    Requests(usize),
    /// After this long.
    After(Duration),
}

/// What one run measured.
pub struct Outcome {
    pub requests: usize,
    pub rows: usize,
    pub elapsed: Duration,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// The slowest request: a stall (a checkpoint, a snapshot) that the percentiles can miss.
    pub max: Duration,
    pub fsync_rate: Option<f64>,
    /// The server's resident memory after the run: all of it (`VmRSS`), and its anonymous part
    /// (`RssAnon`: heap, stacks), which leaves out the pages of the binary the kernel maps.
    pub rss_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    /// The server's CPU time (user and system) per request, in microseconds.
    pub cpu_us: Option<f64>,
    /// With clients spread over several nodes: the first node's share of their CPU time.
    pub cpu_share: Option<f64>,
    /// Under `--instructions`: the instructions the node executed per request.
    pub instructions: Option<f64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` concurrent clients, client `c` talking to `addrs[c % addrs.len()]`;
/// `make(client, seq)` gives each request's path and JSON body to POST, or no body for a GET.
pub async fn drive<F>(addrs: &[String], clients: usize, stop: Stop, make: F) -> anyhow::Result<Outcome>
where
    F: Fn(usize, usize) -> (String, Option<Vec<u8>>) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let mut conn = Connection::new(&addrs[c % addrs.len()]);
        let make = make.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut seq = 0;
            loop {
                match stop {
                    Stop::Requests(n) if seq >= n => break,
                    Stop::After(_) if done.load(Ordering::Relaxed) => break,
                    _ => {}
                }
                let (path, body) = make(c, seq);
                let t = Instant::now();
                match body {
                    Some(body) => conn.post_json(&path, body).await?,
                    None => conn.get(&path).await?,
                };
                lat.push(t.elapsed());
                seq += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    if let Stop::After(d) = stop {
        tokio::time::sleep(d).await;
        done.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let mean = all.iter().sum::<Duration>() / (all.len().max(1) as u32);
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    Ok(Outcome {
        requests: all.len(),
        rows: all.len(),
        elapsed,
        mean,
        p50: pct(0.50).unwrap_or_default(),
        p99: pct(0.99).unwrap_or_default(),
        p999: pct(0.999).unwrap_or_default(),
        max: all.last().copied().unwrap_or_default(),
        fsync_rate: None,
        rss_bytes: None,
        anon_bytes: None,
        cpu_us: None,
        cpu_share: None,
        instructions: None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Insert,
    Batch(usize),
    Queued,
    Select(&'static str),
    Readyz,
    Load(usize),
}

/// A named workload.
#[derive(Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub clients: usize,
    /// Whether it writes (its rate is compared with the fsync rate).
    pub writes: bool,
    kind: Kind,
}

const fn w(name: &'static str, clients: usize, writes: bool, kind: Kind) -> Workload {
    Workload {
        name,
        clients,
        writes,
        kind,
    }
}

const ALL: &[Workload] = &[
    w("insert-1", 1, true, Kind::Insert),
    w("insert-16", 16, true, Kind::Insert),
    w("batch-1000", 1, true, Kind::Batch(1000)),
    w("queued-16", 16, true, Kind::Queued),
    w("select-weak-1", 1, false, Kind::Select("weak")),
    w("select-weak-16", 16, false, Kind::Select("weak")),
    w("select-linearizable-16", 16, false, Kind::Select("linearizable")),
    w("select-none-16", 16, false, Kind::Select("none")),
    w("readyz-1", 1, false, Kind::Readyz),
    w("readyz-16", 16, false, Kind::Readyz),
    w("load-1m", 1, true, Kind::Load(1_000_000)),
];

const CREATE: &str = "CREATE TABLE IF NOT EXISTS bench(id INTEGER PRIMARY KEY, name TEXT, value INTEGER)";
const INSERT: &str = "INSERT INTO bench(name, value) VALUES(?, ?)";
/// Rows loaded before point-read workloads.
const SELECT_ROWS: usize = 100_000;

fn batch_body(rows: usize, tag: usize) -> Vec<u8> {
    let stmts: Vec<_> = (0..rows)
        .map(|i| json!([INSERT, format!("name-{tag}-{i}"), i]))
        .collect();
    serde_json::to_vec(&stmts).unwrap_or_default()
}

/// Facts read from the node's `/status`: its data directory and process id.
async fn node_facts(client: &Client) -> anyhow::Result<(PathBuf, Option<u32>)> {
    let status: serde_json::Value = serde_json::from_slice(&client.get("/status").await?)?;
    let dir = status["store"]["dir"].as_str().context("no store.dir in /status")?;
    let pid = status["os"]["pid"].as_u64().map(|p| p as u32);
    Ok((PathBuf::from(dir), pid))
}

/// Clock ticks per second in `/proc/PID/stat`: USER_HZ, 100 on Linux whatever the kernel's
/// own tick rate.
const USER_HZ: f64 = 100.0;

/// CPU time (user and system) the process has used so far, in microseconds.
fn cpu_us_of(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis,
    // where utime and stime are the 12th and 13th.
    let mut rest = s.get(s.rfind(')')? + 1..)?.split_whitespace();
    let utime: f64 = rest.nth(11)?.parse().ok()?;
    let stime: f64 = rest.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ * 1e6)
}

/// A `/proc/PID/status` field in kB, as bytes.
pub(crate) fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl Workload {
    pub fn all() -> Vec<Workload> {
        ALL.to_vec()
    }

    pub fn by_name(name: &str) -> Option<Workload> {
        ALL.iter().find(|w| w.name == name).copied()
    }

    /// Sets up, measures the fsync rate of the node's directory, then runs for `duration`
    /// with the clients spread over `addrs` (the first is the node set up and measured; the
    /// CPU time of every node that reports its process id is added up for `cpu_share`).
    pub async fn run(&self, addrs: &[String], duration: Duration) -> anyhow::Result<Outcome> {
        let addr = addrs[0].as_str();
        let client = Client::new(addr);
        client.post_json("/db/execute", serde_json::to_vec(&[CREATE])?).await?;
        if let Kind::Select(_) = self.kind {
            for b in 0..SELECT_ROWS / 1000 {
                client.post_json("/db/execute", batch_body(1000, b)).await?;
            }
        }
        let (dir, pid) = node_facts(&client).await?;
        // The disk's fsync speed drifts: measure it just before and just after the run, and
        // report the mean of the two.
        let probe = |dir: PathBuf| async move {
            tokio::task::spawn_blocking(move || crate::fsync::rate(&dir, Duration::from_secs(1))).await?
        };
        let fsync_before = probe(dir.clone()).await?;
        let mut others = Vec::new();
        for a in &addrs[1..] {
            others.push(node_facts(&Client::new(a)).await?.1);
        }
        let others_cpu = || others.iter().flatten().filter_map(|p| cpu_us_of(*p)).sum::<f64>();
        let others_before = others_cpu();
        let counted = pid.filter(|_| crate::node::under_callgrind());
        if let Some(p) = counted {
            crate::instructions::start(p)?;
        }
        let cpu_before = pid.and_then(cpu_us_of);
        let stop = Stop::After(duration);
        let mut out = match self.kind {
            Kind::Insert => {
                drive(addrs, self.clients, stop, |c, i| {
                    let body = json!([[INSERT, format!("c{c}-{i}"), i]]);
                    ("/db/execute".to_string(), serde_json::to_vec(&body).ok())
                })
                .await?
            }
            Kind::Batch(n) => {
                let mut o = drive(addrs, self.clients, stop, move |c, i| {
                    ("/db/execute".to_string(), Some(batch_body(n, c * 1_000_000 + i)))
                })
                .await?;
                o.rows = o.requests * n;
                o
            }
            Kind::Queued => {
                let mut o = drive(addrs, self.clients, stop, |c, i| {
                    let body = json!([[INSERT, format!("c{c}-{i}"), i]]);
                    ("/db/execute?queue".to_string(), serde_json::to_vec(&body).ok())
                })
                .await?;
                // Count the time until everything queued is written.
                let t = Instant::now();
                client.post_json("/db/execute?queue&wait", Vec::new()).await?;
                o.elapsed += t.elapsed();
                o
            }
            Kind::Select(level) => {
                let path = format!("/db/query?level={level}");
                drive(addrs, self.clients, stop, move |c, i| {
                    let id = (c * 7919 + i * 104_729) % SELECT_ROWS + 1;
                    let body = json!([["SELECT * FROM bench WHERE id=?", id]]);
                    (path.clone(), serde_json::to_vec(&body).ok())
                })
                .await?
            }
            Kind::Readyz => drive(addrs, self.clients, stop, |_, _| ("/readyz".to_string(), None)).await?,
            Kind::Load(rows) => {
                let mut o = drive(&addrs[..1], 1, Stop::Requests(rows / 1000), |_, i| {
                    ("/db/execute".to_string(), Some(batch_body(1000, i)))
                })
                .await?;
                o.rows = rows;
                o
            }
        };
        let cpu_after = pid.and_then(cpu_us_of);
        if let Some(p) = counted {
            out.instructions = Some(crate::instructions::stop(p)? as f64 / out.requests.max(1) as f64);
        }
        if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
            out.cpu_us = Some((a - b) / out.requests.max(1) as f64);
            if addrs.len() > 1 {
                let rest = others_cpu() - others_before;
                out.cpu_share = Some((a - b) / ((a - b) + rest).max(1.0));
            }
        }
        let fsync_after = probe(dir).await?;
        out.fsync_rate = Some((fsync_before + fsync_after) / 2.0);
        out.rss_bytes = pid.and_then(|p| status_bytes(p, "VmRSS"));
        out.anon_bytes = pid.and_then(|p| status_bytes(p, "RssAnon"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::status_bytes;

    #[test]
    fn reads_whole_status_fields_only() {
        let me = std::process::id();
        let rss = status_bytes(me, "VmRSS").expect("VmRSS");
        let anon = status_bytes(me, "RssAnon").expect("RssAnon");
        assert!(anon > 0 && anon <= rss, "anon {anon} rss {rss}");
        // A prefix of a field's name is not that field.
        assert_eq!(status_bytes(me, "VmRS"), None);
        assert_eq!(status_bytes(me, "NoSuchField"), None);
    }
}
