//! rqlite's `raft.db`: hashicorp/raft's log and stable store in BoltDB (rqlite/raft-boltdb).
//!
//! The `logs` bucket maps a big-endian u64 index to a `raft.Log` encoded by go-msgpack: a map
//! keyed by field name (`AppendedAt`, `Data`, `Extensions`, `Index`, `Term`, `Type`), byte
//! strings written as old-style raw strings. The `conf` bucket holds `CurrentTerm` and
//! `LastVoteTerm` (big-endian u64) and `LastVoteCand` (the candidate's address).

use std::path::Path;

use rmpv::Value;

use crate::bolt::{Bolt, BoltError, Bucket};

#[derive(Debug, thiserror::Error)]
pub enum RaftDbError {
    #[error(transparent)]
    Bolt(#[from] BoltError),
    #[error("raft.db has no {0:?} bucket")]
    NoBucket(&'static str),
    #[error("log entry {index}: {reason}")]
    Entry { index: u64, reason: String },
    #[error("stable store {key}: {reason}")]
    Stable { key: &'static str, reason: String },
    #[error("configuration: {0}")]
    Configuration(String),
}

/// hashicorp/raft's log entry types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    Command,
    Noop,
    AddPeerDeprecated,
    RemovePeerDeprecated,
    Barrier,
    Configuration,
}

impl LogType {
    fn from_u64(v: u64) -> Option<LogType> {
        Some(match v {
            0 => LogType::Command,
            1 => LogType::Noop,
            2 => LogType::AddPeerDeprecated,
            3 => LogType::RemovePeerDeprecated,
            4 => LogType::Barrier,
            5 => LogType::Configuration,
            _ => return None,
        })
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    pub kind: LogType,
    pub data: Vec<u8>,
}

/// A server's suffrage in a cluster configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffrage {
    Voter,
    Nonvoter,
    Staging,
}

/// A member of a cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub suffrage: Suffrage,
    pub id: String,
    pub address: String,
}

/// What the stable store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stable {
    pub current_term: u64,
    pub last_vote_term: u64,
    /// The address of the candidate last voted for.
    pub last_vote_candidate: Option<String>,
    /// rqlite v7.21.1 to v8.22 recorded the applied index here.
    pub applied_index: Option<u64>,
}

/// An open `raft.db`.
pub struct RaftDb {
    bolt: Bolt,
    logs: Bucket,
    conf: Bucket,
}

impl RaftDb {
    pub fn open(path: &Path) -> Result<RaftDb, RaftDbError> {
        let bolt = Bolt::open(path)?;
        let logs = bolt.bucket(b"logs")?.ok_or(RaftDbError::NoBucket("logs"))?;
        let conf = bolt.bucket(b"conf")?.ok_or(RaftDbError::NoBucket("conf"))?;
        Ok(RaftDb { bolt, logs, conf })
    }

    /// Calls `f` with every log entry, in index order.
    pub fn for_each_entry(&self, f: &mut dyn FnMut(LogEntry) -> Result<(), RaftDbError>) -> Result<(), RaftDbError> {
        let mut failure = None;
        self.bolt.for_each(&self.logs, &mut |k, v| {
            let index = match <[u8; 8]>::try_from(k) {
                Ok(b) => u64::from_be_bytes(b),
                Err(_) => {
                    failure = Some(RaftDbError::Entry {
                        index: 0,
                        reason: format!("a key of {} bytes", k.len()),
                    });
                    return Ok(false);
                }
            };
            match decode_log(index, v).and_then(&mut *f) {
                Ok(()) => Ok(true),
                Err(e) => {
                    failure = Some(e);
                    Ok(false)
                }
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// The stable store's term and vote.
    pub fn stable(&self) -> Result<Stable, RaftDbError> {
        let get = |key: &'static str| self.bolt.get(&self.conf, key.as_bytes());
        let u64_of = |key: &'static str| -> Result<Option<u64>, RaftDbError> {
            match get(key)? {
                None => Ok(None),
                Some(v) => <[u8; 8]>::try_from(v.as_slice())
                    .map(|b| Some(u64::from_be_bytes(b)))
                    .map_err(|_| RaftDbError::Stable {
                        key,
                        reason: format!("{} bytes, not 8", v.len()),
                    }),
            }
        };
        Ok(Stable {
            current_term: u64_of("CurrentTerm")?.unwrap_or(0),
            last_vote_term: u64_of("LastVoteTerm")?.unwrap_or(0),
            last_vote_candidate: get("LastVoteCand")?
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            applied_index: u64_of("rqlite_applied_index")?,
        })
    }
}

/// The bytes of a msgpack raw string, string or binary value.
fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Binary(b) => Some(b.clone()),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// The field `name` of a msgpack map.
fn field<'a>(map: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v)
}

fn decode_log(key: u64, bytes: &[u8]) -> Result<LogEntry, RaftDbError> {
    let bad = |reason: String| RaftDbError::Entry { index: key, reason };
    let v = rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| bad(e.to_string()))?;
    let map = v.as_map().ok_or_else(|| bad("not a map".into()))?;
    let uint = |name: &str| {
        field(map, name)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("no {name}")))
    };
    let index = uint("Index")?;
    if index != key {
        return Err(bad(format!("holds index {index}")));
    }
    let kind = LogType::from_u64(uint("Type")?).ok_or_else(|| bad("unknown type".into()))?;
    let data = match field(map, "Data") {
        None => Vec::new(),
        Some(d) => bytes_of(d).ok_or_else(|| bad("Data is not bytes".into()))?,
    };
    Ok(LogEntry {
        index,
        term: uint("Term")?,
        kind,
        data,
    })
}

