//! The `Store` facade: the one door through which the HTTP layer writes, reads and asks about
//! the node. It owns the Raft instance, the state machine and the read pool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, RaftNetworkFactory, ServerState, SnapshotPolicy};
use rq_db::exec::{self, Mode};
use rq_db::snapshot::BackupFormat;
use rq_db::sql::{self, RewriteOptions};
use rq_db::{ConnConfig, Database, ReadPool};
use rq_proto::{Command, Level, LoadChunk, Logged, Request, StmtResult};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cdc::CdcQueue;
use crate::commit_gate::CommitGate;
use crate::error::StoreError;
use crate::freshness::Freshness;
use crate::log_store::{Durable, LogStore};
use crate::read_index::{AckClock, Round};
use crate::run_marker;
use crate::snapshot::SnapshotStore;
use crate::state_machine::{SmState, StateMachine};
use crate::stats::{Counter, Stats};
use crate::types::{NodeInfo, Raft, TypeConfig, raft_id};

/// File names inside the data directory.
pub const DB_FILE: &str = "db.sqlite";
pub const LOG_DIR: &str = "raft-log";
pub const SNAPSHOT_DIR: &str = "snapshots";
/// Where the change data capture queue lives.
pub const CDC_DIR: &str = "cdc";

/// How often a wait for a quorum checks that this node still leads.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(50);
/// How often `fault` looks for a storage failure.
const FAULT_CHECK: Duration = Duration::from_millis(50);
/// Longest wait for a requested snapshot to be taken.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(300);
/// Bytes of a database file carried by one log entry during a load: just under 4 MiB, so that
/// two pieces with their record headers fill one log segment (`log_store::SEGMENT_BYTES`).
const LOAD_CHUNK_BYTES: usize = 4 * 1024 * 1024 - 4096;

/// Linearizable reads waiting for one leadership confirmation; more wait in line.
const READ_BARRIER_QUEUE: usize = 4096;
/// Writes waiting to be logged; more wait in line.
const PROPOSAL_QUEUE: usize = 4096;
/// How long a read may run on the thread that received it before it is moved to a blocking
/// thread: a point read takes tens of microseconds; an I/O thread held longer delays every
/// other connection it serves.
const INLINE_READ_BUDGET: Duration = Duration::from_micros(500);
/// At most this many requests, and about this many statements, share one log entry.
const MAX_BATCH_REQUESTS: usize = 512;
const MAX_BATCH_STATEMENTS: usize = 20_000;
/// Longest an entry waits for the requests it expects (see `proposer_loop`); tokio's timer
/// works in whole milliseconds.
const LINGER: Duration = Duration::from_millis(1);

/// How a node's store is set up; built from the command line by `rqlited`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// rqlite node id (`-node-id`, default the advertised Raft address).
    pub node_id: String,
    /// Advertised node-to-node address (`-raft-adv-addr`).
    pub raft_addr: String,
    pub foreign_keys: bool,
    /// `-db-max-ro-conns`; 0 means no limit.
    pub max_read_conns: usize,
    /// `-raft-snap`: entries since the last snapshot that trigger a new one.
    pub snapshot_threshold: u64,
    /// `-raft-snap-int`: how often that is checked.
    pub snapshot_interval: Duration,
    /// `-raft-snap-wal-size`: WAL bytes at which the WAL is checkpointed; 0 disables.
    pub wal_checkpoint_size: u64,
    /// `-raft-heartbeat-timeout`.
    pub heartbeat_timeout: Duration,
    /// `-raft-election-timeout`.
    pub election_timeout: Duration,
    /// `-raft-apply-timeout`: longest wait for a proposed entry to be applied.
    pub apply_timeout: Duration,
    /// This node may not vote (`-raft-non-voter`).
    pub non_voter: bool,
    /// `-raft-log-level`, reported in `/status`.
    pub raft_log_level: String,
    /// `-raft-reap-node-timeout` and `-raft-reap-read-only-node-timeout`, reported in
    /// `/status` (the reaper acts on them); zero disables.
    pub reap_timeout: Duration,
    pub reap_read_only_timeout: Duration,
    /// Change data capture (`-cdc-config`), if on.
    pub cdc: Option<CdcCapture>,
    /// Snapshot format upgrades the conversion of an rqlite directory made at this start
    /// (`open_rqlite_data`), counted as rqlite's `snapshot.upgrade_ok`.
    pub rqlite_upgrades: i64,
    /// `-raft-read-lease`: the leader answers linearizable reads without a round while it
    /// holds a lease (see `read_index`).
    pub read_lease: bool,
}

/// What change data capture keeps: which changes, and how much may wait on disk.
#[derive(Debug, Clone)]
pub struct CdcCapture {
    pub capture: rq_db::capture::CaptureConfig,
    /// The queue's bound in bytes; changes past it are dropped (and counted).
    pub max_queue_bytes: u64,
}

/// Read options from the query string.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ReadOptions {
    pub level: Level,
    /// `freshness`; zero means unchecked.
    pub freshness: Duration,
    pub freshness_strict: bool,
    /// Longest wait for the local state machine to reach the read index (`linearizable`).
    pub linearizable_timeout: Duration,
    /// Read-your-writes: the read waits until this node has applied this log index (a write's
    /// `X-RQLITE-RAFT-INDEX`); 0 for no wait.
    pub min_index: u64,
    /// Longest wait for `min_index`.
    pub min_index_timeout: Duration,
}

/// Options that shape how SQL text is prepared before it is logged.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SqlOptions {
    /// Skip parsing: no rewriting, no RETURNING detection.
    pub noparse: bool,
    pub no_rewrite_random: bool,
    pub no_rewrite_time: bool,
}

/// While held, this node does not act as leader (see `Store::stand_down`).
pub struct StandDown {
    store: Store,
}

impl Drop for StandDown {
    fn drop(&mut self) {
        self.store.inner.raft.runtime_config().heartbeat(true);
        self.store.inner.standing_down.store(false, Ordering::Relaxed);
    }
}

/// A client request, as one node may pass it to the leader.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Forward {
    Execute {
        request: Request,
        sql: SqlOptions,
    },
    Query {
        request: Request,
        read: ReadOptions,
        sql: SqlOptions,
    },
    Request {
        request: Request,
        read: ReadOptions,
        sql: SqlOptions,
    },
}

/// What `/db/backup` asks for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupOptions {
    pub format: BackupFormat,
    pub vacuum: bool,
    pub compress: bool,
    /// Tables a SQL dump is limited to; empty for all.
    pub tables: Vec<String>,
}

/// Results and the log index they were applied at (0 for reads that did not use the log).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub results: Vec<StmtResult>,
    pub raft_index: u64,
}

/// The counters every request bumps, looked up once.
struct RequestCounters {
    executions: Counter,
    queries: Counter,
    requests: Counter,
    read_lease: Counter,
}

impl RequestCounters {
    fn new(stats: &Stats) -> RequestCounters {
        RequestCounters {
            executions: stats.db.counter("executions"),
            queries: stats.db.counter("queries"),
            requests: stats.db.counter("requests"),
            read_lease: stats.store.counter("num_read_lease"),
        }
    }
}

struct Inner {
    cfg: StoreConfig,
    raft_id: u64,
    raft: Raft,
    /// openraft's metrics, one receiver for every reader: a receiver made per look costs
    /// atomic counts on lines that every core shares.
    metrics: watch::Receiver<openraft::RaftMetrics<u64, NodeInfo>>,
    sm: StateMachine,
    /// The Raft log's durable end.
    durable: tokio::sync::watch::Receiver<Durable>,
    pool: Arc<ReadPool>,
    snapshots: Arc<SnapshotStore>,
    barrier: mpsc::Sender<oneshot::Sender<Result<(), StoreError>>>,
    proposals: mpsc::Sender<Proposal>,
    stats: Arc<Stats>,
    counters: RequestCounters,
    /// Milliseconds since the epoch of the last message from a leader (followers).
    leader_contact_ms: AtomicU64,
    /// The leader's commit index as of its last message (followers).
    leader_commit: AtomicU64,
    /// Nodes that announced themselves for `-bootstrap-expect` (id → node-to-node address).
    notified: std::sync::Mutex<BTreeMap<String, String>>,
    /// Set while this leader hands leadership over: it stops acting as leader.
    standing_down: std::sync::atomic::AtomicBool,
    /// Held while this node sends a load through the log; one load at a time.
    loading: tokio::sync::Mutex<()>,
    /// What the other nodes answered to this leader's AppendEntries.
    acks: Arc<AckClock>,
    started: Instant,
    /// Reasons the node is not ready yet besides having no leader (`hold_ready`).
    ready_holds: std::sync::atomic::AtomicUsize,
    /// The change data capture queue, when capture is on.
    cdc: Option<Arc<CdcQueue>>,
    /// Linearizable reads served here when this node is not the leader (`set_read_index_source`).
    follower_reads: std::sync::OnceLock<crate::follower_read::FollowerReads>,
    /// What this leader's Raft core last said about its vote and configuration, for read-index
    /// requests and the read lease (`with_leader_view`).
    leader_view: std::sync::Mutex<Option<LeaderView>>,
    /// Changes while requests wait on this node as leader and it is not (`watch_leadership`).
    not_leading: watch::Sender<u64>,
    /// Changes every `LEADERSHIP_CHECK` while a leadership round is under way.
    ticks: watch::Sender<()>,
    /// The Raft log, for the vote it has saved.
    log: LogStore,
    /// Asks other nodes for their saved votes, for leadership rounds (`set_vote_probe`).
    vote_probe: std::sync::OnceLock<crate::VoteProbe>,
    /// How long after a quorum accepted its AppendEntries this leader may answer linearizable
    /// reads without a round (zero: never).
    read_lease: Duration,
    /// AppendEntries from a leader pass shared; an election asked for by a leader passes alone
    /// (`stand_for_election`).
    append_gate: tokio::sync::RwLock<()>,
}

