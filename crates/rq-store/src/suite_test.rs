//! openraft's storage conformance suite, run against the segment log store and the SQLite state
//! machine together.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use rq_db::{ConnConfig, Database};

use crate::log_store::LogStore;
use crate::snapshot::SnapshotStore;
use crate::state_machine::{SmState, StateMachine};
use crate::stats::Stats;
use crate::types::{StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("db.sqlite");
        let log = LogStore::open(&dir.path().join("raft-log")).expect("log store");
        let stats = Arc::new(Stats::default());
        let snapshots = Arc::new(SnapshotStore::open(&dir.path().join("snapshots"), stats).expect("snapshots"));
        let (db, _) = Database::open(&db_path, ConnConfig::default()).expect("database");
        let sm =
            StateMachine::open(db, SmState::default(), &db_path, snapshots, Box::new(|| {})).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite");
}
