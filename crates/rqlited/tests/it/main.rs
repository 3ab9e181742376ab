//! System tests: real `rqlited` processes on loopback, fresh temporary directories, port 0.

mod harness;

mod api;
mod auth;
mod auto;
mod backup;
mod bad_input;
mod cdc;
mod cli;
mod clients;
mod cluster;
mod console;
mod crash;
mod disco;
mod durability;
mod extensions;
mod faults;
mod follower_reads;
mod metrics;
mod node_api;
mod otlp;
mod queue;
mod read_your_writes;
mod shell;
mod tls;
mod upgrade;
mod user_database;