/// A `LogConfiguration` entry's data: hashicorp/raft's `Configuration{Servers}` in msgpack.
pub fn decode_configuration(bytes: &[u8]) -> Result<Vec<Server>, RaftDbError> {
    let bad = |r: &str| RaftDbError::Configuration(r.to_string());
    let v = rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| RaftDbError::Configuration(e.to_string()))?;
    let map = v.as_map().ok_or_else(|| bad("not a map"))?;
    let servers = match field(map, "Servers") {
        None | Some(Value::Nil) => return Ok(Vec::new()),
        Some(s) => s.as_array().ok_or_else(|| bad("Servers is not a list"))?,
    };
    servers
        .iter()
        .map(|s| {
            let m = s.as_map().ok_or_else(|| bad("a server is not a map"))?;
            let text = |name: &str| {
                field(m, name)
                    .and_then(bytes_of)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| bad(&format!("a server has no {name}")))
            };
            let suffrage = match field(m, "Suffrage").and_then(Value::as_u64) {
                Some(0) | None => Suffrage::Voter,
                Some(1) => Suffrage::Nonvoter,
                Some(2) => Suffrage::Staging,
                Some(_) => return Err(bad("unknown suffrage")),
            };
            Ok(Server {
                suffrage,
                id: text("ID")?,
                address: text("Address")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{log_bytes, write_bolt};

    #[test]
    fn entries_votes_and_configurations_are_read() {
        // The configuration bytes of rqlite v9's first entry, as in its testdata.
        let mut config = vec![0x81, 0xa7];
        config.extend_from_slice(b"Servers");
        config.extend_from_slice(&[0x91, 0x83, 0xa7]);
        config.extend_from_slice(b"Address");
        config.push(0xae);
        config.extend_from_slice(b"localhost:4002");
        config.push(0xa2);
        config.extend_from_slice(b"ID");
        config.extend_from_slice(&[0xa1, b'1', 0xa8]);
        config.extend_from_slice(b"Suffrage");
        config.push(0x00);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("raft.db");
        let logs = vec![
            (1u64.to_be_bytes().to_vec(), log_bytes(1, 1, 5, Some(&config))),
            (2u64.to_be_bytes().to_vec(), log_bytes(2, 2, 1, None)),
            (3u64.to_be_bytes().to_vec(), log_bytes(3, 2, 0, Some(b"\x08\x02"))),
        ];
        let conf = vec![
            (b"CurrentTerm".to_vec(), 2u64.to_be_bytes().to_vec()),
            (b"LastVoteCand".to_vec(), b"localhost:4002".to_vec()),
            (b"LastVoteTerm".to_vec(), 2u64.to_be_bytes().to_vec()),
        ];
        write_bolt(&path, &[(b"conf", conf, true), (b"logs", logs, false)]);
        let db = RaftDb::open(&path).unwrap();
        let mut entries = Vec::new();
        db.for_each_entry(&mut |e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            (entries[1].kind, entries[1].term, entries[1].data.len()),
            (LogType::Noop, 2, 0)
        );
        assert_eq!(entries[2].data, b"\x08\x02");
        assert_eq!(
            decode_configuration(&entries[0].data).unwrap(),
            [Server {
                suffrage: Suffrage::Voter,
                id: "1".into(),
                address: "localhost:4002".into()
            }]
        );
        assert_eq!(
            db.stable().unwrap(),
            Stable {
                current_term: 2,
                last_vote_term: 2,
                last_vote_candidate: Some("localhost:4002".into()),
                applied_index: None
            }
        );
    }
}
