//! The Raft log and Raft's own durable state (vote, last purged), in redb.
//!
//! The committed index is not stored: the state machine records its applied index in the
//! database itself, and a new leader re-establishes the commit index with its first entry.
//!
//! One writer thread owns every redb write. `append` hands entries to it and returns at once;
//! the thread drains whatever has queued up since its last commit, writes it all in one redb
//! transaction and fsyncs once (group commit), and only then completes each batch's
//! `LogFlushed` callback. Entries that are handed over but not yet committed stay readable
//! through the `pending` overlay, so replication can read them before the fsync ends.
//!
//! Architecture invariant: `LogFlushed::log_io_completed(Ok)` is called only after the redb
//! commit holding those entries returned with `Durability::Immediate`.

use std::collections::BTreeMap;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_LAST_PURGED: &str = "last_purged";

/// Operations queued for the writer thread; more than this many in flight makes `append` wait.
const WRITER_QUEUE: usize = 4096;
/// At most this many queued operations go into one redb transaction.
const MAX_OPS_PER_COMMIT: usize = 1024;

enum Op {
    Append {
        records: Vec<(u64, Vec<u8>)>,
        /// Log id of every appended entry, to clear the overlay once durable.
        ids: Vec<LogId>,
        callback: LogFlushed<TypeConfig>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<io::Result<()>>,
    },
    SaveVote {
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
}

struct Shared {
    db: Database,
    /// Entries handed to the writer but not yet removed after their commit.
    pending: Mutex<BTreeMap<u64, Entry>>,
    last_purged: Mutex<Option<LogId>>,
    /// Set once a write fails: the log is then unusable and every later call fails.
    failed: Mutex<Option<String>>,
}

/// The Raft log store. Cheap to clone; clones share the database and the writer thread.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(io_err)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(io_err)
}

fn store_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, io_err(e))
}

fn logs_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    store_err(ErrorSubject::Logs, verb, e)
}