/// The node's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// openraft's timing from rqlite's flags, with `t` the larger of the heartbeat and election
/// timeouts (1 s by default).
///
/// openraft 0.9 has a follower that hears nothing from its leader wait out the leader lease
/// (`election_timeout_max`) and then its own election timeout (fixed per process, drawn from
/// `election_timeout_min..=election_timeout_max`) before it stands. With `t/2..=t` that is 1.5t
/// to 2t of silence, as with rqlite's followers (a random wait of t to 2t), while the leader
/// sends a heartbeat every t/8: a dozen heartbeats must go missing before anyone stands, which
/// a busy 2-core machine does not cause.
fn raft_config(cfg: &StoreConfig) -> Result<Config, StoreError> {
    let t = cfg.heartbeat_timeout.max(cfg.election_timeout).as_millis().max(200) as u64;
    let config = Config {
        cluster_name: "rqlite".into(),
        election_timeout_min: t / 2,
        election_timeout_max: t,
        heartbeat_interval: (t / 8).max(20),
        install_snapshot_timeout: 30_000,
        max_payload_entries: 512,
        // Snapshots are triggered by the store's own ticker, which honours -raft-snap-int.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: trailing_logs(cfg.snapshot_threshold),
        // Purging in batches saves work; small thresholds keep small batches so the log stays
        // near its bound.
        purge_batch_size: (cfg.snapshot_threshold / 4).clamp(1, 256),
        replication_lag_threshold: cfg.snapshot_threshold.max(1000),
        ..Default::default()
    };
    config.validate().map_err(internal)
}

/// Entries kept behind a snapshot, as rqlite: 1.25 times the snapshot threshold.
pub fn trailing_logs(threshold: u64) -> u64 {
    threshold + threshold / 4
}

impl Store {
    /// Opens the store in `cfg.data_dir` and starts Raft. A data directory with no Raft state
    /// is bootstrapped as a one-node cluster when `bootstrap` is set.
    pub async fn open<N>(cfg: StoreConfig, network: N, bootstrap: bool) -> Result<Store, StoreError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        refuse_foreign_data(&cfg.data_dir)?;
        // `raft/` is where an operator puts `peers.json` to recover a cluster, as with rqlite.
        std::fs::create_dir_all(cfg.data_dir.join("raft")).map_err(internal)?;
        // Opening the log takes its lock: nothing else in the directory is touched before this
        // node knows no other process is using it.
        let mut log = LogStore::open(&cfg.data_dir.join(LOG_DIR)).map_err(internal)?;
        remove_scratch_files(&cfg.data_dir);
        let stats = Arc::new(Stats::default());
        stats.snapshot.add("upgrade_ok", cfg.rqlite_upgrades);
        let db_path = cfg.data_dir.join(DB_FILE);
        let snapshots =
            Arc::new(SnapshotStore::open(&cfg.data_dir.join(SNAPSHOT_DIR), stats.clone()).map_err(internal)?);
        let conn_cfg = ConnConfig {
            foreign_keys: cfg.foreign_keys,
        };
        if !run_marker::trusted(&cfg.data_dir).map_err(internal)? {
            // The machine restarted while this node was running: the database may be torn.
            tracing::warn!("the host restarted since this node last stopped cleanly; rebuilding the database");
            rq_db::remove_database(&db_path).map_err(internal)?;
            stats.store.add("num_recoveries", 1);
        }
        let (mut db, state) = Database::open(&db_path, conn_cfg).map_err(internal)?;
        let state = restore_if_behind(&mut db, state, &snapshots, &stats)?;
        let cdc = match &cfg.cdc {
            None => None,
            Some(c) => {
                let queue = CdcQueue::open(
                    crate::cdc::QueueConfig {
                        dir: cfg.data_dir.join(CDC_DIR),
                        max_bytes: c.max_queue_bytes,
                    },
                    stats.clone(),
                )
                .map_err(internal)?;
                db.enable_capture(c.capture.clone(), crate::cdc::sink(queue.clone(), stats.clone()))
                    .map_err(internal)?;
                Some(queue)
            }
        };
        run_marker::begin(&cfg.data_dir).map_err(internal)?;
        let pool = ReadPool::new(&db_path, conn_cfg, cfg.max_read_conns);
        db.set_read_pin(pool.pin());
        let p = pool.clone();
        let mut sm = StateMachine::open(db, state, &db_path, snapshots.clone(), Box::new(move || p.reset()))
            .map_err(internal)?;
        if let Some(q) = &cdc {
            sm.set_cdc_queue(q.clone());
        }
        crate::recovery::recover_if_asked(&cfg.data_dir, &mut log, &mut sm, &stats).await?;

        let id = raft_id(&cfg.node_id);
        let durable = log.durable();
        let log_handle = log.clone();
        sm.wait_for_log(durable.clone());
        let acks = Arc::new(AckClock::default());
        let network = CommitGate::new(network, durable.clone(), acks.clone());
        let config = Arc::new(raft_config(&cfg)?);
        // Three quarters of what the followers promise (`election_timeout_max`, by their
        // clocks), which covers clocks ticking at rates up to a third apart.
        let read_lease = if cfg.read_lease {
            Duration::from_millis(config.election_timeout_max) * 3 / 4
        } else {
            Duration::ZERO
        };
        let raft = Raft::new(id, config, network, log, sm.clone())
            .await
            .map_err(internal)?;

        let (barrier, barrier_rx) = mpsc::channel(READ_BARRIER_QUEUE);
        let (proposals, proposals_rx) = mpsc::channel(PROPOSAL_QUEUE);
        let store = Store {
            inner: Arc::new(Inner {
                cfg,
                raft_id: id,
                metrics: raft.metrics(),
                raft,
                sm,
                durable,
                pool,
                snapshots,
                barrier,
                proposals,
                counters: RequestCounters::new(&stats),
                stats,
                leader_contact_ms: AtomicU64::new(0),
                leader_commit: AtomicU64::new(0),
                loading: tokio::sync::Mutex::new(()),
                standing_down: std::sync::atomic::AtomicBool::new(false),
                notified: std::sync::Mutex::new(BTreeMap::new()),
                acks,
                started: Instant::now(),
                ready_holds: std::sync::atomic::AtomicUsize::new(0),
                follower_reads: std::sync::OnceLock::new(),
                leader_view: std::sync::Mutex::new(None),
                cdc,
                not_leading: watch::channel(0).0,
                ticks: watch::channel(()).0,
                log: log_handle,
                vote_probe: std::sync::OnceLock::new(),
                read_lease,
                append_gate: tokio::sync::RwLock::new(()),
            }),
        };
        tokio::spawn(read_barrier_loop(store.clone(), barrier_rx));
        tokio::spawn(proposer_loop(store.inner.raft.clone(), proposals_rx));
        tokio::spawn(snapshot_ticker(store.clone()));
        tokio::spawn(watch_leadership(store.clone()));
        tokio::spawn(background_flush_switch(
            store.inner.raft.clone(),
            store.inner.log.clone(),
            id,
        ));
        tokio::spawn(count_leader_changes(
            store.inner.raft.clone(),
            store.inner.stats.clone(),
        ));

