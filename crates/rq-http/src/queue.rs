//! Queued writes (`/db/execute?queue`): acknowledged at once with a sequence number, then
//! batched into single log entries in the background.
//!
//! The queue holds at most `capacity` requests; a full queue makes the HTTP request wait, which
//! is how load pushes back. A batch is sent when it holds `batch_size` requests or its first
//! request has waited `timeout`. A batch that fails is retried every second until it is
//! written or the process stops: these writes were acknowledged, so they are never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rq_proto::{Request, Statement};
use rq_store::stats::ExpvarMap;
use rq_store::{Forward, SqlOptions, Store, StoreError};

use crate::Cluster;
use tokio::sync::{mpsc, oneshot};

/// Longest wait for the leader to write a batch sent to it.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts to write a failed batch.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub capacity: usize,
    pub batch_size: usize,
    pub timeout: Duration,
    /// Run each batch in one transaction (`-write-queue-tx`).
    pub transaction: bool,
}

struct Item {
    statements: Vec<Statement>,
    seq: i64,
    done: Option<oneshot::Sender<()>>,
}

pub struct WriteQueue {
    tx: mpsc::Sender<Item>,
    next_seq: AtomicI64,
    /// Sequence number of the last request written to the log.
    written: Arc<AtomicI64>,
}

impl WriteQueue {
    pub fn start(store: Store, cluster: Arc<dyn Cluster>, cfg: QueueConfig, stats: Arc<ExpvarMap>) -> WriteQueue {
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let written = Arc::new(AtomicI64::new(0));
        tokio::spawn(flush_loop(store, cluster, cfg, rx, written.clone(), stats));
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(1);
        WriteQueue {
            tx,
            next_seq: AtomicI64::new(start),
            written,
        }
    }

    /// Queues statements; returns their sequence number and, if `wait`, a receiver that fires
    /// once they are written.
    pub async fn enqueue(&self, statements: Vec<Statement>, wait: bool) -> (i64, Option<oneshot::Receiver<()>>) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, rx) = if wait {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let item = Item { statements, seq, done };
        // The receiver lives as long as the process; a send can only fail during shutdown.
        let _ = self.tx.send(item).await;
        (seq, rx)
    }

    /// The last sequence number written to the log (0 before the first).
    pub fn written(&self) -> i64 {
        self.written.load(Ordering::Relaxed)
    }
}

async fn flush_loop(
    store: Store,
    cluster: Arc<dyn Cluster>,
    cfg: QueueConfig,
    mut rx: mpsc::Receiver<Item>,
    written: Arc<AtomicI64>,
    stats: Arc<ExpvarMap>,
) {
    let queue_stats = store.stats().clone();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        let mut timed_out = false;
        while batch.len() < cfg.batch_size.max(1) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) => break,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        queue_stats
            .queue
            .add(if timed_out { "num_timeout" } else { "num_flush" }, 1);
        queue_stats.queue.add("objects_rx", batch.len() as i64);
        let statements: Vec<Statement> = batch.iter().flat_map(|i| i.statements.iter().cloned()).collect();
        let n = statements.len() as i64;
        if !statements.is_empty() {
            let req = Request {
                transaction: cfg.transaction,
                statements,
                ..Default::default()
            };
            loop {
                let sql = SqlOptions::default();
                let result = match store.execute(req.clone(), sql).await {
                    // Queued writes received by a follower are sent to the leader in batches.
                    Err(StoreError::NotLeader { leader: Some(l) }) => {
                        let f = Forward::Execute {
                            request: req.clone(),
                            sql,
                        };
                        // As in rqlite, a queued batch goes to the leader without credentials.
                        cluster.forward(&l.addr, f, None, FORWARD_TIMEOUT).await
                    }
                    other => other,
                };
                match result {
                    Ok(_) => {
                        stats.add("queued_executions_ok", 1);
                        stats.add("queued_executions_num_stmts_tx", n);
                        break;
                    }
                    Err(e) => {
                        stats.add(
                            match e {
                                StoreError::NotLeader { leader: None } => "queued_executions_no_leader",
                                StoreError::NotLeader { .. } => "queued_executions_not_leader",
                                _ => "queued_executions_unknown_error",
                            },
                            1,
                        );
                        stats.add("queued_executions_failed", 1);
                        tracing::warn!(error = %e, "queued write batch failed; retrying");
                        tokio::time::sleep(RETRY_INTERVAL).await;
                    }
                }
            }
        }
        queue_stats.queue.add("objects_tx", batch.len() as i64);
        if let Some(last) = batch.last() {
            written.fetch_max(last.seq, Ordering::Relaxed);
        }
        for item in batch {
            if let Some(d) = item.done {
                let _ = d.send(());
            }
        }
    }
}
