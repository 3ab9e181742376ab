//! Counters reported under `/debug/vars`, in Go expvar's shape: named maps of named integers.
//!
//! Every key a map will ever hold is declared when the map is made, as rqlite declares its
//! expvar keys, so a fresh node reports them all at zero.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// One expvar map: a fixed set of keys, each an atomic integer.
#[derive(Debug)]
pub struct ExpvarMap {
    vars: BTreeMap<&'static str, Arc<AtomicI64>>,
}

/// One key of an `ExpvarMap`, looked up once: counting is then a single atomic add, where
/// `ExpvarMap::add` searches the map by name. For the counters every request bumps.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicI64>);

impl Counter {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

impl ExpvarMap {
    pub fn new(keys: &[&'static str]) -> ExpvarMap {
        ExpvarMap {
            vars: keys.iter().map(|k| (*k, Arc::new(AtomicI64::new(0)))).collect(),
        }
    }

    /// Adds `n` to `key`. Keys are declared up front; an undeclared key is a bug, caught by
    /// the unit tests' debug assertion and ignored in release builds.
    pub fn add(&self, key: &str, n: i64) {
        match self.vars.get(key) {
            Some(v) => {
                v.fetch_add(n, Ordering::Relaxed);
            }
            None => debug_assert!(false, "undeclared expvar key {key}"),
        }
    }

    /// A handle on `key` (declared up front, as for `add`; an undeclared key gets a counter
    /// that no map reports).
    pub fn counter(&self, key: &str) -> Counter {
        match self.vars.get(key) {
            Some(v) => Counter(v.clone()),
            None => {
                debug_assert!(false, "undeclared expvar key {key}");
                Counter(Arc::default())
            }
        }
    }

    /// Sets a gauge.
    pub fn set(&self, key: &str, n: i64) {
        match self.vars.get(key) {
            Some(v) => v.store(n, Ordering::Relaxed),
            None => debug_assert!(false, "undeclared expvar key {key}"),
        }
    }

    pub fn get(&self, key: &str) -> i64 {
        self.vars.get(key).map(|v| v.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Keys and values, sorted by key.
    pub fn entries(&self) -> Vec<(&'static str, i64)> {
        self.vars.iter().map(|(k, v)| (*k, v.load(Ordering::Relaxed))).collect()
    }
}

/// The `store` map.
pub const STORE_KEYS: &[&str] = &[
    "auto_optimize_duration",
    "auto_vacuum_duration",
    "failed_heartbeat_observed",
    "fsm_apply_duration_us",
    "leader_changes_dropped",
    "leader_changes_observed",
    "nodes_reaped_failed",
    "nodes_reaped_ok",
    "num_auto_optimizes",
    "num_auto_optimizes_failed",
    "num_auto_restores",
    "num_auto_restores_failed",
    "num_auto_restores_skipped",
    "num_auto_vacuums",
    "num_auto_vacuums_failed",
    "num_backups",
    "num_boots",
    "num_compressed_commands",
    "num_db_stats_errors",
    "num_follower_linearizable_reads",
    "num_ignored_joins",
    "num_joins",
    "num_loads",
    "num_provider_checks",
    "num_read_index_asker_quorum",
    "num_read_lease",
    "num_provider_provides",
    "num_provider_provides_fail",
    "num_recoveries",
    "num_removed_before_joins",
    "num_restores",
    "num_restores_failed",
    "num_restores_start",
    "num_restores_start_skipped",
    "num_snapshot_persists",
    "num_snapshot_persists_failed",
    "num_snapshots",
    "num_snapshots_failed",
    "num_snapshots_full",
    "num_snapshots_incremental",
    "num_uncompressed_commands",
    "num_user_snapshots",
    "num_user_snapshots_failed",
    "num_verify_leader",
    "num_verify_leader_failed",
    "num_wal_snapshots",
    "num_wal_snapshots_failed",
    "snapshot_crc32_create_duration",
    "snapshot_create_duration",
    "snapshot_persist_duration",
    "snapshot_sync_duration",
    "verify_leader_duration",
];

/// The `db` map.
pub const DB_KEYS: &[&str] = &[
    "backup_sleeps",
    "backup_step_dones",
    "backup_step_errors",
    "checkpoint_busy_errors",
    "checkpoint_duration_ms",
    "checkpoint_errors",
    "checkpoint_invariant_errors",
    "checkpoint_partial",
    "checkpoint_total",
    "checkpoint_wal_truncated",
    "checkpointed_moves",
    "checkpoints",
    "commit_hooks",
    "compacted_wal_size",
    "create_compacted_wal_duration_ms",
    "dropped_cdc_events",
    "execute_transactions",
    "execution_errors",
    "executions",
    "executions_force_queries",
    "open_duration_ms",
    "precompact_wal_size",
    "preupdates",
    "preupdates_callback_errors",
    "preupdates_errors",
    "queries",
    "query_errors",
    "query_transactions",
    "request_transactions",
    "requests",
    "update_hooks",
    "update_hooks_callback_errors",
    "update_hooks_errors",
];

/// The `cluster` map: requests served by the node-to-node API.
pub const CLUSTER_KEYS: &[&str] = &[
    "num_backup_req",
    "num_broadcast_hwm_req",
    "num_client_execute_retries",
    "num_client_force_new_conn",
    "num_client_load_retries",
    "num_client_query_retries",
    "num_client_read_timeouts",
    "num_client_request_retries",
    "num_client_retries",
    "num_client_write_timeouts",
    "num_conn_rejected",
    "num_execute_req",
    "num_get_node_api_req",
    "num_get_node_api_req_local",
    "num_get_node_api_req_retries",
    "num_get_node_api_resp",
    "num_hwm_update_dropped",
    "num_join_req",
    "num_load_req",
    "num_notify_req",
    "num_query_req",
    "num_read_index_req",
    "num_remove_node_req",
    "num_request_req",
    "num_saved_vote_req",
    "num_stepdown_req",
];

/// The `proxy` map: requests this node passed to the leader.
pub const PROXY_KEYS: &[&str] = &[
    "remote_backups",
    "remote_executions",
    "remote_executions_failed",
    "remote_loads",
    "remote_queries",
    "remote_queries_failed",
    "remote_remove_node",
    "remote_requests",
    "remote_requests_failed",
    "remote_stepdowns",
];

/// The `queue` map.
pub const QUEUE_KEYS: &[&str] = &["num_flush", "num_timeout", "objects_rx", "objects_tx"];

/// The `snapshot` map: rqlite's snapshot store. Reaping and incremental snapshots are
/// rqlite's own and stay at zero here.
pub const SNAPSHOT_KEYS: &[&str] = &[
    "auto_reap_duration_ms",
    "persist_duration_ms",
    "persist_size",
    "read_timeout_total",
    "reap_errors",
    "reap_execute_duration_ms",
    "reap_plan_recovered",
    "reap_snapshots",
    "reap_total",
    "reap_wals",
    "sink_errors",
    "sink_full_crc32_duration_ms",
    "sink_full_total",
    "sink_incremental_total",
    "upgrade_fail",
    "upgrade_ok",
];

/// The store's counters.
#[derive(Debug)]
pub struct Stats {
    pub store: ExpvarMap,
    pub db: ExpvarMap,
    pub queue: ExpvarMap,
    pub cluster: ExpvarMap,
    pub proxy: ExpvarMap,
    /// Automatic backups (`-auto-backup`).
    pub uploader: ExpvarMap,
    /// The automatic restore's download (`-auto-restore`).
    pub downloader: ExpvarMap,
    /// Change data capture (`-cdc-config`), rqlite's `cdc.service` map.
    pub cdc: ExpvarMap,
    /// Snapshots written, and rqlite data directories converted at start.
    pub snapshot: ExpvarMap,
}

/// rqlite's `cdc.service` map, and this node's own: `fifo_bytes` (the queue's size on disk),
/// `dropped_fifo_full` (changes dropped at the queue's bound) and `highwater_mark`.
pub const CDC_KEYS: &[&str] = &[
    "batcher_events_write",
    "batcher_reads",
    "batcher_write_ignored",
    "batcher_writes",
    "dropped_failed_to_send",
    "dropped_fifo_full",
    "fifo_bytes",
    "fifo_enqueue_ignored",
    "fifo_size",
    "highwater_mark",
    "hwm_ignored",
    "num_bytes_tx",
    "num_events_tx_failed",
    "num_events_tx_ok",
    "retries",
    "snapshot_sync",
];

/// rqlite's `uploader` map.
pub const UPLOADER_KEYS: &[&str] = &[
    "last_upload_bytes",
    "num_sum_get_fail",
    "num_uploads_fail",
    "num_uploads_ok",
    "num_uploads_skipped",
    "num_uploads_skipped_id",
    "total_upload_bytes",
];

/// rqlite's `downloader` map.
pub const DOWNLOADER_KEYS: &[&str] = &["download_bytes", "num_downloads_fail", "num_downloads_ok"];

impl Default for Stats {
    fn default() -> Self {
        Stats {
            store: ExpvarMap::new(STORE_KEYS),
            db: ExpvarMap::new(DB_KEYS),
            queue: ExpvarMap::new(QUEUE_KEYS),
            cluster: ExpvarMap::new(CLUSTER_KEYS),
            proxy: ExpvarMap::new(PROXY_KEYS),
            uploader: ExpvarMap::new(UPLOADER_KEYS),
            downloader: ExpvarMap::new(DOWNLOADER_KEYS),
            cdc: ExpvarMap::new(CDC_KEYS),
            snapshot: ExpvarMap::new(SNAPSHOT_KEYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_keys_count() {
        let s = Stats::default();
        s.store.add("num_snapshots", 2);
        s.store.set("fsm_apply_duration_us", 7);
        assert_eq!(s.store.get("num_snapshots"), 2);
        assert_eq!(s.store.get("fsm_apply_duration_us"), 7);
        assert!(s.db.entries().iter().all(|(_, v)| *v == 0));
    }

    #[test]
    fn a_counter_adds_to_its_key() {
        let s = Stats::default();
        let c = s.db.counter("queries");
        c.add(3);
        c.clone().add(1);
        s.db.add("queries", 1);
        assert_eq!(s.db.get("queries"), 5);
        assert_eq!(s.db.entries().iter().filter(|(_, v)| *v != 0).count(), 1);
    }
}