        if bootstrap {
            store.bootstrap_alone().await?;
        } else if store.is_sole_member() {
            // Alone, there is nobody to wait for: stand for election now, not after a timeout.
            let _ = store.inner.raft.trigger().elect().await;
        }
        Ok(store)
    }

    pub(crate) fn notified(&self) -> &std::sync::Mutex<BTreeMap<String, String>> {
        &self.inner.notified
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    pub fn node_id(&self) -> &str {
        &self.inner.cfg.node_id
    }

    /// Whether Raft has any state (a log, a vote, or a snapshot) on this node.
    pub async fn is_initialized(&self) -> bool {
        self.inner.raft.is_initialized().await.unwrap_or(false)
    }

    /// Whether this node is the only member of its cluster's configuration, as the database
    /// last recorded it.
    pub fn is_sole_member(&self) -> bool {
        let state = self.inner.sm.state();
        let ids: Vec<u64> = state.membership.nodes().map(|(id, _)| *id).collect();
        ids == [self.inner.raft_id]
    }

    /// Records that a message from the leader arrived (for `freshness`), and the leader's
    /// commit index it carried, if any.
    pub fn note_leader_contact(&self, leader_commit: Option<u64>) {
        self.inner.leader_contact_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(c) = leader_commit {
            self.inner.leader_commit.fetch_max(c, Ordering::Relaxed);
        }
    }

    /// Time since the last message from a leader, if there was one.
    pub fn leader_contact_age(&self) -> Option<Duration> {
        match self.inner.leader_contact_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(now_ms().saturating_sub(ms))),
        }
    }

    /// The leader's commit index as last heard from it (0 on a leader).
    pub fn leader_commit(&self) -> u64 {
        self.inner.leader_commit.load(Ordering::Relaxed)
    }

    /// The commit index: on a leader, the highest index a quorum of voters holds; elsewhere,
    /// what the leader last said, never below what this node applied.
    pub fn commit_index(&self) -> u64 {
        let m = self.inner.metrics.borrow().clone();
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        if m.state != ServerState::Leader {
            return self.leader_commit().max(applied);
        }
        let mut matched: Vec<u64> = m
            .membership_config
            .membership()
            .voter_ids()
            .map(|v| {
                if v == self.inner.raft_id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&v).cloned().flatten())
                        .map(|l| l.index)
                        .unwrap_or(0)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = matched.len() / 2;
        matched.get(quorum).copied().unwrap_or(0).max(applied)
    }

    /// Metadata of the newest snapshot.
    pub fn snapshot_meta(&self) -> Option<crate::types::SnapshotMeta> {
        self.inner.snapshots.current_meta()
    }

    /// The write connection's reported pragmas.
    pub fn rw_pragmas(&self) -> BTreeMap<String, String> {
        self.inner.sm.rw_pragmas()
    }

    fn with_reader<T: Default>(&self, f: impl FnOnce(&rq_db::Conn) -> T) -> T {
        match self.inner.pool.get() {
            Ok(c) => f(&c),
            Err(_) => T::default(),
        }
    }

    /// A read connection's reported pragmas.
    pub fn read_pragmas(&self) -> BTreeMap<String, String> {
        self.with_reader(|c| rq_db::stats::pragmas(c.connection()))
    }

    pub fn read_mem_stats(&self) -> BTreeMap<String, i64> {
        self.with_reader(|c| rq_db::stats::mem_stats(c.connection()))
    }

    pub fn compile_options(&self) -> Vec<String> {
        self.with_reader(|c| rq_db::stats::compile_options(c.connection()))
    }

    /// Whether this node leads, and has heard from a quorum recently enough to act as leader.
    pub fn is_leader(&self) -> bool {
        let m = self.inner.metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.raft_id) && self.has_quorum(&m)
    }

    /// A leader cut off from a quorum for longer than the leader lease stops acting as one, as
    /// rqlite's does: the minority side of a partition refuses writes and leader reads rather
    /// than serve from a leadership it can no longer prove. (openraft 0.9 keeps the state until
    /// it hears of a higher term.)
    fn has_quorum(&self, m: &openraft::RaftMetrics<u64, NodeInfo>) -> bool {
        if self.inner.standing_down.load(Ordering::Relaxed) {
            return false;
        }
        let lease = self.leader_lease();
        match m.millis_since_quorum_ack {
            Some(ms) => ms <= lease.as_millis() as u64,
            // Not yet acknowledged since the election, which a quorum just decided.
            None => true,
        }
    }

    /// How long a leader may go without a quorum's acknowledgement (and how long a follower
    /// refuses to vote after hearing from its leader).
    pub fn leader_lease(&self) -> Duration {
        let cfg = self.inner.raft.config();
        Duration::from_millis(cfg.election_timeout_max)
    }

    /// The node with Raft id `target` closed a Raft connection from this one: it no longer
    /// counts for this leader's read lease until it accepts another AppendEntries.
    pub fn peer_hung_up(&self, target: u64) {
        self.inner.acks.failed(target, Instant::now());
    }

    /// Hands an AppendEntries from a leader to the Raft core (see `stand_for_election`).
    pub async fn append_entries(
        &self,
        rpc: openraft::raft::AppendEntriesRequest<TypeConfig>,
    ) -> Result<openraft::raft::AppendEntriesResponse<u64>, RaftError<u64>> {
        let _open = self.inner.append_gate.read().await;
        self.inner.raft.append_entries(rpc).await
    }

    /// Stands for election when the leader whose vote is `leader` asks (a leadership transfer).
    /// A node that holds another vote does not: its leader may be counting on it for its read
    /// lease (see `read_index`), which openraft's election timer respects and an election asked
    /// for would not. No AppendEntries reaches the Raft core between the check and the start
    /// of the election, so the node accepts none for a lease in between. A request that names
    /// no leader (from an older node) is granted only once this node has heard from no leader
    /// for the leader lease.
    pub async fn stand_for_election(&self, leader: Option<crate::types::Vote>) -> Result<(), StoreError> {
        let _closed = self.inner.append_gate.write().await;
        let lease = self.leader_lease();
        let free = self
            .inner
            .raft
            .with_raft_state(move |st| match leader {
                Some(l) => *st.vote_ref() == l,
                None => !st.vote_ref().is_committed() || st.vote_last_modified().is_none_or(|t| t.elapsed() > lease),
            })
            .await
            .map_err(internal)?;
        if !free {
            return Err(internal("not standing for election: this node follows another leader"));
        }
        self.inner.raft.trigger().elect().await.map_err(internal)
    }

    /// Stops acting as leader and stops heartbeats until the guard is dropped (a leadership
    /// transfer is under way).
    pub fn stand_down(&self) -> StandDown {
        self.inner.standing_down.store(true, Ordering::Relaxed);
        self.inner.raft.runtime_config().heartbeat(false);
        StandDown { store: self.clone() }
    }

    /// How far each other member's log matches this leader's (node id → index); empty on
    /// followers.
    pub fn replication_progress(&self) -> std::collections::HashMap<String, u64> {
        let m = self.inner.metrics.borrow().clone();
        let members = m.membership_config.membership();
        m.replication
            .iter()
            .flatten()
            .filter_map(|(nid, log)| {
                let node = members.get_node(nid)?;
                Some((node.id.clone(), log.map(|l| l.index).unwrap_or(0)))
            })
            .collect()
    }

    /// Index of the last entry in this node's log.
    pub fn last_log_index(&self) -> u64 {
        self.inner.metrics.borrow().last_log_index.unwrap_or(0)
    }

    /// The current leader, if known. A leader that lost its quorum does not count itself.
    pub fn leader(&self) -> Option<NodeInfo> {
        self.with_leader(|n| n.clone())
    }

    /// Whether `leader` would name one, without copying its details.
    pub fn leader_known(&self) -> bool {
        self.with_leader(|_| ()).is_some()
    }

    fn with_leader<T>(&self, f: impl FnOnce(&NodeInfo) -> T) -> Option<T> {
        let m = self.inner.metrics.borrow();
        let id = m.current_leader?;
        if id == self.inner.raft_id && !self.has_quorum(&m) {
            return None;
        }
        m.membership_config.membership().get_node(&id).map(f)
    }

    /// Whether a linearizable read may be served without asking a quorum: this node is the
    /// only voter and leader, and it has applied an entry of its own term, so every write
    /// acknowledged by any leader before it is applied here (writes are acknowledged only
    /// after they are applied). No other node can become leader without this one's vote.
    fn sole_voter_caught_up(&self) -> bool {
        let m = self.inner.metrics.borrow();
        // The voters are the union of the configurations' (`voter_ids`, which builds it in a
        // new set on every call): this node alone when every configuration holds it alone.
        let configs = m.membership_config.membership().get_joint_config();
        m.state == ServerState::Leader
            && !configs.is_empty()
            && configs.iter().all(|c| c.len() == 1 && c.contains(&self.inner.raft_id))
            && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// Confirms, for the linearizable reads that arrived before now, that this node is still the
    /// leader (see `read_index`): the other voters are asked for their saved votes (or, without a
    /// way to ask them, heartbeats go out at once on the replication connections), and the
    /// round ends when a quorum has answered for this leader, or can no longer, or after the
    /// election timeout. The leader must also have applied an entry of its own term, so that
    /// its state holds every write acknowledged by any leader; until it has, openraft's own
    /// check (which waits for that) is used.
    async fn confirm_leadership(&self, probes: &mut Probes) -> Result<(), StoreError> {
        let asked = Instant::now();
        let not_leader = |m: &openraft::RaftMetrics<u64, NodeInfo>| StoreError::NotLeader {
            leader: m
                .current_leader
                .filter(|l| *l != self.inner.raft_id)
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned()),
        };
        let m = self.inner.metrics.borrow().clone();
        if m.state != ServerState::Leader {
            return Err(not_leader(&m));
        }
        if m.last_applied.is_none_or(|l| l.leader_id.term != m.current_term) {
            return match self.inner.raft.ensure_linearizable().await {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                    Err(StoreError::NotLeader { leader: f.leader_node })
                }
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
                    Err(StoreError::NotLeader { leader: None })
                }
                Err(e) => Err(internal(e)),
            };
        }
        let mut answers = self.inner.acks.subscribe();
        let mut heartbeat_sent = false;
        let configs = m.membership_config.membership().get_joint_config().clone();
        let members = m.membership_config.membership();
        let addr = |id: &u64| members.get_node(id).map(|n| n.addr.clone()).unwrap_or_default();
        // Voters asked only if the first ones asked do not answer in time.
        let mut held_back = Vec::new();
        match self.inner.vote_probe.get() {
            Some(probe) => {
                let (first, rest) = probes.plan(self.inner.raft_id, &configs);
                for id in first {
                    probes.send(probe, id, addr(&id), self.leader_lease());
                }
                held_back = rest;
            }
            None => {
                heartbeat_sent = true;
                self.inner.raft.trigger().heartbeat().await.map_err(internal)?;
            }
        }
        // The round sets no timer of its own: the leadership watch's ticks (see
        // `watch_leadership`) bound it, and tell it when to ask the voters held back.
        let deadline = asked + self.leader_lease();
        let mut ticks = self.inner.ticks.subscribe();
        loop {
            {
                let m = self.inner.metrics.borrow();
                // This node counts itself only while it has given no other candidate its vote.
                if m.state != ServerState::Leader || self.inner.log.saved_vote() != Some(m.vote) {
                    return Err(not_leader(&m));
                }
                let configs = m.membership_config.membership().get_joint_config();
                match self.inner.acks.round(self.inner.raft_id, &m.vote, configs, asked) {
                    Round::Confirmed => return Ok(()),
                    // Leadership cannot be confirmed: as far as these reads can tell, there is
                    // no leader.
                    Round::Impossible => return Err(StoreError::NotLeader { leader: None }),
                    Round::Pending => {}
                }
            }
            let mut ask_the_rest = false;
            tokio::select! {
                Some(answered) = probes.next() => {
                    // A voter that does not hold this leader's vote, or cannot say: the others
                    // are asked, and heartbeats decide for those that cannot say (they bring a
                    // voter with an older vote up to date, and note a node that does not answer
                    // them either).
                    ask_the_rest = answered != Probed::Held;
                    if answered == Probed::Unanswered && !heartbeat_sent {
                        heartbeat_sent = true;
                        self.inner.raft.trigger().heartbeat().await.map_err(internal)?;
                    }
                }
                changed = answers.changed() => {
                    if changed.is_err() {
                        return Err(internal("node-to-node answers stopped"));
                    }
                }
                _ = ticks.changed() => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::NotLeader { leader: None });
                    }
                    ask_the_rest = true;
                }
            }
            if ask_the_rest && let Some(probe) = self.inner.vote_probe.get() {
                for id in std::mem::take(&mut held_back) {
                    probes.send(probe, id, addr(&id), self.leader_lease());
                }
            }
        }
    }

    /// Lets leadership rounds ask the other voters for their saved votes (see `read_index`)
    /// rather than send heartbeats through Raft.
    pub fn set_vote_probe(&self, probe: crate::VoteProbe) {
        let _ = self.inner.vote_probe.set(probe);
    }

    /// The vote this node has saved (see `LogStore::saved_vote`).
    pub fn saved_vote(&self) -> Option<crate::types::Vote> {
        self.inner.log.saved_vote()
    }

    /// Whether this node is a voter in the current configuration.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.metrics.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.inner.raft_id)
    }

    /// Members of the configuration: (node, is_voter), sorted by id.
    pub fn nodes(&self) -> Vec<(NodeInfo, bool)> {
        let m = self.inner.metrics.borrow();
        let members = m.membership_config.membership();
        let voters: Vec<u64> = members.voter_ids().collect();
        let mut out: Vec<(NodeInfo, bool)> = members
            .nodes()
            .map(|(id, n)| (n.clone(), voters.contains(id)))
            .collect();
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    /// Ready: a leader is known and this node has applied everything up to its commit index
    /// that existed when it started.
    pub fn is_ready(&self) -> bool {
        self.inner.ready_holds.load(Ordering::Acquire) == 0 && self.leader_known()
    }

    /// The change data capture queue, when `-cdc-config` is set.
    pub fn cdc_queue(&self) -> Option<&Arc<CdcQueue>> {
        self.inner.cdc.as_ref()
    }

    /// Keeps the node from reporting ready (an automatic restore not yet attempted) until as
    /// many `release_ready` calls.
    pub fn hold_ready(&self) {
        self.inner.ready_holds.fetch_add(1, Ordering::AcqRel);
    }

    pub fn release_ready(&self) {
        let _ = self
            .inner
            .ready_holds
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn leader_error(&self) -> StoreError {
        StoreError::NotLeader { leader: self.leader() }
    }

    /// Turns the statements of `req` into what will be logged: checks reserved pragmas,
    /// rewrites non-deterministic calls, and marks RETURNING statements.
    pub fn prepare(req: &mut Request, opts: SqlOptions) -> Result<(), StoreError> {
        for st in &mut req.statements {
            if sql::is_disallowed_pragma(&st.sql) {
                return Err(StoreError::DisallowedPragma);
            }
            if opts.noparse {
                continue;
            }
            if let Some(rewritten) = Self::rewrite(&st.sql, opts)? {
                st.sql = rewritten;
            }
            st.returning = sql::has_returning(&st.sql);
        }
        Ok(())
    }

    /// The statement as `/db/sql` shows it after rewriting; `Ok(None)` when nothing changed.
    pub fn rewrite(sql: &str, opts: SqlOptions) -> Result<Option<String>, StoreError> {
        let ro = RewriteOptions {
            random: !opts.no_rewrite_random,
            time: !opts.no_rewrite_time,
        };
        sql::rewrite(sql, ro).map_err(|e| StoreError::Rewrite(e.to_string()))
    }

    /// Proposes `cmd` and waits until it is applied, up to the apply timeout. Proposals that
    /// arrive while another is being committed are logged together as one entry.
    async fn propose(&self, cmd: Command) -> Result<Outcome, StoreError> {
        if !self.is_leader() {
            return Err(self.leader_error());
        }
        let read_only = matches!(cmd, Command::Query(_));
        let (reply, rx) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| internal("proposer stopped"))?;
        match tokio::time::timeout(self.inner.cfg.apply_timeout, self.while_leader(rx)).await {
            Err(_) => Err(StoreError::Timeout("timeout waiting for apply".into())),
            // A read through the log has no effect to be unsure about: as rqlite, "not leader".
            Ok(None) if read_only => Err(self.leader_error()),
            // The outcome of the entry is unknown: it may still commit under the next leader.
            Ok(None) => Err(StoreError::LeadershipLost),
            Ok(Some(Err(_))) => Err(internal("proposer stopped")),
            Ok(Some(r)) => r.unwrap_or_else(|_| Err(internal("proposer stopped"))),
        }
    }

    /// Waits for `f`, unless this node stops being leader (for example it lost its quorum)
    /// first: then `None`, so the caller can answer at once rather than wait for a quorum that
    /// may not come back. One task checks for every waiter (`watch_leadership`), so a request
    /// sets no timer of its own.
    async fn while_leader<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        let mut not_leading = self.inner.not_leading.subscribe();
        tokio::select! {
            biased;
            out = f => Some(out),
            _ = not_leading.changed() => None,
        }
    }

    /// Runs a request of any kind here.
    pub async fn run(&self, f: Forward) -> Result<Outcome, StoreError> {
        match f {
            Forward::Execute { request, sql } => self.execute(request, sql).await,
            Forward::Query { request, read, sql } => self.query(request, read, sql).await,
            Forward::Request { request, read, sql } => self.request(request, read, sql).await,
        }
    }

    /// Writes through the log (`/db/execute`).
    pub async fn execute(&self, mut req: Request, opts: SqlOptions) -> Result<Outcome, StoreError> {
        Self::prepare(&mut req, opts)?;
        self.inner.counters.executions.add(1);
        self.propose(Command::Execute(req)).await
    }

    /// Reads at the requested level (`/db/query`).
    pub async fn query(&self, mut req: Request, read: ReadOptions, opts: SqlOptions) -> Result<Outcome, StoreError> {
        for st in &req.statements {
            if sql::is_disallowed_pragma(&st.sql) {
                return Err(StoreError::DisallowedPragma);
            }
        }
        self.inner.counters.queries.add(1);
        match self.resolve(read.level) {
            Level::Strong => {
                Self::prepare(&mut req, opts)?;
                self.propose(Command::Query(req)).await
            }
            level => {
                self.check_read_at(level, read).await?;
                self.read_local(req, Mode::Query).await
            }
        }
    }

    /// A mixed request (`/db/request`): local if read-only and not `strong`, else through the log.
    pub async fn request(&self, mut req: Request, read: ReadOptions, opts: SqlOptions) -> Result<Outcome, StoreError> {
        for st in &req.statements {
            if sql::is_disallowed_pragma(&st.sql) {
                return Err(StoreError::DisallowedPragma);
            }
        }
        self.inner.counters.requests.add(1);
        let level = self.resolve(read.level);
        if level != Level::Strong && self.is_read_only(&req).await? {
            self.check_read_at(level, read).await?;
            return self.read_local(req, Mode::Request).await;
        }
        Self::prepare(&mut req, opts)?;
        self.propose(Command::ExecuteQuery(req)).await
    }

    /// `auto` is `weak` on a voter and `none` on a read-only node.
    fn resolve(&self, level: Level) -> Level {
        match level {
            Level::Auto if self.is_voter() => Level::Weak,
            Level::Auto => Level::None,
            l => l,
        }
    }

    /// `check_read`, and the wait for `min_index`: first for `none` (a node that catches up
    /// may then be fresh enough), after the check otherwise (a follower asked for `weak` says
    /// at once that the leader must answer, and the leader waits instead).
    async fn check_read_at(&self, level: Level, read: ReadOptions) -> Result<(), StoreError> {
        let wait = || async {
            if read.min_index == 0 {
                return Ok(());
            }
            self.wait_applied(read.min_index, read.min_index_timeout).await
        };
        if level == Level::None {
            wait().await?;
            self.check_read(level, read).await
        } else {
            self.check_read(level, read).await?;
            wait().await
        }
    }

    async fn check_read(&self, level: Level, read: ReadOptions) -> Result<(), StoreError> {
        match level {
            Level::None => {
                // The leader is always fresh.
                if read.freshness.is_zero() || self.is_leader() {
                    return Ok(());
                }
                let (last_apply_ms, last_appended_at_ms) = self.inner.sm.apply_times();
                let f = Freshness {
                    leader_contact_ms: self.inner.leader_contact_ms.load(Ordering::Relaxed),
                    last_apply_ms,
                    last_appended_at_ms,
                    applied_index: self.inner.sm.last_applied().map_or(0, |l| l.index),
                    commit_index: self.leader_commit(),
                };
                if f.is_stale(now_ms(), read.freshness, read.freshness_strict) {
                    return Err(StoreError::StaleRead);
                }
                Ok(())
            }
            Level::Weak => {
                if self.is_leader() {
                    Ok(())
                } else {
                    Err(self.leader_error())
                }
            }
            Level::Linearizable => {
                if !self.is_leader() {
                    return self.follower_linearizable(read).await;
                }
                if self.sole_voter_caught_up() {
                    return Ok(());
                }
                if self.lease_holds().await {
                    self.inner.counters.read_lease.add(1);
                    return Ok(());
                }
                let timeout = if read.linearizable_timeout.is_zero() {
                    Duration::from_secs(1)
                } else {
                    read.linearizable_timeout
                };
                let (tx, rx) = oneshot::channel();
                self.inner
                    .barrier
                    .send(tx)
                    .await
                    .map_err(|_| internal("read barrier stopped"))?;
                match tokio::time::timeout(timeout, self.while_leader(rx)).await {
                    Ok(Some(Ok(r))) => r,
                    Ok(Some(Err(_))) => Err(internal("read barrier stopped")),
                    Ok(None) => Err(self.leader_error()),
                    Err(_) => Err(StoreError::Timeout("timeout waiting for fsm".into())),
                }
            }
            Level::Strong | Level::Auto => Ok(()),
        }
    }

    /// Lets this node serve linearizable reads when it is not the leader: `source` asks the
    /// leader for a read index (see `follower_read`). Without it, such reads go to the leader.
    pub fn set_read_index_source(&self, source: crate::ReadIndexSource) {
        let _ = self
            .inner
            .follower_reads
            .set(crate::follower_read::FollowerReads::new(source));
    }

    /// On the leader: a read index for a linearizable read on another node, once this node has
    /// confirmed it leads (in the rounds its own linearizable reads use). It is the applied
    /// index, which covers every write acknowledged by this leader or an earlier one.
    pub async fn read_index(&self, ask: crate::follower_read::ReadIndexAsk) -> Result<u64, StoreError> {
        if self.asker_makes_the_quorum(ask).await {
            self.inner.stats.store.add("num_read_index_asker_quorum", 1);
            return Ok(self.applied().0);
        }
        let read = ReadOptions {
            level: Level::Linearizable,
            linearizable_timeout: crate::follower_read::REQUEST_TIMEOUT,
            ..Default::default()
        };
        self.check_read(Level::Linearizable, read).await?;
        Ok(self.applied().0)
    }

    /// Whether a read index may be given to `ask` without a quorum round (see `follower_read`):
    /// the asker and this node make a quorum of every configuration, the asker's vote is this
    /// node's committed vote as leader, this node has saved no other vote since, and it has
    /// applied an entry of that vote's term. The configuration is `with_leader_view`'s.
    async fn asker_makes_the_quorum(&self, ask: crate::follower_read::ReadIndexAsk) -> bool {
        let me = self.inner.raft_id;
        if ask.from == me || !ask.vote.is_committed() || ask.vote.leader_id().voted_for() != Some(me) {
            return false;
        }
        let (saved, changes) = self.inner.log.vote_and_membership_changes();
        if saved != Some(ask.vote) {
            return false;
        }
        self.with_leader_view(ask.vote, changes, |view| view.with(me, ask.from))
            .await
            .unwrap_or(false)
            && self.applied_own_term(&ask.vote)
    }

    /// Whether this leader holds its lease (see `read_index`), so that a linearizable read may
    /// be answered from its state now: a quorum of every configuration accepted AppendEntries
    /// it sent within the lease, it has saved no other vote since, and it has applied an entry
    /// of its own term (so its state holds every write acknowledged by any leader).
    async fn lease_holds(&self) -> bool {
        if self.inner.read_lease.is_zero() {
            return false;
        }
        // The time is read first: the vote read after it was this node's at that time too.
        let Some(since) = Instant::now().checked_sub(self.inner.read_lease) else {
            return false;
        };
        let me = self.inner.raft_id;
        let (saved, changes) = self.inner.log.vote_and_membership_changes();
        let Some(vote) = saved.filter(|v| v.is_committed() && v.leader_id().voted_for() == Some(me)) else {
            return false;
        };
        self.applied_own_term(&vote)
            && self
                .with_leader_view(vote, changes, |view| {
                    self.inner.acks.lease_holds(me, &vote, &view.configs, since)
                })
                .await
                .unwrap_or(false)
    }

    /// Whether this node has applied an entry of `vote`'s term.
    fn applied_own_term(&self, vote: &crate::types::Vote) -> bool {
        self.inner
            .sm
            .last_applied()
            .is_some_and(|l| l.leader_id.term == vote.leader_id().term)
    }

    /// `f` of this node's view of itself as leader under `vote`, or `None` if it does not lead
    /// under it. `changes` is the log's membership count read with the saved vote.
    ///
    /// The configuration comes from the Raft core, which is asked only when its last answer
    /// may be out of date (`LeaderView`): a leader's configuration changes only through
    /// entries it appends to its own log, and it stops being leader without saving a newer vote
    /// only when a membership entry removes it, so the answer holds while this node's saved
    /// vote and its log's membership count (`LogStore::vote_and_membership_changes`) stay as
    /// they were when the core gave it.
    async fn with_leader_view<R>(
        &self,
        vote: crate::types::Vote,
        changes: u64,
        f: impl FnOnce(&LeaderView) -> R,
    ) -> Option<R> {
        {
            let view = self.inner.leader_view.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = view
                .as_ref()
                .filter(|v| v.vote == vote && v.membership_changes == changes)
            {
                return Some(f(v));
            }
        }
        let log = self.inner.log.clone();
        let view = self
            .inner
            .raft
            .with_raft_state(move |st| {
                // Read on the core's task, where openraft appends: no membership entry can
                // reach the log between the two reads.
                let (_, membership_changes) = log.vote_and_membership_changes();
                (st.server_state == ServerState::Leader).then(|| LeaderView {
                    vote: *st.vote_ref(),
                    membership_changes,
                    configs: st.membership_state.effective().membership().get_joint_config().clone(),
                })
            })
            .await
            .ok()
            .flatten()
            .filter(|v| v.vote == vote)?;
        let r = f(&view);
        *self.inner.leader_view.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
        Some(r)
    }

    /// A linearizable read on a node that is not the leader: the leader's read index (shared
    /// by the reads waiting), then the wait until this node has applied it, both within the
    /// read's timeout. If the leader cannot give one (an older build, a leader that just
    /// stepped down), the read goes to the leader as rqlite's do.
    async fn follower_linearizable(&self, read: ReadOptions) -> Result<(), StoreError> {
        let Some(fr) = self.inner.follower_reads.get() else {
            return Err(self.leader_error());
        };
        let timeout = if read.linearizable_timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            read.linearizable_timeout
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let (rx, start) = fr.join();
        if start {
            let store = self.clone();
            tokio::spawn(async move {
                let Some(fr) = store.inner.follower_reads.get() else {
                    return;
                };
                fr.run(|| async {
                    let addr = match store.leader() {
                        Some(l) if l.id != store.inner.cfg.node_id => l.addr,
                        _ => return Err(store.leader_error()),
                    };
                    // The saved vote: any vote this node granted is saved before the
                    // candidate hears of it.
                    let vote = match store.saved_vote() {
                        Some(v) => v,
                        None => store
                            .inner
                            .raft
                            .with_raft_state(|st| *st.vote_ref())
                            .await
                            .map_err(internal)?,
                    };
                    let ask = crate::follower_read::ReadIndexAsk {
                        from: store.inner.raft_id,
                        vote,
                    };
                    Ok((addr, ask))
                })
                .await;
            });
        }
        let index = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(i))) => i,
            Ok(Ok(Err(StoreError::Timeout(m)))) => return Err(StoreError::Timeout(m)),
            Ok(Ok(Err(StoreError::NotLeader { leader: None }))) => return Err(StoreError::NotLeader { leader: None }),
            Ok(Ok(Err(_))) => return Err(self.leader_error()),
            Ok(Err(_)) => return Err(internal("read index requests stopped")),
            Err(_) => return Err(StoreError::Timeout("timeout waiting for fsm".into())),
        };
        self.inner.stats.store.add("num_follower_linearizable_reads", 1);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_applied(index, left)
            .await
            .map_err(|_| StoreError::Timeout("timeout waiting for fsm".into()))
    }

    /// Runs a read on a read connection. Most reads take microseconds: they run right here, on
    /// the thread that has the request, with an idle connection and within `INLINE_READ_BUDGET`,
    /// which costs no thread switch. A read that finds no idle connection, or runs past the
    /// budget (it is then stopped and, having changed nothing, run again from the start), goes
    /// to a blocking thread, where it may wait for a connection and run as long as its timeout.
    async fn read_local(&self, req: Request, mode: Mode) -> Result<Outcome, StoreError> {
        let conn = self.inner.pool.try_get();
        if let Some(c) = &conn
            && let Some(results) = exec::run_read_within(c, &req, mode, INLINE_READ_BUDGET)
        {
            return Ok(Outcome { results, raft_index: 0 });
        }
        let pool = self.inner.pool.clone();
        let results = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => crate::metric::pool_wait(|| pool.get())?,
            };
            Ok::<_, rq_db::Error>(exec::run_read(&conn, &req, mode))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Outcome { results, raft_index: 0 })
    }

    /// Whether every statement of `req` only reads; SQLite says, from the prepared statements
    /// (cached on the connection for the run that follows). In-line when a connection is idle.
    async fn is_read_only(&self, req: &Request) -> Result<bool, StoreError> {
        if let Some(c) = self.inner.pool.try_get() {
            return Ok(exec::is_read_only(&c, req));
        }
        let pool = self.inner.pool.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || {
            let conn = crate::metric::pool_wait(|| pool.get())?;
            Ok::<_, rq_db::Error>(exec::is_read_only(&conn, &req))
        })
        .await
        .map_err(internal)?
        .map_err(internal)
    }

    /// Replaces the database on every node with the SQLite file at `path` (already checked to
    /// be an intact database), through the log, a piece per entry.
    pub async fn load_file(&self, path: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncReadExt;
        if !self.is_leader() {
            return Err(self.leader_error());
        }
        let _one = self
            .inner
            .loading
            .try_lock()
            .map_err(|_| StoreError::Busy("a load is already in progress".into()))?;
        let started = Instant::now();
        let mut file = tokio::fs::File::open(path).await.map_err(internal)?;
        let len = file.metadata().await.map_err(internal)?.len();
        let id: u64 = rand::random();
        let (mut seq, mut sent) = (0u64, 0u64);
        loop {
            let n = (len - sent).min(LOAD_CHUNK_BYTES as u64) as usize;
            let mut data = vec![0u8; n];
            file.read_exact(&mut data).await.map_err(internal)?;
            sent += n as u64;
            let last = sent >= len;
            let chunk = LoadChunk { id, seq, last, data };
            match self.propose(Command::LoadChunk(chunk)).await {
                Ok(out) => {
                    if let Some(e) = out.results.first().and_then(StmtResult::error) {
                        return Err(StoreError::Internal(e.to_string()));
                    }
                }
                Err(e) => {
                    // Close the unfinished load so it holds nothing up; it fails its check.
                    self.end_stale_load().await;
                    return Err(e);
                }
            }
            if last {
                break;
            }
            seq += 1;
        }
        self.inner.stats.store.add("num_loads", 1);
        metrics::histogram!(crate::metric::LOAD_SECONDS, "kind" => "load").record(started.elapsed().as_secs_f64());
        // The pieces can leave the log once a snapshot holds the loaded database.
        self.take_snapshot().await?;
        Ok(())
    }

    /// Ends a load left unfinished (its sender failed or lost leadership) by logging an empty
    /// last piece: the partial file fails its check and the load is dropped on every node.
    /// The caller holds `loading`, so no load of this node's is under way.
    async fn end_stale_load(&self) {
        if let Some(p) = self.inner.sm.state().load {
            let end = LoadChunk {
                id: p.id,
                seq: p.next_seq,
                last: true,
                data: Vec::new(),
            };
            if let Err(e) = self.propose(Command::LoadChunk(end)).await {
                tracing::warn!(error = %e, "could not end an unfinished load");
            }
        }
    }

    /// A consistent backup of this node's database, as a file open at its start (already
    /// unlinked: it disappears when closed). It is made from a read transaction, so writes go on
    /// meanwhile, and in a temporary file, so memory stays flat whatever the database's size.
    pub async fn backup(&self, opts: BackupOptions) -> Result<std::fs::File, StoreError> {
        let db_path = self.db_path();
        let dir = self.inner.cfg.data_dir.clone();
        let stats = self.inner.stats.clone();
        tokio::task::spawn_blocking(move || -> Result<std::fs::File, StoreError> {
            let copy = scratch_file(&dir).map_err(internal)?;
            rq_db::snapshot::backup(&db_path, copy.path(), opts.format, opts.vacuum, &opts.tables).map_err(internal)?;
            // The copy was written through its path (SQLite recreates the file), so open it
            // by path; the handle outlives the name, which goes when `copy` is dropped.
            let mut out = std::fs::File::open(copy.path()).map_err(internal)?;
            if opts.compress {
                use std::io::{Seek, Write};
                let mut gz = tempfile::tempfile_in(&dir).map_err(internal)?;
                {
                    let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
                    std::io::copy(&mut out, &mut enc).map_err(internal)?;
                    enc.finish().map_err(internal)?.flush().map_err(internal)?;
                }
                gz.seek(std::io::SeekFrom::Start(0)).map_err(internal)?;
                out = gz;
            }
            stats.store.add("num_backups", 1);
            Ok(out)
        })
        .await
        .map_err(internal)?
    }

    /// A new scratch file in the data directory (for uploads), removed when dropped.
    pub fn scratch_file(&self) -> std::io::Result<tempfile::NamedTempFile> {
        scratch_file(&self.inner.cfg.data_dir)
    }

    /// Checks that the file at `path` is an intact SQLite database; the message says why not.
    pub async fn check_database_file(path: &Path) -> Result<(), String> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || rq_db::snapshot::validate(&path).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Replaces this single node's database with the SQLite file at `path` (already checked),
    /// bypassing the log, then takes a snapshot holding it.
    pub async fn boot(&self, path: &Path) -> Result<(), StoreError> {
        if !self.is_leader() {
            return Err(self.leader_error());
        }
        if self.nodes().len() != 1 {
            return Err(StoreError::NotSingleNode);
        }
        let _one = self
            .inner
            .loading
            .try_lock()
            .map_err(|_| StoreError::Busy("a load is already in progress".into()))?;
        let started = Instant::now();
        // A no-op entry fences the boot: everything logged before it is applied first.
        self.propose(Command::Noop).await?;
        self.inner.sm.boot(path.to_path_buf()).await.map_err(internal)?;
        self.inner.stats.store.add("num_boots", 1);
        metrics::histogram!(crate::metric::LOAD_SECONDS, "kind" => "boot").record(started.elapsed().as_secs_f64());
        self.snapshot(Some(1)).await?;
        Ok(())
    }

    /// Takes a snapshot now; `Ok(false)` when nothing was applied since the last one. With
    /// `trailing`, the log is then purged to keep only that many entries behind it.
    pub async fn snapshot(&self, trailing: Option<u64>) -> Result<bool, StoreError> {
        self.inner.stats.store.add("num_user_snapshots", 1);
        let taken = self.take_snapshot().await?;
        if taken && let Some(keep) = trailing {
            let upto = self.last_snapshot_index().saturating_sub(keep);
            if upto > 0 {
                self.inner.raft.trigger().purge_log(upto).await.map_err(internal)?;
            }
        }
        Ok(taken)
    }

    async fn take_snapshot(&self) -> Result<bool, StoreError> {
        if self.inner.sm.state().load.is_some() {
            return Err(StoreError::Busy("a load is in progress".into()));
        }
        let applied = self.inner.sm.last_applied().map(|l| l.index).unwrap_or(0);
        let snap = self.last_snapshot_index();
        if applied <= snap {
            return Ok(false);
        }
        self.inner.raft.trigger().snapshot().await.map_err(internal)?;
        // Wait for a snapshot past the last one (writes may move the applied index meanwhile).
        self.inner
            .raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index > snap), "user snapshot")
            .await
            .map(|_| true)
            .map_err(|_| StoreError::Timeout("timeout waiting for snapshot".into()))
    }

    /// Size of the database's WAL file.
    pub fn wal_size(&self) -> u64 {
        std::fs::metadata(self.db_path().with_extension("sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Checkpoints the WAL into the database file; returns whether it was emptied.
    pub async fn checkpoint(&self) -> bool {
        let stats = &self.inner.stats.db;
        let started = Instant::now();
        match self.inner.sm.checkpoint().await {
            Ok(done) => {
                stats.add("checkpoints", 1);
                stats.add("checkpoint_total", 1);
                if done {
                    stats.add("checkpoint_wal_truncated", 1);
                } else {
                    stats.add("checkpoint_partial", 1);
                }
                stats.set("checkpoint_duration_ms", started.elapsed().as_millis() as i64);
                done
            }
            Err(e) => {
                stats.add("checkpoint_errors", 1);
                tracing::warn!(error = %e, "checkpoint failed");
                false
            }
        }
    }

    /// Index of the newest snapshot (0 if none).
    pub fn last_snapshot_index(&self) -> u64 {
        self.inner
            .snapshots
            .current_meta()
            .and_then(|m| m.last_log_id)
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// Index and term of the last entry applied to the database.
    /// The index of the last applied entry that could change the database (rqlite's
    /// `db_applied_index`): what automatic backups compare to decide whether to upload.
    pub fn db_applied_index(&self) -> u64 {
        self.inner.sm.db_applied_index()
    }

    pub fn applied(&self) -> (u64, u64) {
        self.inner
            .sm
            .last_applied()
            .map(|l| (l.index, l.leader_id.term))
            .unwrap_or((0, 0))
    }

    /// Waits until this node has applied `index`, up to `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), StoreError> {
        if self.applied().0 >= index {
            return Ok(());
        }
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait applied")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Timeout(format!("index {index}: timeout waiting for fsm")))
    }

    /// Checks the database answers, at level `none`, within `timeout` (`Err("timeout")`).
    pub async fn probe_db(&self, timeout: Duration) -> Result<(), String> {
        // In-line when a connection is idle, as a point read is: no timer then.
        if let Some(c) = self.inner.pool.try_get() {
            return exec::probe(&c);
        }
        let pool = self.inner.pool.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let conn = crate::metric::pool_wait(|| pool.get()).map_err(|e| e.to_string())?;
            exec::probe(&conn)
        });
        match tokio::time::timeout(timeout, probe).await {
            Ok(done) => done.map_err(|e| e.to_string())?,
            Err(_) => Err("timeout".into()),
        }
    }

    /// Read-pool and file facts for `/status`.
    pub fn pool(&self) -> &Arc<ReadPool> {
        &self.inner.pool
    }

    pub fn db_path(&self) -> PathBuf {
        self.inner.cfg.data_dir.join(DB_FILE)
    }

    pub fn log_path(&self) -> PathBuf {
        self.inner.cfg.data_dir.join(LOG_DIR)
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        self.inner
            .snapshots
            .current_meta()
            .map(|m| vec![m.snapshot_id])
            .unwrap_or_default()
    }

    pub fn last_apply_ms(&self) -> u64 {
        self.inner.sm.last_apply_ms()
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Resolves, with the error, when Raft stops by itself because a write it cannot go on
    /// without failed (the disk is full, an I/O error). Never resolves otherwise.
    ///
    /// It looks every `FAULT_CHECK` rather than watching: Raft's metrics and the log's durable
    /// end change with every write, and waking a watcher on each would cost every write a
    /// thread switch.
    pub async fn fault(&self) -> String {
        let mut tick = tokio::time::interval(FAULT_CHECK);
        loop {
            tick.tick().await;
            if let Err(e) = &self.inner.metrics.borrow().running_state
                && !matches!(e, openraft::error::Fatal::Stopped)
            {
                return e.to_string();
            }
            if self.inner.durable.borrow().failed {
                return "a raft log flush failed".to_string();
            }
        }
    }

    /// Stops Raft, checkpoints the WAL into the database file, and records a clean stop.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        if self.checkpoint().await
            && let Err(e) = run_marker::end(&self.inner.cfg.data_dir)
        {
            tracing::warn!(error = %e, "could not record the clean stop");
        }
    }
}

