//! Types that cross a process boundary: log commands, statements and their parameters, results,
//! read consistency levels, rqlite's JSON encoding of results, and users and permissions.
//!
//! This crate does no I/O.

pub mod auth;
pub mod command;
pub mod gofmt;
pub mod json;
pub mod result;

pub use command::{Command, Level, LoadChunk, Logged, Param, Request, Statement, Value};
pub use result::{Applied, ExecuteResult, QueryRows, StmtResult};
