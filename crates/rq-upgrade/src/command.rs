//! rqlite's log commands (its `command.proto`): decoded from protobuf and turned into this
//! node's commands.
//!
//! EXECUTE, QUERY and EXECUTE_QUERY carry a request, gzipped when `compressed` is set. LOAD is
//! always a gzip of a `LoadRequest` holding a whole SQLite file. LOAD_CHUNK (written by
//! rqlite v8.0 to v8.9) carries one gzip member of the next piece of a file, numbered from 1.

use std::io::Read;

use prost::Message;
use rq_proto::{Command, LoadChunk, Param, Request, Statement, Value};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("not an rqlite command: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("gzip: {0}")]
    Gzip(#[from] std::io::Error),
    #[error("unknown command type {0}")]
    UnknownType(i32),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbCommand {
    #[prost(int32, tag = "1")]
    pub(crate) kind: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) sub_command: Vec<u8>,
    #[prost(bool, tag = "3")]
    pub(crate) compressed: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbParameter {
    #[prost(sint64, optional, tag = "1")]
    i: Option<i64>,
    #[prost(double, optional, tag = "2")]
    d: Option<f64>,
    #[prost(bool, optional, tag = "3")]
    b: Option<bool>,
    #[prost(bytes = "vec", optional, tag = "4")]
    y: Option<Vec<u8>>,
    #[prost(string, optional, tag = "5")]
    s: Option<String>,
    #[prost(string, tag = "6")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbStatement {
    #[prost(string, tag = "1")]
    pub(crate) sql: String,
    #[prost(message, repeated, tag = "2")]
    pub(crate) parameters: Vec<PbParameter>,
    #[prost(bool, tag = "3")]
    pub(crate) force_query: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbRequest {
    #[prost(bool, tag = "1")]
    pub(crate) transaction: bool,
    #[prost(message, repeated, tag = "2")]
    pub(crate) statements: Vec<PbStatement>,
    #[prost(int64, tag = "3")]
    pub(crate) db_timeout: i64,
    #[prost(bool, tag = "4")]
    pub(crate) rollback_on_error: bool,
    #[prost(bool, tag = "5")]
    pub(crate) qualify_columns: bool,
}

/// `ExecuteRequest`, `QueryRequest` and `ExecuteQueryRequest` all hold the request first.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbWithRequest {
    #[prost(message, optional, tag = "1")]
    pub(crate) request: Option<PbRequest>,
    #[prost(bool, tag = "2")]
    pub(crate) timings: bool,
}

#[derive(Clone, PartialEq, Message)]
struct PbLoad {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct PbLoadChunk {
    #[prost(string, tag = "1")]
    stream_id: String,
    #[prost(int64, tag = "2")]
    sequence_num: i64,
    #[prost(bool, tag = "3")]
    is_last: bool,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
    #[prost(bool, tag = "5")]
    abort: bool,
}

fn gunzip(b: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b).read_to_end(&mut out)?;
    Ok(out)
}

fn request(pb: Option<PbRequest>, timings: bool) -> Request {
    let pb = pb.unwrap_or_default();
    Request {
        transaction: pb.transaction,
        rollback_on_error: pb.rollback_on_error,
        qualify_columns: pb.qualify_columns,
        db_timeout_ns: pb.db_timeout.max(0) as u64,
        timings,
        statements: pb
            .statements
            .into_iter()
            .map(|s| Statement {
                sql: s.sql,
                returning: s.force_query,
                params: s
                    .parameters
                    .into_iter()
                    .map(|p| Param {
                        name: (!p.name.is_empty()).then_some(p.name),
                        value: match (p.i, p.d, p.b, p.y, p.s) {
                            (Some(i), ..) => Value::Integer(i),
                            (_, Some(d), ..) => Value::Float(d),
                            (_, _, Some(b), ..) => Value::Bool(b),
                            (_, _, _, Some(y), _) => Value::Blob(y),
                            (_, _, _, _, Some(s)) => Value::Text(s),
                            _ => Value::Null,
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A stable id for a chunked load's stream name.
fn stream_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// This node's command for the `Data` of one of rqlite's command log entries.
pub fn decode(data: &[u8]) -> Result<Command, CommandError> {
    let cmd = PbCommand::decode(data)?;
    let sub = |compressed: bool| -> Result<Vec<u8>, CommandError> {
        if compressed {
            Ok(gunzip(&cmd.sub_command)?)
        } else {
            Ok(cmd.sub_command.clone())
        }
    };
    let with_request = |b: &[u8]| -> Result<Request, CommandError> {
        let pb = PbWithRequest::decode(b)?;
        Ok(request(pb.request, pb.timings))
    };
    Ok(match cmd.kind {
        1 => Command::Query(with_request(&sub(cmd.compressed)?)?),
        2 => Command::Execute(with_request(&sub(cmd.compressed)?)?),
        3 => Command::Noop,
        4 => {
            let load = PbLoad::decode(gunzip(&cmd.sub_command)?.as_slice())?;
            Command::LoadChunk(LoadChunk {
                id: stream_id("load"),
                seq: 0,
                last: true,
                data: load.data,
            })
        }
        6 => Command::ExecuteQuery(with_request(&sub(cmd.compressed)?)?),
        7 => {
            let c = PbLoadChunk::decode(cmd.sub_command.as_slice())?;
            if c.abort {
                Command::Noop
            } else {
                Command::LoadChunk(LoadChunk {
                    id: stream_id(&c.stream_id),
                    seq: (c.sequence_num - 1).max(0) as u64,
                    last: c.is_last,
                    data: if c.data.is_empty() {
                        Vec::new()
                    } else {
                        gunzip(&c.data)?
                    },
                })
            }
        }
        other => return Err(CommandError::UnknownType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn rqlites_commands_become_ours() {
        // rqlite v9's entry 6, byte for byte: EXECUTE_QUERY of one INSERT, level WEAK.
        let mut data = vec![0x08, 0x06, 0x12, 0x2d, 0x0a, 0x29, 0x12, 0x27, 0x0a, 0x25];
        data.extend_from_slice(b"INSERT INTO foo(name) VALUES(\"fiona\")");
        data.extend_from_slice(&[0x18, 0x01]);
        let Command::ExecuteQuery(r) = decode(&data).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.statements,
            [Statement::new("INSERT INTO foo(name) VALUES(\"fiona\")")]
        );

        // A compressed EXECUTE with parameters of every kind, in a transaction.
        let req = PbWithRequest {
            request: Some(PbRequest {
                transaction: true,
                statements: vec![PbStatement {
                    sql: "INSERT INTO t VALUES(?, ?, ?, ?, :n, ?)".into(),
                    parameters: vec![
                        PbParameter {
                            i: Some(-7),
                            ..Default::default()
                        },
                        PbParameter {
                            d: Some(2.5),
                            ..Default::default()
                        },
                        PbParameter {
                            b: Some(true),
                            ..Default::default()
                        },
                        PbParameter {
                            y: Some(vec![1, 2]),
                            ..Default::default()
                        },
                        PbParameter {
                            s: Some("x".into()),
                            name: "n".into(),
                            ..Default::default()
                        },
                        PbParameter::default(),
                    ],
                    force_query: false,
                }],
                ..Default::default()
            }),
            timings: false,
        };
        let cmd = PbCommand {
            kind: 2,
            sub_command: gzip(&req.encode_to_vec()),
            compressed: true,
        };
        let Command::Execute(r) = decode(&cmd.encode_to_vec()).unwrap() else {
            panic!()
        };
        assert!(r.transaction);
        let values: Vec<Value> = r.statements[0].params.iter().map(|p| p.value.clone()).collect();
        assert_eq!(
            values,
            [
                Value::Integer(-7),
                Value::Float(2.5),
                Value::Bool(true),
                Value::Blob(vec![1, 2]),
                Value::Text("x".into()),
                Value::Null
            ]
        );
        assert_eq!(r.statements[0].params[4].name.as_deref(), Some("n"));

        // A load, and the pieces of a chunked one.
        let load = PbCommand {
            kind: 4,
            sub_command: gzip(
                &PbLoad {
                    data: b"SQLite format 3\0...".to_vec(),
                }
                .encode_to_vec(),
            ),
            compressed: false,
        };
        let Command::LoadChunk(c) = decode(&load.encode_to_vec()).unwrap() else {
            panic!()
        };
        assert!(c.last && c.seq == 0 && c.data.starts_with(b"SQLite format 3"));
        let chunk = |seq: i64, last: bool, data: &[u8]| PbCommand {
            kind: 7,
            sub_command: PbLoadChunk {
                stream_id: "s1".into(),
                sequence_num: seq,
                is_last: last,
                data: if data.is_empty() { Vec::new() } else { gzip(data) },
                abort: false,
            }
            .encode_to_vec(),
            compressed: false,
        };
        let Command::LoadChunk(first) = decode(&chunk(1, false, b"abc").encode_to_vec()).unwrap() else {
            panic!()
        };
        let Command::LoadChunk(last) = decode(&chunk(2, true, b"").encode_to_vec()).unwrap() else {
            panic!()
        };
        assert_eq!((first.seq, first.data.as_slice(), first.last), (0, &b"abc"[..], false));
        assert_eq!((last.seq, last.last, last.id), (1, true, first.id));

        assert!(matches!(decode(&[0x08, 0x03]), Ok(Command::Noop)));
        assert!(matches!(decode(&[0x08, 0x09]), Err(CommandError::UnknownType(9))));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
