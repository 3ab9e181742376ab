//! The `store` subtree of `/status`, in rqlite's shape.
//!
//! Keys that only describe rqlite's Go internals (BoltDB statistics, the hashicorp observer)
//! are reported with this node's equivalents or their idle values, so clients that read them
//! find them.

use std::path::Path;

use openraft::ServerState;
use rq_proto::gofmt::{duration_string as go_duration, friendly_bytes, rfc3339_ms};
use serde_json::{Value, json};

use crate::store::{SNAPSHOT_DIR, Store, trailing_logs};

/// Total size of the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower | ServerState::Learner => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Shutdown => "Shutdown",
    }
}

impl Store {
    /// The `store` object of `/status`.
    pub fn status(&self) -> Value {
        let cfg = self.config();
        let metrics = self.raft().metrics().borrow().clone();
        let (applied, applied_term) = self.applied();
        let leader = self.leader();
        let nodes = self.nodes();
        let me_voter = self.is_voter();
        let db_path = self.db_path();
        let snap = self.snapshot_meta();
        let (snap_index, snap_term) = snap
            .as_ref()
            .and_then(|m| m.last_log_id)
            .map(|l| (l.index, l.leader_id.term))
            .unwrap_or((0, 0));
        let last_log_term = metrics.vote.leader_id().term;
        let latest_configuration = format!(
            "[{}]",
            nodes
                .iter()
                .map(|(n, voter)| format!(
                    "{{Suffrage:{} ID:{} Address:{}}}",
                    if *voter { "Voter" } else { "Nonvoter" },
                    n.id,
                    n.addr
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let last_contact: Value = if metrics.state == ServerState::Leader {
            json!(0)
        } else {
            match self.leader_contact_age() {
                Some(age) => json!(go_duration(age)),
                None => json!("never"),
            }
        };
        let log_size = crate::log_store::disk_size(&self.log_path());
        let mut raft = json!({
            "applied_index": metrics.last_applied.map(|l| l.index).unwrap_or(0),
            "commit_index": self.commit_index(),
            "fsm_pending": 0,
            "last_contact": last_contact,
            "last_log_index": metrics.last_log_index.unwrap_or(0),
            "last_log_term": last_log_term,
            "last_snapshot_index": snap_index,
            "last_purged_index": metrics.purged.map(|l| l.index).unwrap_or(0),
            "last_snapshot_term": snap_term,
            "latest_configuration": latest_configuration,
            "latest_configuration_index": metrics.membership_config.log_id().map(|l| l.index).unwrap_or(0),
            "num_peers": if me_voter { nodes.iter().filter(|(_, v)| *v).count().saturating_sub(1) } else { 0 },
            "protocol_version": 3,
            "protocol_version_max": 3,
            "protocol_version_min": 0,
            "snapshot_version_max": 1,
            "snapshot_version_min": 0,
            "state": state_name(metrics.state),
            "term": metrics.current_term,
            "log_size": log_size,
            "log_size_friendly": friendly_bytes(log_size),
            "voter": me_voter,
            "config": {
                "LocalID": cfg.node_id,
                "HeartbeatTimeout": cfg.heartbeat_timeout.as_nanos() as u64,
                "ElectionTimeout": cfg.election_timeout.as_nanos() as u64,
                "LeaderLeaseTimeout": 500_000_000u64,
                "CommitTimeout": 50_000_000u64,
                "SnapshotInterval": cfg.snapshot_interval.as_nanos() as u64,
                "SnapshotThreshold": cfg.snapshot_threshold,
                "MaxAppendEntries": 512,
                "ShutdownOnRemove": false,
                "LogLevel": cfg.raft_log_level,
                "NoSnapshotRestoreOnStart": false,
            },
            "transport": {
                "command_commit_index": 0,
                "compress_snap": false,
                "leader_commit_index": self.leader_commit(),
            },
        });
        if let Some(ms) = metrics.millis_since_quorum_ack {
            raft["millis_since_quorum_ack"] = json!(ms);
        }
        let (open_conns, idle) = self.pool().counts();
        let ro_pragmas = self.read_pragmas();
        let db_size = file_size(&db_path);
        let wal_size = file_size(&db_path.with_extension("sqlite-wal"));
        let dsn_fk = if cfg.foreign_keys { "true" } else { "false" };
        let snapshots_dir = cfg.data_dir.join(SNAPSHOT_DIR);
        let dir_bytes = dir_size(&cfg.data_dir);
        json!({
            "open": {},
            "addr": cfg.raft_addr,
            "node_id": cfg.node_id,
            "leader": {
                "addr": leader.as_ref().map(|l| l.addr.clone()).unwrap_or_default(),
                "node_id": leader.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
            },
            "ready": self.is_ready(),
            "raft": raft,
            "fsm_index": applied,
            "fsm_term": applied_term,
            "fsm_update_time": rfc3339_ms(self.last_apply_ms()),
            "db_applied_index": self.db_applied_index(),
            "leader_appended_at_time": rfc3339_ms(self.last_apply_ms()),
            "strong_read_term": 0,
            "observer": {"dropped": 0, "observed": 0},
            "cdc": {"enabled": self.cdc_queue().is_some(), "registered": self.cdc_queue().is_some()},
            "apply_timeout": go_duration(cfg.apply_timeout),
            "heartbeat_timeout": go_duration(cfg.heartbeat_timeout),
            "election_timeout": go_duration(cfg.election_timeout),
            "commit_timeout": "50ms",
            "snapshot_threshold": cfg.snapshot_threshold,
            "snapshot_interval": go_duration(cfg.snapshot_interval),
            "snapshot_cas": {"owner": null},
            "reap_timeout": go_duration(cfg.reap_timeout),
            "reap_read_only_timeout": go_duration(cfg.reap_read_only_timeout),
            "no_freelist_sync": false,
            "trailing_logs": trailing_logs(cfg.snapshot_threshold),
            "request_marshaler": {"compression_batch": 512, "compression_size": 4096, "force_compression": false},
            "nodes": nodes.iter().map(|(n, voter)| json!({
                "id": n.id,
                "addr": n.addr,
                "suffrage": if *voter { "voter" } else { "nonvoter" },
            })).collect::<Vec<_>>(),
            "dir": cfg.data_dir.display().to_string(),
            "dir_size": dir_bytes,
            "dir_size_friendly": friendly_bytes(dir_bytes),
            "db_conf": {"fk_constraints": cfg.foreign_keys},
            "snapshot_store": {
                "dir": snapshots_dir.display().to_string(),
                "dir_size": dir_size(&snapshots_dir),
                "snapshots": self.snapshot_ids(),
            },
            "sqlite3": {
                "path": db_path.display().to_string(),
                "version": rq_db::stats::sqlite_version(),
                "db_size": db_size,
                "db_size_friendly": friendly_bytes(db_size),
                "size": db_size,
                "wal_size": wal_size,
                "extensions": [],
                "pragmas": {"rw": self.rw_pragmas(), "ro": ro_pragmas},
                "rw_dsn": format!("file:{}?_fk={dsn_fk}&_journal=WAL&_sync=0", db_path.display()),
                "ro_dsn": format!("file:{}?_fk={dsn_fk}&_journal=WAL&_query_only=true&_sync=0&mode=ro", db_path.display()),
                "conn_pool_stats": {
                    "rw": {"max_open_connections": 1, "open_connections": 1, "in_use": 0, "idle": 1,
                           "wait_count": 0, "wait_duration": 0, "max_idle_closed": 0,
                           "max_idle_time_closed": 0, "max_lifetime_closed": 0},
                    "ro": {"max_open_connections": self.pool().max(), "open_connections": open_conns,
                           "in_use": open_conns - idle, "idle": idle, "wait_count": 0, "wait_duration": 0,
                           "max_idle_closed": 0, "max_idle_time_closed": 0, "max_lifetime_closed": 0},
                },
                "mem_stats": self.read_mem_stats(),
                "compile_options": self.compile_options(),
            },
        })
    }
}
