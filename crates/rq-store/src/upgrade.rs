//! Opening a data directory written by rqlite (v7 to v10) in place.
//!
//! At start, a directory that holds rqlite's `raft.db` and no `raft-log/` is converted:
//!
//! 1. Everything is read and checked, and this node's layout is written beside rqlite's files
//!    in `rqlite-upgrade.tmp/`: the newest snapshot's database as this node's snapshot, with
//!    the cluster configuration it records, and a new `raft-log/` holding the vote and the log
//!    entries after that snapshot with their terms and indexes. rqlite's commands become this
//!    node's, configurations become memberships, no-ops and barriers become blank entries. A log
//!    with no snapshot before it gets a blank entry at index 0, where openraft's logs begin.
//!    Both are synced.
//! 2. A plan naming every rename still to do is written and synced (`rqlite-upgrade.plan`).
//! 3. rqlite's files move under `rqlite-vN-backup/`; then this node's `snapshots/` and, last,
//!    `raft-log/` move into place; then the plan is removed.
//!
//! A crash before the plan leaves rqlite's files as they were and a staging directory that the
//! next start discards; after it, the next start finishes the renames, each of which either
//! happened or did not. A directory that cannot be read is refused with the reason, and the
//! staging directory is removed, so nothing changes.
//!
//! rqlite's live `db.sqlite` is not used: the database is rebuilt from the snapshot, and the
//! entries after it are applied once they are known to be committed (at once up to the applied
//! index rqlite v7.21 to v8.22 recorded, otherwise when the cluster's leader commits them).
//!
//! Architecture invariant: `raft-log/` appears in a converted directory only after the
//! snapshot and the log it names are durable, and rqlite's files are moved aside only once
//! the plan saying how to finish is durable.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, LeaderId, Membership};
use rq_proto::Logged;
use rq_upgrade::Layout;
use rq_upgrade::raft_db::{LogEntry, LogType, RaftDb, RaftDbError, Server, Suffrage, decode_configuration};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::snapshot::SnapshotStore;
use crate::stats::Stats;
use crate::store::{LOG_DIR, SNAPSHOT_DIR};
use crate::types::{Entry, LogId, NodeInfo, SnapshotMeta, StoredMembership, Vote, raft_id};

const STAGING: &str = "rqlite-upgrade.tmp";
const PLAN: &str = "rqlite-upgrade.plan";
const LOCK: &str = "rqlite-upgrade.lock";
/// Backups are named `rqlite-<versions>-backup`.
const BACKUP_PREFIX: &str = "rqlite-v";
const BACKUP_SUFFIX: &str = "-backup";

/// What rqlite keeps in a data directory and this node does not use; moved aside. (`raft/`
/// keeps its meaning, `peers.json`, and `extensions/` is rebuilt from the flags at start.)
const RQLITE_FILES: &[&str] = &[
    "raft.db",
    "db.sqlite",
    "db.sqlite-wal",
    "db.sqlite-shm",
    "snapshots",
    "rsnapshots",
    "wsnapshots",
    "wal-staging",
    "clean_snapshot",
    "applied_index",
    "cdc",
];

/// Entries written to the new log per append (and per fsync).
const BATCH_ENTRIES: usize = 1024;
const BATCH_BYTES: usize = 16 << 20;

