//! The SQLite state machine: one writer thread applies committed entries; snapshots are
//! consistent copies of the database file.
//!
//! Architecture invariant: the state (`SmState`: last applied log id, membership, load progress)
//! is recorded beside the database file each time the file is made to hold exactly the entries
//! applied so far: at a completed checkpoint, and when the file is replaced (see rq-db's
//! `file_state`). After any crash the file holds exactly the recorded state, its WAL is
//! discarded, and openraft replays only the entries after it.
//!
//! Architecture invariant: a snapshot's read transaction is begun on the write side, between
//! two applies, and its metadata is the state applied at that moment, so the copy holds exactly
//! the entries up to `meta.last_log_id`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use rq_db::{Database, Work};
use rq_proto::{Applied, Command, LoadChunk, Logged, StmtResult};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::log_store::Durable;
use crate::snapshot::SnapshotStore;
use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// Batches queued for the writer thread before `apply` waits.
const APPLY_QUEUE: usize = 64;

/// Entries with at most this many statements in all are applied on the calling task rather
/// than handed to the writer thread: a few small inserts take less time than the two thread
/// switches of the hand-off.
const INLINE_STATEMENTS: usize = 64;

/// How long an in-line apply may hold the calling thread before it is undone and handed to the
/// writer thread: a few small inserts take tens of microseconds.
const INLINE_APPLY_BUDGET: Duration = Duration::from_millis(1);

/// What the database holds: recorded beside the file at each checkpoint, kept in memory between.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// A database file being loaded piece by piece, if one is under way.
    pub load: Option<LoadProgress>,
}

/// How far a load has come: the pieces of load `id` before `next_seq` are in the staging
/// file, which holds exactly `bytes` bytes of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProgress {
    pub id: u64,
    pub next_seq: u64,
    pub bytes: u64,
}

impl SmState {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("state encodes")
    }

    pub fn decode(b: &[u8]) -> io::Result<SmState> {
        if b.is_empty() {
            return Ok(SmState::default());
        }
        postcard::from_bytes(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// The state a snapshot's database holds.
    pub fn of_snapshot(meta: &SnapshotMeta) -> SmState {
        SmState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            load: None,
        }
    }
}

/// Facts about the applied state other components read without asking the writer thread.
#[derive(Debug, Default)]
pub struct AppliedInfo {
    pub state: SmState,
    /// Wall-clock milliseconds of the last apply.
    pub last_apply_ms: u64,
    /// When the leader logged the last applied command (its clock, Unix ms); 0 if none since
    /// start.
    pub last_appended_at_ms: u64,
    /// The write connection's reported pragmas, read when it was opened.
    pub rw_pragmas: BTreeMap<String, String>,
    /// The index of the last applied entry that could change the database (writes and loads,
    /// not reads through the log, no-ops or membership changes), as rqlite's
    /// `db_applied_index`. After a start or a snapshot install it is the last applied index.
    pub db_applied_index: u64,
}

