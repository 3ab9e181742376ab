//! What a client asks for, in the form it takes in the Raft log and on the wire between nodes.

use serde::{Deserialize, Serialize};

/// A value bound to a statement parameter, or returned in a result row.
///
/// The variants follow rqlite's `Parameter` oneof: a JSON number that parses as an int64 is an
/// `Integer`, any other number a `Float`, and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Integer(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

/// One parameter of a statement: positional when `name` is `None`.
///
/// A named parameter's name is stored without its `:`, `@` or `$` prefix, as clients send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: Option<String>,
    pub value: Value,
}

/// One SQL statement and its parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    /// The statement returns rows even though it writes (`RETURNING`), so it is run as a query.
    pub returning: bool,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            ..Default::default()
        }
    }
}

/// A batch of statements as one client request carried them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Request {
    /// Run every statement inside one transaction; stop and roll back at the first error.
    pub transaction: bool,
    /// Stop at the first error and roll back everything this request did (SQL dump loads).
    pub rollback_on_error: bool,
    /// Name result columns `table.column`.
    pub qualify_columns: bool,
    /// Per-statement interrupt deadline in nanoseconds; 0 means none.
    pub db_timeout_ns: u64,
    /// Report per-statement execution times.
    pub timings: bool,
    pub statements: Vec<Statement>,
}

/// The payload of one Raft log entry: a command, stamped with the time the leader logged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    /// Unix time in milliseconds on the leader's clock when it logged the entry; followers
    /// compare it with their apply time for `freshness_strict`.
    pub appended_at_ms: u64,
    pub cmd: Command,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.cmd, self.appended_at_ms)
    }
}

/// What one log entry asks of the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Write statements (`/db/execute`, queued writes).
    Execute(Request),
    /// Reads sent through the log (`level=strong`): every node runs them, the leader answers.
    Query(Request),
    /// A mixed request (`/db/request`) with at least one write, or at `strong`.
    ExecuteQuery(Request),
    /// Nothing to apply; commits a log position (used to fence reads and barriers).
    Noop,
    /// One piece of a SQLite database file that replaces the database once its last piece is
    /// applied (`/db/load`). Pieces keep each log entry, and memory, small.
    LoadChunk(LoadChunk),
    /// Several requests that arrived together, logged as one entry (group commit). Each keeps
    /// its own semantics and gets its own results; none is an `Batch` itself.
    Batch(Vec<Command>),
}

impl Command {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Execute(_) => "execute",
            Command::Query(_) => "query",
            Command::ExecuteQuery(_) => "execute_query",
            Command::Noop => "noop",
            Command::LoadChunk(_) => "load_chunk",
            Command::Batch(_) => "batch",
        }
    }

    /// SQL statements carried, in all.
    pub fn statements(&self) -> usize {
        match self {
            Command::Execute(r) | Command::Query(r) | Command::ExecuteQuery(r) => r.statements.len(),
            Command::Noop | Command::LoadChunk(_) => 0,
            Command::Batch(c) => c.iter().map(Command::statements).sum(),
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Execute(r) | Command::Query(r) | Command::ExecuteQuery(r) => {
                write!(f, "{}({} statements)", self.kind(), r.statements.len())
            }
            Command::Noop => f.write_str("noop"),
            Command::LoadChunk(c) => write!(f, "{c:?}"),
            Command::Batch(cmds) => write!(f, "batch({} requests)", cmds.len()),
        }
    }
}

/// A piece of a database file being loaded.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadChunk {
    /// Identifies one load; pieces of another load, or out of order, are ignored.
    pub id: u64,
    pub seq: u64,
    pub last: bool,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for LoadChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LoadChunk({}#{}, {} bytes, last={})",
            self.id,
            self.seq,
            self.data.len(),
            self.last
        )
    }
}

/// Read consistency level of a query (`?level=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Level {
    None,
    #[default]
    Weak,
    Linearizable,
    Strong,
    Auto,
}

impl Level {
    /// Parses `?level=`: case-insensitive, and anything unknown means `weak`, as rqlite does.
    pub fn parse(s: &str) -> Level {
        [
            ("none", Level::None),
            ("linearizable", Level::Linearizable),
            ("strong", Level::Strong),
            ("auto", Level::Auto),
        ]
        .into_iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map_or(Level::Weak, |(_, level)| level)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Weak => "weak",
            Level::Linearizable => "linearizable",
            Level::Strong => "strong",
            Level::Auto => "auto",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_parse_defaults_to_weak() {
        assert_eq!(Level::parse("NONE"), Level::None);
        assert_eq!(Level::parse("Linearizable"), Level::Linearizable);
        assert_eq!(Level::parse("strong"), Level::Strong);
        assert_eq!(Level::parse("auto"), Level::Auto);
        assert_eq!(Level::parse("bogus"), Level::Weak);
        assert_eq!(Level::parse(""), Level::Weak);
    }

    #[test]
    fn command_roundtrips_through_postcard() {
        let cmd = Command::Execute(Request {
            transaction: true,
            db_timeout_ns: 5,
            statements: vec![Statement {
                sql: "INSERT INTO t VALUES(?, :n)".into(),
                params: vec![
                    Param {
                        name: None,
                        value: Value::Blob(vec![0, 1, 2]),
                    },
                    Param {
                        name: Some("n".into()),
                        value: Value::Float(1.5),
                    },
                ],
                returning: false,
            }],
            ..Default::default()
        });
        let bytes = postcard::to_stdvec(&cmd).unwrap();
        let back: Command = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cmd);
    }
}