/// A data directory rqlite wrote must be converted (`open_rqlite_data`) before it is opened.
fn refuse_foreign_data(dir: &Path) -> Result<(), StoreError> {
    if crate::upgrade::is_rqlite_data(dir) {
        return Err(StoreError::Internal(format!(
            "{} holds data written by rqlite that has not been converted",
            dir.display()
        )));
    }
    Ok(())
}

/// Scratch files in the data directory carry this prefix; leftovers are removed at start.
const SCRATCH_PREFIX: &str = "rqlite-tmp-";

/// A new scratch file in `dir`, removed when dropped.
fn scratch_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(SCRATCH_PREFIX).tempfile_in(dir)
}

/// Removes scratch files a crash left behind.
fn remove_scratch_files(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Brings the database to a state Raft can replay the log onto, and returns that state. A
/// file that holds a recorded state at or past the newest snapshot is kept as it is, and only
/// the log after its state is replayed. A file behind the snapshot, or one whose state is not
/// known (not recorded, or the host restarted under it), is rebuilt from the snapshot (its
/// checksum verified first), or, with no snapshot, started afresh: the log is never purged
/// without one, so replaying all of it rebuilds the database.
fn restore_if_behind(
    db: &mut Database,
    recorded: Option<Vec<u8>>,
    snapshots: &SnapshotStore,
    stats: &Stats,
) -> Result<SmState, StoreError> {
    let state = recorded.and_then(|b| match SmState::decode(&b) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable database state; rebuilding the database");
            None
        }
    });
    let Some(meta) = snapshots.current_meta() else {
        return match state {
            Some(s) => Ok(s),
            None => {
                tracing::warn!("the database's state is unknown and there is no snapshot; replaying the whole log");
                db.recreate().map_err(internal)?;
                Ok(SmState::default())
            }
        };
    };
    let snap_index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let db_index = state.as_ref().map(|s| s.last_applied.map_or(0, |l| l.index));
    if let Some(s) = state
        && db_index.is_some_and(|i| i >= snap_index)
    {
        stats.store.add("num_restores_start_skipped", 1);
        return Ok(s);
    }
    tracing::info!(
        ?db_index,
        snap_index,
        "database is behind the latest snapshot; restoring it"
    );
    snapshots.verify_current().map_err(internal)?;
    let state = SmState::of_snapshot(&meta);
    db.replace_with(&snapshots.data_path(&meta.snapshot_id), &state.encode())
        .map_err(internal)?;
    stats.store.add("num_restores_start", 1);
    Ok(state)
}

