//! The Raft log and Raft's own durable state (vote, last purged), in redb.
//!
//! Writes run in-line, in the calling task: openraft 0.9's core waits for each append to be
//! flushed before it does anything else, so handing the write to another thread would only add
//! two thread switches to every entry. Many client writes still share one fsync: the store's
//! proposer batches them into one entry before they reach Raft (see `store.rs`).
//!
//! The committed index is not stored: the state machine records its applied index in the
//! database itself, and a new leader re-establishes the commit index with its first entry.
//!
//! Architecture invariant: `LogFlushed::log_io_completed(Ok)` is called only after the redb
//! commit holding those entries returned with `Durability::Immediate`.

use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_LAST_PURGED: &str = "last_purged";

/// redb's page cache. Recent entries are what is read (replication, apply); redb's default of
/// 1 GiB would let memory grow with the log.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

struct Shared {
    db: Database,
    last_purged: Mutex<Option<LogId>>,
}

/// The Raft log store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
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

/// One durable redb transaction over the log and meta tables.
fn write(
    db: &Database,
    f: impl FnOnce(&mut redb::Table<u64, &[u8]>, &mut redb::Table<&str, &[u8]>) -> io::Result<()>,
) -> io::Result<()> {
    let w = db.begin_write().map_err(io_err)?;
    {
        let mut logs = w.open_table(LOGS).map_err(io_err)?;
        let mut meta = w.open_table(META).map_err(io_err)?;
        f(&mut logs, &mut meta)?;
    }
    w.commit().map_err(io_err)
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> io::Result<LogStore> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(io_err)?;
        write(&db, |_, _| Ok(()))?;
        let last_purged = {
            let r = db.begin_read().map_err(io_err)?;
            let meta = r.open_table(META).map_err(io_err)?;
            match meta.get(KEY_LAST_PURGED).map_err(io_err)? {
                Some(v) => Some(decode::<LogId>(v.value())?),
                None => None,
            }
        };
        Ok(LogStore {
            shared: Arc::new(Shared {
                db,
                last_purged: Mutex::new(last_purged),
            }),
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let r = self.shared.db.begin_read().map_err(io_err)?;
        let meta = r.open_table(META).map_err(io_err)?;
        match meta.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The last entry in the log, if any.
    fn last_entry_id(&self) -> io::Result<Option<LogId>> {
        let r = self.shared.db.begin_read().map_err(io_err)?;
        let logs = r.open_table(LOGS).map_err(io_err)?;
        match logs.last().map_err(io_err)? {
            Some((_, v)) => Ok(Some(*decode::<Entry>(v.value())?.get_log_id())),
            None => Ok(None),
        }
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> io::Result<Vec<Entry>> {
        let r = self.shared.db.begin_read().map_err(io_err)?;
        let logs = r.open_table(LOGS).map_err(io_err)?;
        let iter = match end {
            Some(end) => logs.range(start..end),
            None => logs.range(start..),
        }
        .map_err(io_err)?;
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item.map_err(io_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn append_entries(&self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let mut records = Vec::new();
        for entry in entries {
            records.push((entry.get_log_id().index, encode(&entry)?));
        }
        write(&self.shared.db, |logs, _| {
            for (index, bytes) in &records {
                logs.insert(index, bytes.as_slice()).map_err(io_err)?;
            }
            Ok(())
        })
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
        let last = self.last_entry_id().map_err(|e| logs_err(ErrorVerb::Read, e))?;
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
        write(&self.shared.db, |_, meta| {
            meta.insert(KEY_VOTE, bytes.as_slice()).map_err(io_err)?;
            Ok(())
        })
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
        match self.append_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "raft log write failed");
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(logs_err(ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        write(&self.shared.db, |logs, _| {
            logs.retain_in(log_id.index.., |_, _| false).map_err(io_err)
        })
        .map_err(|e| logs_err(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        fail::fail_point!("log-purge");
        write(&self.shared.db, |logs, meta| {
            logs.retain_in(..=log_id.index, |_, _| false).map_err(io_err)?;
            meta.insert(KEY_LAST_PURGED, bytes.as_slice()).map_err(io_err)?;
            Ok(())
        })
        .map_err(|e| logs_err(ErrorVerb::Delete, e))?;
        *self.shared.last_purged.lock().unwrap() = Some(log_id);
        Ok(())
    }
}