enum Op {
    Apply {
        entries: Vec<Entry>,
        reply: oneshot::Sender<io::Result<Vec<Applied>>>,
    },
    /// Copy the WAL into the database file (see `Database::checkpoint`).
    Checkpoint { reply: oneshot::Sender<io::Result<bool>> },
    /// Take `state` with no entries applied, and record it (recovery).
    ForceState {
        state: SmState,
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// Replace the database with a booted file, keeping the current state.
    Boot {
        path: PathBuf,
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// Replace the database with a snapshot file holding `state`.
    Install {
        path: PathBuf,
        state: SmState,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// The write connection and what goes with it; the writer thread holds it for each operation,
/// and a small apply takes it on the calling task.
struct Writer {
    db: Database,
    path: PathBuf,
    applied: Arc<Mutex<AppliedInfo>>,
    on_replaced: Box<dyn Fn() + Send>,
    /// The change data capture queue, synced before each snapshot.
    cdc: Option<Arc<crate::cdc::CdcQueue>>,
}

/// The state machine handle openraft drives. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    tx: mpsc::Sender<Op>,
    writer: Arc<Mutex<Writer>>,
    applied: Arc<Mutex<AppliedInfo>>,
    snapshots: Arc<SnapshotStore>,
    db_path: PathBuf,
    /// The Raft log's durable end, when entries may be committed before they are on disk
    /// here (a leader's own, flushed in the background): nothing is applied before it.
    log_durable: Option<watch::Receiver<Durable>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, io::Error::other(e.to_string()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl StateMachine {
    /// Starts the writer thread on the database at `db_path`, which holds `state`.
    /// `on_replaced` runs on the writer thread each time the database file is swapped for a
    /// snapshot (to reset readers).
    pub fn open(
        db: Database,
        state: SmState,
        db_path: &Path,
        snapshots: Arc<SnapshotStore>,
        on_replaced: Box<dyn Fn() + Send>,
    ) -> io::Result<StateMachine> {
        if state.load.is_none() {
            let _ = std::fs::remove_file(staging_path(db_path));
        }
        let applied = Arc::new(Mutex::new(AppliedInfo {
            db_applied_index: state.last_applied.map_or(0, |l| l.index),
            state,
            last_apply_ms: 0,
            last_appended_at_ms: 0,
            rw_pragmas: db.pragmas(),
        }));
        let (tx, rx) = mpsc::channel(APPLY_QUEUE);
        let writer = Arc::new(Mutex::new(Writer {
            db,
            path: db_path.to_path_buf(),
            applied: applied.clone(),
            on_replaced,
            cdc: None,
        }));
        let w = writer.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(w, rx))?;
        Ok(StateMachine {
            tx,
            writer,
            applied,
            snapshots,
            db_path: db_path.to_path_buf(),
            log_durable: None,
        })
    }

    /// The change data capture queue the database's capture sink appends to: synced before
    /// every snapshot, so the log entries a snapshot lets go of have their changes on disk.
    pub fn set_cdc_queue(&self, q: Arc<crate::cdc::CdcQueue>) {
        self.writer.lock().unwrap().cdc = Some(q);
    }

    /// Applies entries only once the Raft log has them on disk (`durable`).
    pub fn wait_for_log(&mut self, durable: watch::Receiver<Durable>) {
        self.log_durable = Some(durable);
    }

    /// The last applied log id and membership.
    pub fn state(&self) -> SmState {
        self.applied.lock().unwrap().state.clone()
    }

    /// The last entry applied (without copying the rest of the state).
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied.lock().unwrap().state.last_applied
    }

    /// See `AppliedInfo::db_applied_index`.
    pub fn db_applied_index(&self) -> u64 {
        self.applied.lock().unwrap().db_applied_index
    }

    /// Wall-clock milliseconds of the most recent apply (0 if none since start).
    pub fn last_apply_ms(&self) -> u64 {
        self.applied.lock().unwrap().last_apply_ms
    }

    /// Local time of the most recent apply and the leader's time of logging the last applied
    /// command, both Unix ms (0 if none since start).
    pub fn apply_times(&self) -> (u64, u64) {
        let a = self.applied.lock().unwrap();
        (a.last_apply_ms, a.last_appended_at_ms)
    }

    /// The write connection's reported pragmas.
    pub fn rw_pragmas(&self) -> BTreeMap<String, String> {
        self.applied.lock().unwrap().rw_pragmas.clone()
    }

    /// Records `membership` as the configuration as of `last` (cluster recovery), with the
    /// applied index set to `last`.
    pub async fn force_membership(
        &self,
        last: Option<LogId>,
        membership: openraft::Membership<u64, crate::types::NodeInfo>,
    ) -> io::Result<()> {
        let mut state = self.state();
        state.last_applied = last;
        state.membership = StoredMembership::new(last, membership);
        let (reply, rx) = oneshot::channel();
        self.call(Op::ForceState { state, reply }, rx).await
    }

    /// Replaces the database with the (validated) SQLite file at `path`, bypassing the log; the
    /// database keeps recording the current applied index.
    pub async fn boot(&self, path: PathBuf) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.call(Op::Boot { path, reply }, rx).await
    }

    /// Checkpoints the WAL on the writer thread; `Ok(false)` if readers kept it from finishing.
    pub async fn checkpoint(&self) -> io::Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.call(Op::Checkpoint { reply }, rx).await
    }

    /// Builds a snapshot of the database as applied now.
    pub async fn build_snapshot(&self) -> io::Result<Snapshot> {
        let this = self.clone();
        self.snapshots.build(move || this.pin_for_snapshot()).await
    }

    /// Begins the read transaction a snapshot is copied from, between two applies, and returns
    /// it with the state it sees. A checkpoint first makes the file hold everything applied,
    /// so the log can be purged up to the snapshot and a restart still finds the entries after
    /// the file's recorded state. (Blocks: call on a blocking thread.)
    fn pin_for_snapshot(&self) -> io::Result<(rq_db::snapshot::PinnedRead, SmState)> {
        let mut w = self.writer.lock().unwrap();
        if let Some(q) = &w.cdc {
            q.sync()?;
        }
        let state = w.applied.lock().unwrap().state.clone();
        match w.db.checkpoint(&state.encode()) {
            Ok(true) => {}
            Ok(false) => tracing::debug!("readers kept the checkpoint before a snapshot from finishing"),
            Err(e) => tracing::warn!(error = %e, "checkpoint before a snapshot failed"),
        }
        let pinned = rq_db::snapshot::PinnedRead::begin(&self.db_path).map_err(io::Error::other)?;
        Ok((pinned, state))
    }

    async fn call<T>(&self, op: Op, rx: oneshot::Receiver<io::Result<T>>) -> io::Result<T> {
        self.tx
            .send(op)
            .await
            .map_err(|_| io::Error::other("state machine writer stopped"))?;
        rx.await.map_err(|_| io::Error::other("state machine writer stopped"))?
    }
}

impl Writer {
    fn apply(&mut self, entries: &[Entry]) -> io::Result<Vec<Applied>> {
        let r = apply_batch(
            &mut self.db,
            &self.path,
            &self.applied,
            entries,
            None,
            self.on_replaced.as_ref(),
        )?;
        Ok(r.expect("an apply without a budget always completes"))
    }