impl LogStore {
    /// Opens (or creates) the log at `path` and starts its writer thread.
    pub fn open(path: &Path) -> io::Result<LogStore> {
        let db = Database::builder().create(path).map_err(io_err)?;
        {
            let w = db.begin_write().map_err(io_err)?;
            w.open_table(LOGS).map_err(io_err)?;
            w.open_table(META).map_err(io_err)?;
            w.commit().map_err(io_err)?;
        }
        let last_purged = {
            let r = db.begin_read().map_err(io_err)?;
            let meta = r.open_table(META).map_err(io_err)?;
            match meta.get(KEY_LAST_PURGED).map_err(io_err)? {
                Some(v) => Some(decode::<LogId>(v.value())?),
                None => None,
            }
        };
        let shared = Arc::new(Shared {
            db,
            pending: Mutex::new(BTreeMap::new()),
            last_purged: Mutex::new(last_purged),
            failed: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let w = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(w, rx))?;
        Ok(LogStore { shared, tx })
    }

    fn check_failed(&self) -> io::Result<()> {
        match &*self.shared.failed.lock().unwrap() {
            Some(e) => Err(io::Error::other(format!("raft log failed earlier: {e}"))),
            None => Ok(()),
        }
    }

    async fn submit(&self, op: Op) -> io::Result<()> {
        self.tx
            .send(op)
            .await
            .map_err(|_| io::Error::other("raft log writer stopped"))
    }

    async fn submit_wait(&self, make: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Op) -> io::Result<()> {
        self.check_failed()?;
        let (done, rx) = oneshot::channel();
        self.submit(make(done)).await?;
        rx.await.map_err(|_| io::Error::other("raft log writer stopped"))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let r = self.shared.db.begin_read().map_err(io_err)?;
        let meta = r.open_table(META).map_err(io_err)?;
        match meta.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The last entry in the durable part of the log, if any.
    fn last_durable(&self) -> io::Result<Option<LogId>> {
        let r = self.shared.db.begin_read().map_err(io_err)?;
        let logs = r.open_table(LOGS).map_err(io_err)?;
        match logs.last().map_err(io_err)? {
            Some((_, v)) => Ok(Some(*decode::<Entry>(v.value())?.get_log_id())),
            None => Ok(None),
        }
    }

    /// Number of bytes the log file takes on disk.
    pub fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> io::Result<Vec<Entry>> {
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        // The overlay is read before the table: an entry leaves the overlay only after its
        // commit, so whatever is missing from the copy taken here is already in the table.
        let mut out: BTreeMap<u64, Entry> = self
            .shared
            .pending
            .lock()
            .unwrap()
            .range((Bound::Included(start), upper))
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        {
            let r = self.shared.db.begin_read().map_err(io_err)?;
            let logs = r.open_table(LOGS).map_err(io_err)?;
            let iter = match end {
                Some(end) => logs.range(start..end),
                None => logs.range(start..),
            }
            .map_err(io_err)?;
            for item in iter {
                let (k, v) = item.map_err(io_err)?;
                if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(k.value()) {
                    slot.insert(decode(v.value())?);
                }
            }
        }
        // The overlay and the table together must give a gap-free run; stop at the first gap.
        let mut result = Vec::with_capacity(out.len());
        let mut expect = None;
        for (i, e) in out {
            if let Some(x) = expect
                && i != x
            {
                break;
            }
            expect = Some(i + 1);
            result.push(e);
        }
        Ok(result)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e + 1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read_range(start, end).map_err(|e| logs_err(ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = *self.shared.last_purged.lock().unwrap();
        let last_pending = self
            .shared
            .pending
            .lock()
            .unwrap()
            .last_key_value()
            .map(|(_, e)| *e.get_log_id());
        let last = match last_pending {
            Some(id) => Some(id),
            None => self.last_durable().map_err(|e| logs_err(ErrorVerb::Read, e))?,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| store_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.submit_wait(|done| Op::SaveVote { bytes, done })
            .await
            .map_err(|e| store_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| store_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.check_failed().map_err(|e| logs_err(ErrorVerb::Write, e))?;
        let mut records = Vec::new();
        let mut ids = Vec::new();
        {
            let mut pending = self.shared.pending.lock().unwrap();
            for entry in entries {
                let id = *entry.get_log_id();
                records.push((id.index, encode(&entry).map_err(|e| logs_err(ErrorVerb::Write, e))?));
                ids.push(id);
                pending.insert(id.index, entry);
            }
        }
        self.submit(Op::Append { records, ids, callback })
            .await
            .map_err(|e| logs_err(ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.shared.pending.lock().unwrap().split_off(&log_id.index);
        self.submit_wait(|done| Op::Truncate {
            from: log_id.index,
            done,
        })
        .await
        .map_err(|e| logs_err(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.submit_wait(|done| Op::Purge { upto: log_id, done })
            .await
            .map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        *self.shared.last_purged.lock().unwrap() = Some(log_id);
        let mut pending = self.shared.pending.lock().unwrap();
        let keep = pending.split_off(&(log_id.index + 1));
        *pending = keep;
        Ok(())
    }
}

/// What to do once a group of operations is durable.
enum Completion {
    Flushed(LogFlushed<TypeConfig>, Vec<LogId>),
    Done(oneshot::Sender<io::Result<()>>),
}

fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Op>) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_OPS_PER_COMMIT {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(ops.len());
        let result = commit_ops(&shared, ops, &mut completions);
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
            *shared.failed.lock().unwrap() = Some(e.to_string());
        }
        for c in completions {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            match c {
                Completion::Flushed(cb, ids) => {
                    if r.is_ok() {
                        let mut pending = shared.pending.lock().unwrap();
                        for id in ids {
                            if pending.get(&id.index).map(|e| *e.get_log_id()) == Some(id) {
                                pending.remove(&id.index);
                            }
                        }
                    }
                    cb.log_io_completed(r);
                }
                Completion::Done(done) => {
                    let _ = done.send(r);
                }
            }
        }
    }
}

/// One write of a queued operation, separated from how its caller is told it is done.
enum Write {
    Insert(Vec<(u64, Vec<u8>)>),
    Truncate(u64),
    Purge(LogId),
    Meta(&'static str, Vec<u8>),
}

fn commit_ops(shared: &Shared, ops: Vec<Op>, completions: &mut Vec<Completion>) -> io::Result<()> {
    // Every caller gets its completion whatever happens below.
    let mut writes = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Append { records, ids, callback } => {
                writes.push(Write::Insert(records));
                completions.push(Completion::Flushed(callback, ids));
            }
            Op::Truncate { from, done } => {
                writes.push(Write::Truncate(from));
                completions.push(Completion::Done(done));
            }
            Op::Purge { upto, done } => {
                writes.push(Write::Purge(upto));
                completions.push(Completion::Done(done));
            }
            Op::SaveVote { bytes, done } => {
                writes.push(Write::Meta(KEY_VOTE, bytes));
                completions.push(Completion::Done(done));
            }
        }
    }
    if let Some(e) = &*shared.failed.lock().unwrap() {
        return Err(io::Error::other(format!("raft log failed earlier: {e}")));
    }
    let w = shared.db.begin_write().map_err(io_err)?;
    {
        let mut logs = w.open_table(LOGS).map_err(io_err)?;
        let mut meta = w.open_table(META).map_err(io_err)?;
        for write in writes {
            match write {
                Write::Insert(records) => {
                    for (index, bytes) in &records {
                        logs.insert(index, bytes.as_slice()).map_err(io_err)?;
                    }
                }
                Write::Truncate(from) => logs.retain_in(from.., |_, _| false).map_err(io_err)?,
                Write::Purge(upto) => {
                    logs.retain_in(..=upto.index, |_, _| false).map_err(io_err)?;
                    meta.insert(KEY_LAST_PURGED, encode(&upto)?.as_slice())
                        .map_err(io_err)?;
                }
                Write::Meta(key, bytes) => {
                    meta.insert(key, bytes.as_slice()).map_err(io_err)?;
                }
            }
        }
    }
    w.commit().map_err(io_err)
}
