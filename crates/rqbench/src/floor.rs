//! The floor (`--floor`): the least an HTTP node can cost on this machine, measured with the
//! same workloads and in the same run as `rqlited`.
//!
//! `rqbench --serve-floor DIR` is a plain hyper server on a tokio runtime of the shape
//! `rqlited` uses (one async worker fewer than the cores, at least one). It does no SQL and no
//! consensus: `POST /db/execute` appends the body to a preallocated file in `DIR` and
//! fdatasyncs it (requests that arrive during a sync share the next one, as a group commit
//! does), every other request gets a fixed answer at once. `/status` names `DIR` and the
//! process, so the workloads set up, probe the disk and count CPU time as they do for a node.
//!
//! With `--floor-sql` the server also runs each request's SQL (`sql.rs`): the least a node that
//! runs its statements on SQLite can cost.

mod sql;

use std::convert::Infallible;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::client::Client;

/// Size of the preallocated file the writes go into, round and round.
const LOG_BYTES: u64 = 64 << 20;
/// The answer to a write, as `rqlited` gives one for a single-row INSERT.
const WROTE: &[u8] = br#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#;
/// The answer to anything else.
const READ: &[u8] = br#"{"results":[{"columns":["id"],"types":["integer"],"values":[[1]]}]}"#;

/// The log the writes go into: one sync at a time, and the writes that arrive during it wait
/// for the next.
struct Log {
    file: File,
    state: Mutex<LogState>,
    /// Where the statements run, with `--floor-sql`.
    sql: Option<sql::Sqlite>,
}

/// A write waiting for a sync, and where its answer goes.
type Waiting = (Bytes, oneshot::Sender<Bytes>);

struct LogState {
    offset: u64,
    syncing: bool,
    waiting: Vec<Waiting>,
}

impl Log {
    fn create(dir: &Path, sql: Option<sql::Sqlite>) -> std::io::Result<Log> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("floor.log"))?;
        // Written and synced in full first, so an append's fdatasync has no metadata to write.
        let zeros = vec![0u8; 1 << 20];
        for at in (0..LOG_BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, at)?;
        }
        file.sync_all()?;
        Ok(Log {
            file,
            state: Mutex::new(LogState {
                offset: 0,
                syncing: false,
                waiting: Vec::new(),
            }),
            sql,
        })
    }

    /// Appends `body` and returns its answer once it is synced. The request that finds no sync
    /// running leads one: it first lets the requests already readable be read (so they queue
    /// behind it), then syncs them with its own. Requests that queue during that sync are synced
    /// together after it, by a task of their own.
    async fn append(self: &Arc<Self>, body: Bytes) -> std::io::Result<Bytes> {
        let queued = {
            let mut s = self.state.lock().unwrap();
            if s.syncing {
                let (tx, rx) = oneshot::channel();
                s.waiting.push((body, tx));
                Ok(rx)
            } else {
                s.syncing = true;
                Err(body)
            }
        };
        let body = match queued {
            Ok(rx) => return rx.await.map_err(|_| std::io::Error::other("the sync was dropped")),
            Err(body) => body,
        };
        tokio::task::yield_now().await;
        let batch = std::mem::take(&mut self.state.lock().unwrap().waiting);
        let own = self.sync_and_answer(Some(body), batch)?;
        if let Some(batch) = self.next_batch() {
            let log = self.clone();
            tokio::spawn(async move { log.drain(batch).await });
        }
        Ok(own.unwrap_or_default())
    }

    /// Syncs batches until no request waits.
    async fn drain(&self, mut batch: Vec<Waiting>) {
        loop {
            if let Err(e) = self.sync_and_answer(None, batch) {
                eprintln!("floor: write failed: {e}");
                std::process::exit(1);
            }
            // Let the requests that arrived meanwhile be read, so they share the next sync.
            tokio::task::yield_now().await;
            match self.next_batch() {
                Some(b) => batch = b,
                None => return,
            }
        }
    }

    /// Syncs `own` (the leading request's body) and `batch`, runs their SQL (with
    /// `--floor-sql`), answers `batch` and returns `own`'s answer.
    fn sync_and_answer(&self, own: Option<Bytes>, batch: Vec<Waiting>) -> std::io::Result<Option<Bytes>> {
        let leading = own.is_some();
        let bodies: Vec<Bytes> = own.into_iter().chain(batch.iter().map(|(b, _)| b.clone())).collect();
        self.sync_round(&bodies)?;
        let mut answers = match &self.sql {
            Some(db) => db.execute(&bodies),
            None => vec![Bytes::from_static(WROTE); bodies.len()],
        }
        .into_iter();
        let own = if leading { answers.next() } else { None };
        for ((_, tx), answer) in batch.into_iter().zip(answers) {
            let _ = tx.send(answer);
        }
        Ok(own)
    }

    /// The requests waiting for a sync, or none (and no sync running any more).
    fn next_batch(&self) -> Option<Vec<Waiting>> {
        let mut s = self.state.lock().unwrap();
        if s.waiting.is_empty() {
            s.syncing = false;
            None
        } else {
            Some(std::mem::take(&mut s.waiting))
        }
    }

    /// Writes `bodies` one after another and fdatasyncs them.
    fn sync_round(&self, bodies: &[Bytes]) -> std::io::Result<()> {
        let mut offset = self.state.lock().unwrap().offset;
        for b in bodies {
            if offset + b.len() as u64 > LOG_BYTES {
                offset = 0;
            }
            self.file.write_all_at(b, offset)?;
            offset += b.len() as u64;
        }
        self.file.sync_data()?;
        self.state.lock().unwrap().offset = offset;
        Ok(())
    }
}