    /// Applies entries with no load piece within `budget`; `None` if it ran out, nothing
    /// then applied.
    fn apply_within(&mut self, entries: &[Entry], budget: Duration) -> io::Result<Option<Vec<Applied>>> {
        apply_batch(
            &mut self.db,
            &self.path,
            &self.applied,
            entries,
            Some(budget),
            self.on_replaced.as_ref(),
        )
    }
}

fn writer_loop(writer: Arc<Mutex<Writer>>, mut rx: mpsc::Receiver<Op>) {
    while let Some(op) = rx.blocking_recv() {
        let mut guard = writer.lock().unwrap();
        let w = &mut *guard;
        match op {
            Op::Apply { entries, reply } => {
                let _ = reply.send(w.apply(&entries));
            }
            Op::Checkpoint { reply } => {
                let state = w.applied.lock().unwrap().state.encode();
                let _ = reply.send(w.db.checkpoint(&state).map_err(io::Error::other));
            }
            Op::ForceState { state, reply } => {
                w.applied.lock().unwrap().state = state.clone();
                let r = w.db.checkpoint(&state.encode()).map(|_| ()).map_err(io::Error::other);
                let _ = reply.send(r);
            }
            Op::Boot { path: src, reply } => {
                let state = w.applied.lock().unwrap().state.clone();
                let r = w.db.replace_with(&src, &state.encode()).map_err(io::Error::other);
                if r.is_ok() {
                    // The database changed at the entry that fenced the boot.
                    w.applied.lock().unwrap().db_applied_index = state.last_applied.map_or(0, |l| l.index);
                }
                (w.on_replaced)();
                let _ = reply.send(r);
            }
            Op::Install {
                path: snap,
                state,
                reply,
            } => {
                let r = install(&mut w.db, &snap, state, &w.applied);
                (w.on_replaced)();
                let _ = reply.send(r);
            }
        }
    }
}

/// Moves `st` past `entries`: the last one applied, and the newest membership among them.
fn advance(st: &mut SmState, entries: &[Entry]) {
    for e in entries {
        st.last_applied = Some(e.log_id);
        if let EntryPayload::Membership(m) = &e.payload {
            st.membership = StoredMembership::new(Some(e.log_id), m.clone());
        }
    }
}

/// The work items of one command: one per request it carries.
fn works_of(cmd: &Command) -> Vec<Work<'_>> {
    match cmd {
        Command::Execute(r) => vec![Work::Execute(r)],
        Command::Query(r) => vec![Work::Query(r)],
        Command::ExecuteQuery(r) => vec![Work::Request(r)],
        Command::Noop | Command::LoadChunk(_) => vec![Work::Nothing],
        Command::Batch(cmds) => cmds
            .iter()
            .map(|c| match c {
                Command::Execute(r) => Work::Execute(r),
                Command::Query(r) => Work::Query(r),
                Command::ExecuteQuery(r) => Work::Request(r),
                // Batches are flat by construction; anything else in one does nothing.
                Command::Noop | Command::LoadChunk(_) | Command::Batch(_) => Work::Nothing,
            })
            .collect(),
    }
}

