//! Clients for fault tests: the register workload (linearizable and strong reads, writes,
//! compare-and-set) and the unique-insert workload, each request sent to a random node.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use super::register::{CasOutcome, History, RegOp};

/// Registers in the workload.
pub const KEYS: u32 = 8;

/// A client gives up on a request after this long; the node gives up forwarding sooner.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
const NODE_TIMEOUT: &str = "2s";

/// Counts of what clients did, for the report.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub unknown: AtomicU64,
}

impl Tally {
    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} failed (no effect), {} unknown",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed)
        )
    }
}

/// Inserts' ids by what their clients know of them.
#[derive(Default)]
pub struct Inserts {
    pub acked: Mutex<BTreeSet<i64>>,
    pub unknown: Mutex<BTreeSet<i64>>,
    /// Refused before being logged: must never appear.
    pub refused: Mutex<BTreeSet<i64>>,
}

pub struct Clients {
    pub http: reqwest::Client,
    /// Every node's HTTP address.
    pub nodes: Vec<String>,
    pub stop: AtomicBool,
    pub history: History,
    pub reads: Tally,
    pub writes: Tally,
    pub cases: Tally,
    pub inserts: Tally,
    pub inserted: Inserts,
    /// Reads of an insert just acknowledged, at `none` with its `min_index`, on a random node.
    pub own_reads: Tally,
    /// Such reads that did not see the insert: `(id, index, node)`.
    pub own_reads_missed: Mutex<Vec<(i64, u64, String)>>,
}

impl Clients {
    pub fn new(nodes: Vec<String>) -> Arc<Clients> {
        Arc::new(Clients {
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .expect("client"),
            nodes,
            stop: AtomicBool::new(false),
            history: History::new(),
            reads: Tally::default(),
            writes: Tally::default(),
            cases: Tally::default(),
            inserts: Tally::default(),
            inserted: Inserts::default(),
            own_reads: Tally::default(),
            own_reads_missed: Mutex::default(),
        })
    }

    /// POSTs `body` to a random node and classifies the answer.
    async fn send(&self, path: &str, body: String) -> Answer {
        self.send_to_any(path, body).await.0
    }

    /// As `send`, also returning the node asked and the answer's `X-RQLITE-RAFT-INDEX`.
    async fn send_to_any(&self, path: &str, body: String) -> (Answer, String, Option<u64>) {
        let node = self.nodes[rand::rng().random_range(0..self.nodes.len())].clone();
        let (answer, index) = self.send_to(&node, path, body).await;
        (answer, node, index)
    }