async fn answer(req: Request<Incoming>, log: Arc<Log>, status: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let write = req.method() == Method::POST && req.uri().path() == "/db/execute";
    let is_status = req.uri().path() == "/status";
    let is_query = req.method() == Method::POST && req.uri().path() == "/db/query";
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let out = if is_status {
        status
    } else if write {
        match log.append(body).await {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("floor: write failed: {e}");
                std::process::exit(1);
            }
        }
    } else if let (Some(db), true) = (&log.sql, is_query) {
        db.query(&body)
    } else {
        Bytes::from_static(READ)
    };
    Ok(Response::builder()
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(out))
        .expect("a valid response"))
}

/// `--serve-floor DIR`: serves on `addr` until killed; runs each request's SQL if `sql`.
pub fn serve(dir: &Path, addr: &str, sql: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let db = if sql { Some(sql::Sqlite::open(dir)?) } else { None };
    let log = Arc::new(Log::create(dir, db)?);
    let status = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "store": {"dir": dir},
        "os": {"pid": std::process::id()},
    }))?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.saturating_sub(1).max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let (log, status) = (log.clone(), status.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, log.clone(), status.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

/// A floor server started from this binary, stopped when dropped.
pub struct Floor {
    child: std::process::Child,
    dir: PathBuf,
    pub addr: String,
}

impl Floor {
    /// Starts one; it runs each request's SQL if `sql`.
    pub async fn start(sql: bool) -> anyhow::Result<Floor> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("rqbench-floor-{}-{port}", std::process::id()));
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("--serve-floor").arg(&dir).arg("-a").arg(&addr);
        if sql {
            command.arg("--floor-sql");
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot start the floor server")?;
        let floor = Floor { child, dir, addr };
        let client = Client::new(&floor.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get("/readyz").await.is_err() {
            if Instant::now() > deadline {
                bail!("the floor server did not start");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(floor)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_lands_once_and_the_log_ends_idle() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::create(dir.path(), None).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..64 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let body = Bytes::from(format!("<write {i}>"));
                    assert_eq!(log.append(body.clone()).await.unwrap(), WROTE);
                    let mut head = vec![0u8; 4096];
                    log.file.read_at(&mut head, 0).unwrap();
                    assert!(head.windows(body.len()).any(|w| w == body), "write {i} is written");
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let written = std::fs::read(dir.path().join("floor.log")).unwrap();
        let text = String::from_utf8_lossy(&written[..4096]);
        for i in 0..64 {
            assert_eq!(text.matches(&format!("<write {i}>")).count(), 1, "write {i}");
        }
        let s = log.state.lock().unwrap();
        assert!(!s.syncing && s.waiting.is_empty());
    }
}