/// Statements in `entries`, in all.
fn statements(entries: &[Entry]) -> usize {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(l) => l.cmd.statements(),
            _ => 0,
        })
        .sum()
}

/// Whether applying `e` could have changed the database: a write, or a load's last piece.
fn may_change_database(e: &Entry) -> bool {
    fn writes(cmd: &Command) -> bool {
        match cmd {
            Command::Execute(_) | Command::ExecuteQuery(_) => true,
            Command::LoadChunk(c) => c.last,
            Command::Batch(cmds) => cmds.iter().any(writes),
            Command::Query(_) | Command::Noop => false,
        }
    }
    matches!(&e.payload, EntryPayload::Normal(l) if writes(&l.cmd))
}

fn load_chunk_of(e: &Entry) -> Option<&LoadChunk> {
    match &e.payload {
        EntryPayload::Normal(Logged {
            cmd: Command::LoadChunk(c),
            ..
        }) => Some(c),
        _ => None,
    }
}

/// The file a load's pieces are gathered in, beside the database.
pub(crate) fn staging_path(db_path: &Path) -> PathBuf {
    db_path.with_extension("sqlite.load")
}

/// Applies committed entries: runs of SQL entries in one transaction each; load pieces one at
/// a time, since the last piece of a load replaces the database file. With a `budget` (for
/// entries with no load piece), `None` if it ran out, nothing then applied.
fn apply_batch(
    db: &mut Database,
    db_path: &Path,
    applied: &Mutex<AppliedInfo>,
    entries: &[Entry],
    budget: Option<Duration>,
    on_replaced: &dyn Fn(),
) -> io::Result<Option<Vec<Applied>>> {
    let started = Instant::now();
    let mut state = applied.lock().unwrap().state.clone();
    let mut out = Vec::with_capacity(entries.len());
    let mut start = 0;
    while start < entries.len() {
        let end = entries[start..]
            .iter()
            .position(|e| load_chunk_of(e).is_some())
            .map_or(entries.len(), |p| start + p);
        if end > start {
            let run = &entries[start..end];
            let works: Vec<Vec<Work<'_>>> = run
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Blank | EntryPayload::Membership(_) => vec![Work::Nothing],
                    EntryPayload::Normal(l) => works_of(&l.cmd),
                })
                .collect();
            if db.capture_enabled() {
                db.set_entry_ids(run.iter().map(|e| e.log_id.index).collect());
            }
            let results = match budget {
                Some(b) => match db.apply_within(&works, b).map_err(io::Error::other)? {
                    Some(r) => r,
                    None => return Ok(None),
                },
                None => db.apply(&works).map_err(io::Error::other)?,
            };
            advance(&mut state, run);
            out.extend(results.into_iter().map(|parts| Applied { parts }));
        }
        if let Some(chunk) = entries.get(end).and_then(load_chunk_of) {
            out.push(apply_load_chunk(
                db,
                db_path,
                &mut state,
                entries[end].log_id,
                chunk,
                on_replaced,
            )?);
        }
        start = end + 1;
    }
    let appended_at = entries.iter().rev().find_map(|e| match &e.payload {
        EntryPayload::Normal(l) => Some(l.appended_at_ms),
        _ => None,
    });
    let changed = entries.iter().rev().find(|e| may_change_database(e));
    let mut a = applied.lock().unwrap();
    if let Some(e) = changed {
        a.db_applied_index = a.db_applied_index.max(e.log_id.index);
    }
    a.state = state;
    a.last_apply_ms = now_ms();
    if let Some(at) = appended_at {
        a.last_appended_at_ms = at;
    }
    drop(a);
    crate::metric::apply().record(started.elapsed().as_secs_f64());
    Ok(Some(out))
}