/// A request waiting to be logged.
struct Proposal {
    cmd: Command,
    reply: Reply,
}

/// Where a proposal's outcome goes.
type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

/// Whether a command must be logged alone: a load piece, or a request with a statement that
/// runs outside a transaction, which its entry must not share.
fn must_go_alone(cmd: &Command) -> bool {
    match cmd {
        Command::LoadChunk(_) => true,
        Command::Execute(r) => exec::needs_autocommit_request(r, Mode::Execute),
        Command::ExecuteQuery(r) => exec::needs_autocommit_request(r, Mode::Request),
        _ => false,
    }
}

/// Group commit: takes every proposal that queued up while the previous entry was being
/// committed and logs them as one entry, so one fsync (per node) serves them all. openraft 0.9
/// writes one entry at a time (its core waits for each append), so batching must happen before
/// it.
///
/// The clients an entry answers usually send their next request at once. The next entry
/// waits briefly (at most `LINGER`) for as many requests as the last entry answered plus those
/// that queued meanwhile, so that those clients share one entry instead of alternating between
/// two half-full ones. A lone client never waits; when clients go quiet, the expectation
/// shrinks to what actually arrived. The wait lets the runtime go round once before it arms a
/// timer, and arms at most one per entry.
async fn proposer_loop(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let mut carried: Option<Proposal> = None;
    let mut expect = 0usize;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut statements = first.cmd.statements();
        let alone = must_go_alone(&first.cmd);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut yielded = false;
        let mut linger: Option<Pin<Box<tokio::time::Sleep>>> = None;
        while !alone && batch.len() < MAX_BATCH_REQUESTS && statements < MAX_BATCH_STATEMENTS {
            let next = match rx.try_recv() {
                Ok(p) => p,
                Err(_) if batch.len() < expect && !yielded => {
                    // One round of the runtime first: requests already read, or waiting in
                    // their sockets, queue without a timer.
                    yielded = true;
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(_) if batch.len() < expect => {
                    // One timer per entry: arming one earlier than the I/O driver's next
                    // wake-up costs an eventfd write and an extra `epoll_wait`.
                    let linger = linger.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    tokio::select! {
                        biased;
                        p = rx.recv() => match p {
                            Some(p) => p,
                            None => break,
                        },
                        () = linger.as_mut() => break,
                    }
                }
                Err(_) => break,
            };
            if must_go_alone(&next.cmd) {
                carried = Some(next);
                break;
            }
            statements += next.cmd.statements();
            batch.push(next);
        }
        let n = batch.len();
        let (mut cmds, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let cmd = if n == 1 {
            cmds.swap_remove(0)
        } else {
            Command::Batch(cmds)
        };
        let logged = Logged {
            appended_at_ms: now_ms(),
            cmd,
        };
        crate::metric::entry_requests().record(n as f64);
        let proposed = Instant::now();
        let result = raft.client_write(logged).await;
        crate::metric::commit().record(proposed.elapsed().as_secs_f64());
        expect = n + rx.len();
        answer(replies, result);
    }
}

/// Flushes this node's own entries in the background while it has other voters to replicate
/// to (see `log_store`).
async fn background_flush_switch(raft: Raft, log: LogStore, id: u64) {
    let mut rx = raft.server_metrics();
    loop {
        let others = rx
            .borrow_and_update()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v != id);
        log.flush_own_entries_in_background(others.then_some(id));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Every `LEADERSHIP_CHECK`: tells the requests waiting in `while_leader` when this node is not
/// (or no longer) the leader, and ticks for a leadership round under way.
async fn watch_leadership(store: Store) {
    let mut tick = tokio::time::interval(LEADERSHIP_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let tx = &store.inner.not_leading;
        if tx.receiver_count() > 0 && !store.is_leader() {
            tx.send_modify(|n| *n += 1);
        }
        if store.inner.ticks.receiver_count() > 0 {
            store.inner.ticks.send_replace(());
        }
    }
}

/// Counts each change of the leader this node knows of (`store.leader_changes_observed`).
async fn count_leader_changes(raft: Raft, stats: Arc<Stats>) {
    let mut rx = raft.server_metrics();
    // A node starts knowing no leader; one it has learned of by the time this runs counts.
    let mut known = None;
    loop {
        let now = rx.borrow_and_update().current_leader;
        if now.is_some() && now != known {
            stats.store.add("leader_changes_observed", 1);
        }
        known = now;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Sends each proposal of a logged batch its own part of the outcome.
fn answer(
    replies: Vec<Reply>,
    result: Result<openraft::raft::ClientWriteResponse<TypeConfig>, RaftError<u64, ClientWriteError<u64, NodeInfo>>>,
) {
    match result {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut parts = resp.data.parts.into_iter();
            for reply in replies {
                let results = parts.next().unwrap_or_default();
                let _ = reply.send(Ok(Outcome {
                    results,
                    raft_index: index,
                }));
            }
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    StoreError::NotLeader { leader: f.leader_node }
                }
                other => internal(other),
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// This node as leader, as its Raft core saw it: its vote, its log's membership count then, and
/// the configurations of its effective membership (two while joint).
struct LeaderView {
    vote: crate::types::Vote,
    membership_changes: u64,
    configs: Vec<BTreeSet<u64>>,
}

impl LeaderView {
    /// Whether `me` and `other` make a quorum of every configuration.
    fn with(&self, me: u64, other: u64) -> bool {
        self.configs.iter().all(|c| {
            let have = c.iter().filter(|n| **n == me || **n == other).count();
            have * 2 > c.len()
        })
    }
}

/// Answers queued linearizable reads in groups: every waiter taken in one round arrived before
/// the round began, so one confirmation serves them all.
async fn read_barrier_loop(store: Store, mut rx: mpsc::Receiver<oneshot::Sender<Result<(), StoreError>>>) {
    let stats = store.inner.stats.clone();
    let mut probes = Probes::new(store.inner.acks.clone(), store.inner.raft.clone());
    loop {
        // Probes still out when a round ended are answered between rounds too, so their
        // connections stay usable.
        let first = tokio::select! {
            w = rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
            Some(_) = probes.next() => continue,
        };
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let started = Instant::now();
        let r = store.confirm_leadership(&mut probes).await;
        match &r {
            Ok(()) => {
                stats.store.add("num_verify_leader", 1);
                stats
                    .store
                    .set("verify_leader_duration", started.elapsed().as_millis() as i64);
            }
            Err(_) => stats.store.add("num_verify_leader_failed", 1),
        }
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

/// How a voter answered a saved-vote probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probed {
    /// It holds this leader's vote.
    Held,
    /// It holds a newer vote: this leader may have been deposed.
    Newer,
    /// No answer (unreachable, or a build without the probe), or an older vote, which this
    /// leader's next AppendEntries brings up to date.
    Unanswered,
}

/// The saved-vote probes out to other voters, at most one per voter: a round that begins while
/// one is out does not count on that voter, whose answer may predate it.
struct Probes {
    acks: Arc<AckClock>,
    raft: Raft,
    out: BTreeSet<u64>,
    /// How long each voter took to answer its last question (`Duration::MAX` when it did not
    /// answer for this leader): the quickest are asked first.
    answer_times: BTreeMap<u64, Duration>,
    pending: futures::stream::FuturesUnordered<futures::future::BoxFuture<'static, ProbeAnswer>>,
}

/// A voter's id, when it was asked, and its answer.
type ProbeAnswer = (u64, Instant, Result<Option<crate::types::Vote>, StoreError>);

impl Probes {
    fn new(acks: Arc<AckClock>, raft: Raft) -> Probes {
        Probes {
            acks,
            raft,
            out: BTreeSet::new(),
            answer_times: BTreeMap::new(),
            pending: futures::stream::FuturesUnordered::new(),
        }
    }

    /// The voters to ask first, and those held back (see `read_index::plan`).
    fn plan(&self, me: u64, configs: &[BTreeSet<u64>]) -> (Vec<u64>, Vec<u64>) {
        crate::read_index::plan(me, configs, &self.out, &self.answer_times)
    }

    fn send(&mut self, probe: &crate::VoteProbe, id: u64, addr: String, timeout: Duration) {
        if self.out.insert(id) {
            let sent = Instant::now();
            let asking = probe(addr, timeout);
            self.pending.push(Box::pin(async move { (id, sent, asking.await) }));
        }
    }

    /// The next answer, noted in the ack clock as an AppendEntries answer would be; `None`
    /// when no probe is out.
    async fn next(&mut self) -> Option<Probed> {
        let (id, sent, held) = self.pending.next().await?;
        self.out.remove(&id);
        let vote = self.raft.metrics().borrow().vote;
        Some(match held {
            Ok(Some(v)) if v == vote => {
                self.acks.acked(id, v, sent);
                self.answer_times.insert(id, sent.elapsed());
                Probed::Held
            }
            Ok(Some(v)) if v > vote => {
                self.acks.failed(id, sent);
                self.answer_times.insert(id, Duration::MAX);
                Probed::Newer
            }
            _ => {
                self.answer_times.insert(id, Duration::MAX);
                Probed::Unanswered
            }
        })
    }
}

/// Every `-raft-snap-int`: snapshots if `-raft-snap` entries were applied since the last one,
/// and checkpoints the WAL once it holds `-raft-snap-wal-size` bytes.
async fn snapshot_ticker(store: Store) {
    let interval = store.inner.cfg.snapshot_interval.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (applied, _) = store.applied();
        let last = store.last_snapshot_index();
        // A snapshot cannot hold a load's staging file: none is taken while one is under way,
        // and a load nobody is sending any more is ended.
        let loading = store.inner.sm.state().load.is_some();
        if loading
            && store.is_leader()
            && let Ok(_no_load_running) = store.inner.loading.try_lock()
        {
            store.end_stale_load().await;
        }
        let due = !loading
            && store.inner.cfg.snapshot_threshold > 0
            && applied.saturating_sub(last) >= store.inner.cfg.snapshot_threshold;
        if due && let Err(e) = store.inner.raft.trigger().snapshot().await {
            tracing::warn!(error = %e, "could not trigger snapshot");
            return;
        }
        let wal_limit = store.inner.cfg.wal_checkpoint_size;
        if wal_limit > 0 && store.wal_size() >= wal_limit {
            store.checkpoint().await;
        }
    }
}
