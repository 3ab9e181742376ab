//! Linearizable reads on followers and read replicas, by Raft's ReadIndex.
//!
//! A follower asked for a `linearizable` read asks the leader for a read index, sending its
//! saved vote (openraft saves a vote before it answers the request that granted it). The leader
//! answers with its applied index, which holds every write it or an earlier leader
//! acknowledged, once it knows that no newer leader can have been elected before the request
//! was sent:
//!
//! - when the leader and the asker (if it votes) make a quorum of every configuration (three
//!   voters, or a sole voter), the asker's vote equals the leader's committed vote, and the
//!   leader has saved no other vote since: a newer leader would have needed the vote of one of
//!   the two, which would then have saved a newer one (the asker before sending, or the leader
//!   before answering). The leader checks this without its Raft core, which it asks for its
//!   configuration only when that may have changed (`Store::asker_makes_the_quorum`);
//! - otherwise, or for a read replica, with a quorum round, exactly as for the leader's own
//!   linearizable reads (and in the same rounds).
//!
//! The follower waits until it has applied that index and runs the read on its own read
//! connection.
//!
//! Reads waiting on one follower share a request, but only one sent after they arrived: a read
//! that arrives while a request is out waits for the next one, since the leader may have
//! confirmed its leadership for the request in flight before the read arrived, and a write
//! acknowledged in between would be missed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::types::Vote;

/// Who asks for a read index: the asking node's Raft id and the vote it had saved when it asked
/// (not the metrics' vote, which may trail it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadIndexAsk {
    pub from: u64,
    pub vote: Vote,
}

/// Asks the leader at a node-to-node address for a read index, within a timeout.
pub type ReadIndexSource =
    Arc<dyn Fn(String, ReadIndexAsk, Duration) -> BoxFuture<'static, Result<u64, StoreError>> + Send + Sync>;

/// Longest a read-index request to the leader may take; each read is also bound by its own
/// timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Waiter = oneshot::Sender<Result<u64, StoreError>>;

/// The reads waiting for a read index, and whether a request is out.
#[derive(Default)]
struct Batch {
    running: bool,
    waiting: Vec<Waiter>,
}

pub(crate) struct FollowerReads {
    source: ReadIndexSource,
    batch: Mutex<Batch>,
}

impl FollowerReads {
    pub(crate) fn new(source: ReadIndexSource) -> FollowerReads {
        FollowerReads {
            source,
            batch: Mutex::default(),
        }
    }

    /// Joins the next request for a read index. Returns the receiver of its answer, and
    /// whether the caller must start the requests (none is running).
    pub(crate) fn join(&self) -> (oneshot::Receiver<Result<u64, StoreError>>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        b.waiting.push(tx);
        let start = !std::mem::replace(&mut b.running, true);
        (rx, start)
    }

    /// Sends requests until no read waits: each answers the reads that were waiting when it
    /// was sent. `ask` names the leader's node-to-node address and this node's ask at the time
    /// of each request.
    pub(crate) async fn run<F, Fut>(&self, ask: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(String, ReadIndexAsk), StoreError>>,
    {
        loop {
            let batch = {
                let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
                if b.waiting.is_empty() {
                    b.running = false;
                    return;
                }
                std::mem::take(&mut b.waiting)
            };
            let answer = match ask().await {
                Ok((addr, a)) => (self.source)(addr, a, REQUEST_TIMEOUT).await,
                Err(e) => Err(e),
            };
            for w in batch {
                let _ = w.send(answer.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn a_read_that_arrives_during_a_request_waits_for_the_next() {
        let sent = Arc::new(AtomicU64::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(0u64);
        let s = sent.clone();
        let source: ReadIndexSource = Arc::new(move |_, _, _| {
            let n = s.fetch_add(1, Ordering::SeqCst) + 1;
            let mut rx = release_rx.clone();
            Box::pin(async move {
                // Each request answers with its own number once released.
                let _ = rx.wait_for(|r| *r >= n).await;
                Ok(n * 100)
            })
        });
        let fr = Arc::new(FollowerReads::new(source));
        let (first, start) = fr.join();
        assert!(start);
        let runner = {
            let fr = fr.clone();
            let ask = ReadIndexAsk {
                from: 2,
                vote: Vote::default(),
            };
            tokio::spawn(async move { fr.run(|| async move { Ok(("leader".to_string(), ask)) }).await })
        };
        while sent.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Two reads arrive while the first request is out: they share the second.
        let (a, start_a) = fr.join();
        let (b, start_b) = fr.join();
        assert!(!start_a && !start_b);
        release_tx.send(1).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 100);
        release_tx.send(2).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), 200);
        assert_eq!(b.await.unwrap().unwrap(), 200);
        runner.await.unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        // With nothing waiting the runner stopped; the next read starts a new one.
        assert!(fr.join().1);
    }
}