/// Applies one piece of a load: appends it to the staging file (fsynced) and notes the
/// progress with the applied index; the last piece, once the file checks out as an intact
/// SQLite database, replaces the database, recorded with the new state.
///
/// Replaying a piece after a crash is harmless: the staging file is first cut back to the
/// length the recorded progress says it had.
fn apply_load_chunk(
    db: &mut Database,
    db_path: &Path,
    state: &mut SmState,
    log_id: LogId,
    chunk: &LoadChunk,
    on_replaced: &dyn Fn(),
) -> io::Result<Applied> {
    let mut next = state.clone();
    next.last_applied = Some(log_id);
    let progress = state.load.clone().filter(|p| p.id == chunk.id);
    let in_order = match &progress {
        Some(p) => chunk.seq == p.next_seq,
        None => chunk.seq == 0,
    };
    if !in_order {
        *state = next;
        return Ok(Applied {
            parts: vec![vec![StmtResult::Error("load piece out of order".into())]],
        });
    }
    let staging = staging_path(db_path);
    let before = progress.map_or(0, |p| p.bytes);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&staging)?;
        f.set_len(before)?;
        f.seek(SeekFrom::Start(before))?;
        f.write_all(&chunk.data)?;
        f.sync_all()?;
    }
    fail::fail_point!("load-before-record");
    if !chunk.last {
        next.load = Some(LoadProgress {
            id: chunk.id,
            next_seq: chunk.seq + 1,
            bytes: before + chunk.data.len() as u64,
        });
        *state = next;
        return Ok(Applied { parts: vec![vec![]] });
    }
    next.load = None;
    let result = match rq_db::snapshot::validate(&staging) {
        Ok(()) => {
            db.replace_with(&staging, &next.encode()).map_err(io::Error::other)?;
            on_replaced();
            vec![]
        }
        Err(e) => vec![StmtResult::Error(e.to_string())],
    };
    let _ = std::fs::remove_file(&staging);
    *state = next;
    Ok(Applied { parts: vec![result] })
}

fn install(db: &mut Database, snap: &Path, state: SmState, applied: &Mutex<AppliedInfo>) -> io::Result<()> {
    db.replace_with(snap, &state.encode()).map_err(io::Error::other)?;
    let mut a = applied.lock().unwrap();
    a.db_applied_index = state.last_applied.map_or(0, |l| l.index);
    a.state = state;
    a.rw_pragmas = db.pragmas();
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.state();
        Ok((s.last_applied, s.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Tests make a node apply late (`return(MS)`), without holding up anything else.
        if let Some(ms) = fail::eval("apply-delay-ms", |a| a.and_then(|a| a.parse::<u64>().ok())).flatten() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(durable) = self.log_durable.as_mut() {
            let last = entries.last().map(|e| e.log_id.index).unwrap_or_default();
            // Waits until the entries are on disk, or the log failed (then `holds` says why).
            let end = *durable
                .wait_for(|d| d.holds(last).unwrap_or(true))
                .await
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            end.holds(last).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        if statements(&entries) <= INLINE_STATEMENTS && !entries.iter().any(|e| load_chunk_of(e).is_some()) {
            // Busy only while the writer thread checkpoints or replaces the database. A
            // statement may still run long: past the budget the work is undone and handed to
            // the writer thread, so this thread's other tasks (heartbeats among them) wait at
            // most that long.
            if let Ok(mut w) = self.writer.try_lock() {
                match w.apply_within(&entries, INLINE_APPLY_BUDGET) {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    Err(e) => return Err(sm_err(ErrorVerb::Write, e)),
                }
            }
        }
        let (reply, rx) = oneshot::channel();
        self.call(Op::Apply { entries, reply }, rx)
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let f = self
            .snapshots
            .create_incoming()
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let path = self
            .snapshots
            .accept_incoming(meta, *snapshot)
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let (reply, rx) = oneshot::channel();
        let state = SmState::of_snapshot(meta);
        self.call(Op::Install { path, state, reply }, rx)
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshots.current().await.map_err(|e| sm_err(ErrorVerb::Read, e))
    }
}

/// Builds a snapshot from a consistent copy of the live database, off the writer thread.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.sm.build_snapshot().await.map_err(|e| sm_err(ErrorVerb::Write, e))
    }
}
