//! Node-to-node service on `-raft-addr`: Raft RPCs, and what nodes ask of one another.
//!
//! It is HTTP, with `postcard` bodies, served by axum and called over hyper connections of its
//! own (`conn.rs`), or reqwest for streams and metadata. This crate never touches SQLite; it
//! reaches the database only through the store.

pub mod bootstrap;
mod client;
pub mod conn;
pub mod disco;
pub mod hangup;
pub mod messages;
pub mod reaper;
mod server;
pub mod transfer;

#[cfg(test)]
mod fuzz_test;

pub use client::Network;
pub use server::{NodeMeta, router};

/// Paths of the node-to-node API.
pub(crate) mod paths {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    pub const META: &str = "/meta";
    pub const JOIN: &str = "/join";
    pub const NOTIFY: &str = "/notify";
    pub const REMOVE: &str = "/remove";
    pub const FORWARD: &str = "/forward";
    pub const BACKUP: &str = "/backup";
    pub const LOAD: &str = "/load";
    pub const ELECT: &str = "/elect";
    pub const STEPDOWN: &str = "/stepdown";
    pub const CDC_HWM: &str = "/cdc/hwm";
    pub const READ_INDEX: &str = "/read-index";
    pub const SAVED_VOTE: &str = "/raft/saved-vote";
}