    async fn send_to(&self, node: &str, path: &str, body: String) -> (Answer, Option<u64>) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("http://{node}{path}{sep}timeout={NODE_TIMEOUT}");
        let resp = match self.http.post(url).body(body).send().await {
            Ok(r) => r,
            // Nothing reached the node.
            Err(e) if e.is_connect() => return (Answer::Refused, None),
            Err(_) => return (Answer::Unknown, None),
        };
        // No leader: nothing was logged (see `Answer::Refused`).
        if resp.status() == 503 {
            return (Answer::Refused, None);
        }
        if resp.status() != 200 {
            return (Answer::Unknown, None);
        }
        let index = resp
            .headers()
            .get("x-rqlite-raft-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let Ok(v) = resp.json::<Value>().await else {
            return (Answer::Unknown, None);
        };
        let answer = match v["results"].get(0) {
            Some(first) if v.get("error").is_none() && first.get("error").is_none() => Answer::Done(first.clone()),
            _ => Answer::Unknown,
        };
        (answer, index)
    }

    /// After a failed request a client waits a little, as real clients do, which also keeps
    /// the history (and the checker's search) to a sensible size.
    async fn back_off(&self) {
        let ms = rand::rng().random_range(100..300);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Time between a client's requests.
    async fn think(&self) {
        let ms = rand::rng().random_range(5..25);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// What became of a request.
pub enum Answer {
    /// Answered without error: the first statement's result.
    Done(Value),
    /// Refused before anything was logged: the node could not be reached, or had no leader
    /// (503). A write refused this way took no effect.
    Refused,
    /// No clear answer: a write may or may not have taken effect.
    Unknown,
}

impl Answer {
    fn done(self) -> Option<Value> {
        match self {
            Answer::Done(v) => Some(v),
            _ => None,
        }
    }
}

fn rows_affected(r: &Value) -> i64 {
    r.get("rows_affected").and_then(Value::as_i64).unwrap_or(0)
}

/// Reads an acknowledged insert back on a random node at `none`, naming the index that made it
/// visible: the node must wait for it, so the row must be there. A node that cannot answer in
/// time says so, which is no violation.
async fn read_own_insert(c: &Clients, id: i64, index: u64) {
    let body = format!(r#"[["SELECT COUNT(*) FROM ins WHERE id=?", {id}]]"#);
    let (got, node, _) = c
        .send_to_any(&format!("/db/query?level=none&min_index={index}"), body)
        .await;
    match got.done().and_then(|r| r["values"][0][0].as_i64()) {
        Some(1) => {
            c.own_reads.ok.fetch_add(1, Ordering::Relaxed);
        }
        Some(_) => c.own_reads_missed.lock().unwrap().push((id, index, node)),
        None => {
            c.own_reads.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One register client: random operations on random keys until told to stop. Written values
/// are unique (`client * 10^9 + n`), which keeps the checker's search small.
pub async fn register_client(c: Arc<Clients>, client: u32) {
    let mut seen = [0i64; KEYS as usize];
    let mut n = 0i64;
    while !c.stop.load(Ordering::Relaxed) {
        let (key, kind) = {
            let mut rng = rand::rng();
            (rng.random_range(0..KEYS), rng.random_range(0..4u8))
        };
        n += 1;
        let value = i64::from(client + 1) * 1_000_000_000 + n;
        let call = c.history.now();
        match kind {
            0 | 1 => {
                let level = if kind == 0 { "linearizable" } else { "strong" };
                let body = format!(r#"[["SELECT v FROM reg WHERE k=?", {key}]]"#);
                let got = c.send(&format!("/db/query?level={level}"), body).await.done();
                let ret = c.history.now();
                match got.and_then(|r| r["values"][0][0].as_i64()) {
                    Some(v) => {
                        c.reads.ok.fetch_add(1, Ordering::Relaxed);
                        seen[key as usize] = v;
                        c.history.record(client, call, Some(ret), RegOp::Read { key, value: v });
                    }
                    // A failed read changes nothing and is left out.
                    None => {
                        c.reads.failed.fetch_add(1, Ordering::Relaxed);
                        c.back_off().await;
                    }
                }
            }
            2 => {
                let body = format!(r#"[["UPDATE reg SET v=? WHERE k=?", {value}, {key}]]"#);
                let got = c.send("/db/execute", body).await;
                let ret = c.history.now();
                let op = RegOp::Write { key, value };
                match got {
                    Answer::Done(r) if rows_affected(&r) == 1 => {
                        c.writes.ok.fetch_add(1, Ordering::Relaxed);
                        seen[key as usize] = value;
                        c.history.record(client, call, Some(ret), op);
                    }
                    Answer::Refused => {
                        c.writes.failed.fetch_add(1, Ordering::Relaxed);
                        c.back_off().await;
                    }
                    _ => {
                        c.writes.unknown.fetch_add(1, Ordering::Relaxed);
                        c.history.record(client, call, None, op);
                        c.back_off().await;
                    }
                }
            }
            _ => {
                let from = seen[key as usize];
                let body = format!(r#"[["UPDATE reg SET v=? WHERE k=? AND v=?", {value}, {key}, {from}]]"#);
                let got = c.send("/db/execute", body).await;
                let ret = c.history.now();
                let (outcome, ret) = match got {
                    Answer::Done(r) if rows_affected(&r) == 1 => {
                        seen[key as usize] = value;
                        (CasOutcome::Applied, Some(ret))
                    }
                    Answer::Done(_) => (CasOutcome::Refused, Some(ret)),
                    Answer::Refused => {
                        c.cases.failed.fetch_add(1, Ordering::Relaxed);
                        c.back_off().await;
                        continue;
                    }
                    Answer::Unknown => {
                        c.back_off().await;
                        (CasOutcome::Unknown, None)
                    }
                };
                let tally = match outcome {
                    CasOutcome::Unknown => &c.cases.unknown,
                    _ => &c.cases.ok,
                };
                tally.fetch_add(1, Ordering::Relaxed);
                c.history.record(
                    client,
                    call,
                    ret,
                    RegOp::Cas {
                        key,
                        from,
                        to: value,
                        outcome,
                    },
                );
            }
        }
        c.think().await;
    }
}

/// One insert client: inserts unique ids until told to stop.
pub async fn insert_client(c: Arc<Clients>, client: u32) {
    let mut n = 0i64;
    while !c.stop.load(Ordering::Relaxed) {
        n += 1;
        let id = i64::from(client + 1) * 1_000_000_000 + n;
        let (got, _, index) = c
            .send_to_any("/db/execute", format!(r#"[["INSERT INTO ins(id) VALUES(?)", {id}]]"#))
            .await;
        match got {
            Answer::Done(r) if rows_affected(&r) == 1 => {
                c.inserts.ok.fetch_add(1, Ordering::Relaxed);
                c.inserted.acked.lock().unwrap().insert(id);
                if let Some(index) = index {
                    read_own_insert(&c, id, index).await;
                }
            }
            Answer::Refused => {
                c.inserts.failed.fetch_add(1, Ordering::Relaxed);
                c.inserted.refused.lock().unwrap().insert(id);
                c.back_off().await;
            }
            _ => {
                c.inserts.unknown.fetch_add(1, Ordering::Relaxed);
                c.inserted.unknown.lock().unwrap().insert(id);
                c.back_off().await;
            }
        }
        c.think().await;
    }
}
