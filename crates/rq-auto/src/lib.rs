//! Automatic backups (`-auto-backup`) and the automatic restore (`-auto-restore`), with rqlite's
//! configuration files, to and from S3 (and S3-compatible stores), Google Cloud Storage and
//! local directories.

pub mod backup;
pub mod config;
mod gcs;
pub mod restore;
pub mod storage;

pub use backup::Uploader;
pub use config::{BackupConfig, RestoreConfig};
