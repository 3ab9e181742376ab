//! Results of running statements, as the state machine or a read connection produces them.
//!
//! SQL errors are data here (`StmtResult::Error`), never `Err`: they must come out the same on
//! every node, and clients read them per statement.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::command::Value;

/// The outcome of one write statement.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecuteResult {
    pub last_insert_id: i64,
    pub rows_affected: i64,
    /// Seconds; 0 when timings were not asked for.
    pub time: f64,
}

/// The rows of one query.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryRows {
    pub columns: Vec<String>,
    /// The declared types as shown. Most are among a few names, which need no copy.
    pub types: Vec<Cow<'static, str>>,
    pub values: Vec<Vec<Value>>,
    /// An error met after the columns were known, e.g. an interrupted scan.
    pub error: Option<String>,
    /// Seconds; 0 when timings were not asked for.
    pub time: f64,
}

/// The outcome of one statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StmtResult {
    Execute(ExecuteResult),
    Query(QueryRows),
    Error(String),
}

impl StmtResult {
    pub fn error(&self) -> Option<&str> {
        match self {
            StmtResult::Error(e) => Some(e),
            StmtResult::Query(q) => q.error.as_deref(),
            StmtResult::Execute(_) => None,
        }
    }
}

/// What applying one log entry produced: for each request the entry carried (one, or several
/// for a batch), one result per non-empty statement.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Applied {
    pub parts: Vec<Vec<StmtResult>>,
}
