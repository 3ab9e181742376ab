//! Property tests for the node-to-node message decoder: arbitrary bytes, and valid messages
//! truncated or with bytes changed, decode to a message or an error, never a panic.
//! `PROPTEST_CASES` sets the number of cases (proptest's 256 by default).

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use proptest::prelude::*;
use rq_proto::{Command, Logged, Request, Statement};
use rq_store::types::{Entry, TypeConfig};
use rq_store::{BackupOptions, Forward, StoreError};

use crate::messages::{JoinRequest, NotifyRequest, RemoveRequest, StepdownRequest};

/// Decodes `bytes` as every message the node-to-node port accepts.
fn decode_all(bytes: &[u8]) {
    let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = postcard::from_bytes::<VoteRequest<u64>>(bytes);
    let _ = postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(bytes);
    let _ = postcard::from_bytes::<JoinRequest>(bytes);
    let _ = postcard::from_bytes::<NotifyRequest>(bytes);
    let _ = postcard::from_bytes::<RemoveRequest>(bytes);
    let _ = postcard::from_bytes::<StepdownRequest>(bytes);
    let _ = postcard::from_bytes::<Forward>(bytes);
    let _ = postcard::from_bytes::<BackupOptions>(bytes);
    let _ = postcard::from_bytes::<Result<(), StoreError>>(bytes);
    let _ = postcard::from_bytes::<crate::NodeMeta>(bytes);
}

/// A valid AppendEntries carrying writes made of `sqls`.
fn append(sqls: Vec<String>) -> Vec<u8> {
    let log_id = |i| LogId::new(CommittedLeaderId::new(3, 1), i);
    let entries = sqls
        .into_iter()
        .enumerate()
        .map(|(i, sql)| Entry {
            log_id: log_id(i as u64 + 10),
            payload: EntryPayload::Normal(Logged {
                appended_at_ms: 1,
                cmd: Command::Execute(Request {
                    statements: vec![Statement::new(sql)],
                    ..Default::default()
                }),
            }),
        })
        .collect();
    let mut vote = Vote::new(3, 1);
    vote.commit();
    let req = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(9)),
        entries,
        leader_commit: Some(log_id(9)),
    };
    postcard::to_stdvec(&req).unwrap()
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        decode_all(&bytes);
    }

    #[test]
    fn damaged_messages_decode_or_fail_cleanly(
        sqls in prop::collection::vec(any::<String>(), 0..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = append(sqls);
        let decoded = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&bytes);
        prop_assert!(decoded.is_ok());
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        decode_all(&bytes);
        decode_all(&bytes[..cut.index(bytes.len())]);
    }
}