/// The renames that finish a conversion, recorded before the first one.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    /// The directory rqlite's files move to.
    backup: String,
    /// `(from, to)`, relative to the data directory, in order.
    renames: Vec<(String, String)>,
    /// Snapshot format upgrades rqlite would have counted for this directory.
    upgrades: i64,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("opening the rqlite data directory: {e}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Whether `dir` holds rqlite's data, or a conversion of it that is not finished.
pub(crate) fn is_rqlite_data(dir: &Path) -> bool {
    dir.join(PLAN).exists() || (dir.join("raft.db").exists() && !dir.join(LOG_DIR).exists())
}

/// Converts `dir` if it holds rqlite's data, or finishes a conversion a crash interrupted; then
/// removes the rqlite files earlier conversions kept if `remove_backup`, or says where they
/// are. Returns the snapshot format upgrades rqlite would have counted (`snapshot.upgrade_ok`):
/// 2 for a v7 snapshot (to v8, then to v10), 1 for a v8/v9 one, 0 for a v10 one, none, or a
/// directory that is already this node's. Blocking.
pub fn open_rqlite_data(dir: &Path, remove_backup: bool) -> Result<i64, StoreError> {
    let converting = is_rqlite_data(dir);
    let upgrades = if converting {
        let lock = fs::File::create(dir.join(LOCK)).map_err(err)?;
        if lock.try_lock().is_err() {
            return Err(err(format!("{} is in use by another process", dir.display())));
        }
        let done = if dir.join(PLAN).exists() {
            resume(dir)
        } else {
            convert(dir).map_err(|e| match rq_upgrade::inspect(dir) {
                Ok(found) => StoreError::Internal(format!("{e}. The directory holds {found}")),
                Err(_) => e,
            })
        };
        let _ = fs::remove_file(dir.join(LOCK));
        done?
    } else {
        0
    };
    // A conversion has just said where its backup is.
    if remove_backup || !converting {
        tend_backups(dir, remove_backup)?;
    }
    Ok(upgrades)
}

/// The backup directories of earlier conversions in `dir`.
fn backups(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(BACKUP_PREFIX) && n.ends_with(BACKUP_SUFFIX) && e.path().is_dir()
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn backup_name(layout: Layout) -> String {
    let versions = match layout {
        Layout::V7 => "7",
        Layout::V8 => "8",
        Layout::V10 => "10",
        // Before its first snapshot a directory does not say which release wrote it.
        Layout::NoSnapshots => "7-10",
    };
    format!("{BACKUP_PREFIX}{versions}{BACKUP_SUFFIX}")
}

fn convert(dir: &Path) -> Result<i64, StoreError> {
    let staging = dir.join(STAGING);
    if staging.exists() {
        // An earlier attempt that stopped before its plan: rqlite's files are untouched.
        fs::remove_dir_all(&staging).map_err(err)?;
    }
    let layout = rq_upgrade::layout(dir);
    fs::create_dir_all(&staging).map_err(err)?;
    let upgrades = match stage(dir, &staging) {
        Ok(u) => u,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    fail::fail_point!("upgrade-staged");
    let backup = backup_name(layout);
    let mut renames: Vec<(String, String)> = RQLITE_FILES
        .iter()
        .filter(|f| dir.join(f).symlink_metadata().is_ok())
        .map(|f| (f.to_string(), format!("{backup}/{f}")))
        .collect();
    for ours in [SNAPSHOT_DIR, LOG_DIR] {
        renames.push((format!("{STAGING}/{ours}"), ours.to_string()));
    }
    let plan = Plan {
        backup,
        renames,
        upgrades,
    };
    let tmp = dir.join(format!("{PLAN}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(&plan).map_err(err)?).map_err(err)?;
    fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(err)?;
    fs::rename(&tmp, dir.join(PLAN)).map_err(err)?;
    sync_dir(dir).map_err(err)?;
    fail::fail_point!("upgrade-planned");
    finish(dir, &plan)
}

fn resume(dir: &Path) -> Result<i64, StoreError> {
    let bytes = fs::read(dir.join(PLAN)).map_err(err)?;
    let plan: Plan = serde_json::from_slice(&bytes).map_err(|e| err(format!("{PLAN}: {e}")))?;
    tracing::info!(dir = %dir.display(), "finishing the conversion of rqlite's data that an earlier start began");
    finish(dir, &plan)
}

/// Does the plan's renames that are still to do, in order, then removes the plan.
fn finish(dir: &Path, plan: &Plan) -> Result<i64, StoreError> {
    let backup = dir.join(&plan.backup);
    fs::create_dir_all(&backup).map_err(err)?;
    sync_dir(dir).map_err(err)?;
    for (from, to) in &plan.renames {
        let (from, to) = (dir.join(from), dir.join(to));
        if from.symlink_metadata().is_err() {
            continue; // done before a crash
        }
        if to.symlink_metadata().is_ok() {
            return Err(err(format!(
                "both {} and {} exist; move one aside and start again",
                from.display(),
                to.display()
            )));
        }
        fail::fail_point!("upgrade-rename");
        fs::rename(&from, &to).map_err(err)?;
        sync_dir(&backup).and_then(|_| sync_dir(dir)).map_err(err)?;
    }
    fail::fail_point!("upgrade-renamed");
    let _ = fs::remove_dir_all(dir.join(STAGING));
    fs::remove_file(dir.join(PLAN)).map_err(err)?;
    sync_dir(dir).map_err(err)?;
    tracing::warn!(
        backup = %backup.display(),
        "converted the data rqlite wrote in {}; rqlite's own files are kept in {}. To go back to rqlite \
         (losing the writes made since): stop this node, remove raft-log/, snapshots/ and db.sqlite* \
         from the data directory, and move the backup's contents back. Start with \
         -remove-rqlite-backup to delete the backup",
        dir.display(),
        backup.display()
    );
    Ok(plan.upgrades)
}

/// The id of one of rqlite's entries. hashicorp/raft's log does not say which node led a
/// term; every converted entry names node 0, which no node is, so every node converts the same
/// entry to the same id.
fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// A hashicorp/raft configuration as an openraft membership: voters vote, non-voters and
/// staging servers learn.
fn membership(servers: &[Server]) -> Result<Membership<u64, NodeInfo>, String> {
    let mut nodes = BTreeMap::new();
    let mut voters = BTreeSet::new();
    for s in servers {
        let id = raft_id(&s.id);
        let info = NodeInfo {
            id: s.id.clone(),
            addr: s.address.clone(),
        };
        if let Some(other) = nodes.insert(id, info) {
            return Err(format!(
                "node ids {:?} and {:?} cannot both be used here",
                other.id, s.id
            ));
        }
        if s.suffrage == Suffrage::Voter {
            voters.insert(id);
        }
    }
    if voters.is_empty() {
        return Err("a cluster configuration without voters".into());
    }
    Ok(Membership::new(vec![voters], nodes))
}

/// One of rqlite's log entries as this node's.
fn entry(e: &LogEntry) -> Result<Entry, RaftDbError> {
    let bad = |reason: String| RaftDbError::Entry { index: e.index, reason };
    let payload = match e.kind {
        LogType::Command => EntryPayload::Normal(Logged {
            appended_at_ms: 0,
            cmd: rq_upgrade::command::decode(&e.data).map_err(|x| bad(x.to_string()))?,
        }),
        LogType::Noop | LogType::Barrier => EntryPayload::Blank,
        LogType::Configuration => EntryPayload::Membership(membership(&decode_configuration(&e.data)?).map_err(bad)?),
        LogType::AddPeerDeprecated | LogType::RemovePeerDeprecated => {
            return Err(bad(
                "a peer change of hashicorp/raft before 1.0, which rqlite never wrote".into(),
            ));
        }
    };
    Ok(Entry {
        log_id: log_id(e.term, e.index),
        payload,
    })
}

/// Writes this node's layout for `dir` into `staging` and syncs it. Returns the snapshot
/// format upgrades rqlite would have counted.
fn stage(dir: &Path, staging: &Path) -> Result<i64, StoreError> {
    let raft = RaftDb::open(&dir.join("raft.db")).map_err(|e| err(format!("raft.db: {e}")))?;
    let stable = raft.stable().map_err(|e| err(format!("raft.db: {e}")))?;
    let snap = rq_upgrade::snapshot::newest(dir).map_err(|e| err(format!("snapshot: {e}")))?;
    let log_dir = staging.join(LOG_DIR);
    let mut log = LogStore::open(&log_dir).map_err(err)?;
    let after = snap.as_ref().map_or(0, |s| s.index);
    if let Some(s) = &snap {
        futures::executor::block_on(log.purge(log_id(s.term, s.index))).map_err(err)?;
    }

    // The log after the snapshot, in batches.
    let mut batch: Vec<Entry> = Vec::new();
    let mut bytes = 0usize;
    let mut expect = match &snap {
        Some(s) => s.index + 1,
        None => {
            batch.push(Entry {
                log_id: log_id(0, 0),
                payload: EntryPayload::Blank,
            });
            1
        }
    };
    let mut last_term = snap.as_ref().map_or(0, |s| s.term);
    let mut servers = snap.as_ref().map(|s| s.servers.clone()).unwrap_or_default();
    let mut configuration_term = None;
    let mut committed = None;
    let mut write_error = None;
    let read = raft.for_each_entry(&mut |e| {
        if e.index <= after {
            if snap.as_ref().is_some_and(|s| s.configuration_index == e.index) {
                configuration_term = Some(e.term);
            }
            return Ok(());
        }
        let bad = |reason: String| RaftDbError::Entry { index: e.index, reason };
        if e.index != expect {
            return Err(bad(match &snap {
                Some(_) if expect == after + 1 => format!("the log resumes at {} after a snapshot at {after}", e.index),
                _ => format!("the log has a gap before it ({expect} was next)"),
            }));
        }
        if e.term < last_term {
            return Err(bad(format!("term {} after term {last_term}", e.term)));
        }
        if e.kind == LogType::Configuration {
            servers = decode_configuration(&e.data)?;
        }
        if stable.applied_index == Some(e.index) {
            committed = Some(log_id(e.term, e.index));
        }
        let ours = entry(&e)?;
        expect += 1;
        last_term = e.term;
        bytes += e.data.len();
        batch.push(ours);
        if batch.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES {
            bytes = 0;
            if let Err(x) = log.append_entries(std::mem::take(&mut batch)) {
                write_error = Some(x);
                return Err(bad("could not be written".into()));
            }
        }
        Ok(())
    });
    read.map_err(|e| match write_error.take() {
        Some(w) => err(format!("writing the new raft log: {w}")),
        None => err(format!("raft.db: {e}")),
    })?;
    if !batch.is_empty() {
        log.append_entries(batch).map_err(err)?;
    }
    if snap.is_none() && expect == 1 {
        return Err(err("raft.db holds no log entries and there is no snapshot"));
    }

    // The vote: the term, and the candidate voted for in it if that is a known server.
    let term = stable.current_term.max(last_term);
    let voted_for = stable
        .last_vote_candidate
        .as_ref()
        .filter(|_| stable.last_vote_term == term)
        .and_then(|c| servers.iter().find(|s| &s.address == c || &s.id == c))
        .map(|s| raft_id(&s.id));
    // No vote in the term is recorded as a vote for node 0, which no candidate is: this
    // node then votes in no election of that term, which is safe, and elections move on to
    // the next term.
    let vote = Vote {
        leader_id: LeaderId::new(term, voted_for.unwrap_or(0)),
        committed: false,
    };
    futures::executor::block_on(log.save_vote(&vote)).map_err(err)?;
    if committed.is_some() {
        futures::executor::block_on(log.save_committed(committed)).map_err(err)?;
    }
    drop(log);
    fs::File::open(log_dir.join("committed"))
        .and_then(|f| f.sync_all())
        .map_err(err)?;

    // The snapshot's database, as this node's snapshot.
    let snapshots_dir = staging.join(SNAPSHOT_DIR);
    let snapshots = SnapshotStore::open(&snapshots_dir, Arc::new(Stats::default())).map_err(err)?;
    let upgrades = match &snap {
        None => 0,
        Some(s) => {
            let members = membership(&s.servers).map_err(|e| err(format!("snapshot {}: {e}", s.id)))?;
            let file = staging.join("snapshot.db");
            s.write_database(&file)
                .map_err(|e| err(format!("snapshot {}: {e}", s.id)))?;
            // The configuration's own entry may be gone; no entry after the snapshot comes
            // before the snapshot's term, so that term orders it correctly.
            let cterm = configuration_term.unwrap_or(s.term);
            let meta = SnapshotMeta {
                last_log_id: Some(log_id(s.term, s.index)),
                last_membership: StoredMembership::new(Some(log_id(cterm, s.configuration_index)), members),
                snapshot_id: format!("rqlite-{}", s.id),
            };
            snapshots.import(&file, meta).map_err(err)?;
            match rq_upgrade::layout(dir) {
                Layout::V7 => 2,
                Layout::V8 => 1,
                Layout::V10 | Layout::NoSnapshots => 0,
            }
        }
    };
    sync_dir(&snapshots_dir)
        .and_then(|_| sync_dir(&log_dir))
        .and_then(|_| sync_dir(staging))
        .map_err(err)?;
    tracing::info!(
        snapshot = snap.as_ref().map_or(0, |s| s.index),
        last = expect - 1,
        term,
        "read rqlite's data: snapshot and log written in this node's layout"
    );
    Ok(upgrades)
}

/// Removes the backups earlier conversions kept (`-remove-rqlite-backup`), or says where they
/// are.
fn tend_backups(dir: &Path, remove: bool) -> Result<(), StoreError> {
    for b in backups(dir) {
        if remove {
            fs::remove_dir_all(&b).map_err(err)?;
            tracing::info!(backup = %b.display(), "removed the rqlite files kept from before the conversion");
        } else {
            tracing::info!(
                backup = %b.display(),
                "rqlite's files from before the conversion are kept here; -remove-rqlite-backup deletes them"
            );
        }
    }
    Ok(())
}
