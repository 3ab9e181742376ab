//! What an rqlite data directory holds, found without changing it.

use std::fmt;
use std::path::Path;

use crate::raft_db::{LogType, RaftDb, RaftDbError};

/// The snapshot layouts rqlite has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `snapshots/` (v7).
    V7,
    /// `rsnapshots/` (v8 and v9).
    V8,
    /// `wsnapshots/` (v10).
    V10,
    /// No snapshot directory yet.
    NoSnapshots,
}

/// A summary of an rqlite data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub layout: Layout,
    pub entries: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub commands: u64,
    /// Commands that could not be decoded.
    pub undecodable: u64,
    pub current_term: u64,
    /// The newest snapshot's index, term and member count, or why it could not be read.
    pub snapshot: Result<Option<(u64, u64, usize)>, String>,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = match self.layout {
            Layout::V7 => "rqlite v7 (snapshots/)",
            Layout::V8 => "rqlite v8 or v9 (rsnapshots/)",
            Layout::V10 => "rqlite v10 (wsnapshots/)",
            Layout::NoSnapshots => "rqlite",
        };
        write!(f, "{layout}, Raft term {}, ", self.current_term)?;
        if self.entries == 0 {
            write!(f, "an empty log")?;
        } else {
            write!(
                f,
                "{} log entries ({}..{}, {} commands",
                self.entries, self.first_index, self.last_index, self.commands
            )?;
            if self.undecodable > 0 {
                write!(f, ", {} of them not understood", self.undecodable)?;
            }
            write!(f, ")")?;
        }
        match &self.snapshot {
            Ok(Some((index, term, members))) => {
                write!(f, ", a snapshot at index {index} (term {term}, {members} members)")
            }
            Ok(None) => write!(f, ", no snapshot"),
            Err(e) => write!(f, ", a snapshot that cannot be read ({e})"),
        }
    }
}

/// Which snapshot layout `dir` uses.
pub fn layout(dir: &Path) -> Layout {
    if dir.join("wsnapshots").is_dir() {
        Layout::V10
    } else if dir.join("rsnapshots").is_dir() {
        Layout::V8
    } else if dir.join("snapshots").is_dir() {
        Layout::V7
    } else {
        Layout::NoSnapshots
    }
}

/// Reads `dir`'s `raft.db` and snapshot directories.
pub fn inspect(dir: &Path) -> Result<Found, RaftDbError> {
    let layout = layout(dir);
    let db = RaftDb::open(&dir.join("raft.db"))?;
    let mut found = Found {
        layout,
        entries: 0,
        first_index: 0,
        last_index: 0,
        commands: 0,
        undecodable: 0,
        current_term: db.stable()?.current_term,
        snapshot: crate::snapshot::newest(dir)
            .map(|s| s.map(|s| (s.index, s.term, s.servers.len())))
            .map_err(|e| e.to_string()),
    };
    db.for_each_entry(&mut |e| {
        if found.entries == 0 {
            found.first_index = e.index;
        }
        found.entries += 1;
        found.last_index = e.index;
        if e.kind == LogType::Command {
            found.commands += 1;
            if crate::command::decode(&e.data).is_err() {
                found.undecodable += 1;
            }
        }
        Ok(())
    })?;
    Ok(found)
}
