//! The automatic restore (`-auto-restore`), as rqlite does it: on a node with no Raft state the
//! file is downloaded at start (gzip detected and undone) into the data directory and checked
//! to be a SQLite database; the node reports not ready until the restore has been attempted.
//! At the first leader the node sees, if that is this node, it loads the file through the log
//! (so every node gets it); if another node leads, it leaves the loading to that one. Either
//! way the file is then removed: the restore is attempted once.

use std::io::{Read, Seek};
use std::time::Instant;

use rq_proto::gofmt::{duration_string, friendly_bytes};
use rq_store::Store;
use tempfile::TempPath;

use crate::config::RestoreConfig;
use crate::storage::Storage;

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Downloads the restore file for `store`; a SQLite database in the data directory.
pub async fn download(store: &Store, cfg: &RestoreConfig) -> Result<TempPath, String> {
    let stats = &store.stats().downloader;
    let started = Instant::now();
    let result = fetch(store, cfg).await;
    match &result {
        Ok((_, n)) => {
            stats.add("num_downloads_ok", 1);
            stats.add("download_bytes", *n as i64);
            tracing::info!(size = %friendly_bytes(*n), took = %duration_string(started.elapsed()), "auto-restore: downloaded");
        }
        Err(_) => stats.add("num_downloads_fail", 1),
    }
    result.map(|(path, _)| path)
}

async fn fetch(store: &Store, cfg: &RestoreConfig) -> Result<(TempPath, u64), String> {
    let storage = Storage::new(&cfg.storage, false)?;
    tracing::info!(from = %storage.describe(), "auto-restore: downloading");
    let raw = store.scratch_file().map_err(|e| e.to_string())?.into_temp_path();
    let n = tokio::time::timeout(cfg.timeout, storage.download(&raw))
        .await
        .map_err(|_| format!("timed out after {}", duration_string(cfg.timeout)))??;
    let out = store.scratch_file().map_err(|e| e.to_string())?.into_temp_path();
    let (from, to) = (raw.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::File::open(&from)?;
        let mut magic = [0u8; 3];
        let compressed = f.read_exact(&mut magic).is_ok() && magic == GZIP_MAGIC;
        f.rewind()?;
        if compressed {
            let mut dst = std::fs::File::create(&to)?;
            std::io::copy(&mut flate2::read::GzDecoder::new(f), &mut dst)
                .map_err(|e| std::io::Error::other(format!("failed to decompress data: {e}")))?;
            dst.sync_all()?;
        } else {
            std::fs::rename(&from, &to)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    drop(raw);
    Store::check_database_file(&out)
        .await
        .map_err(|e| format!("file {} is not a valid SQLite file: {e}", out.display()))?;
    Ok((out, n))
}

/// Waits for the first leader; if this node leads, loads `file` through the log. Then releases
/// the readiness hold the caller took and removes the file.
pub async fn install_at_first_leader(store: Store, file: TempPath) {
    let mut metrics = store.raft().metrics();
    while metrics.borrow().current_leader.is_none() {
        if metrics.changed().await.is_err() {
            store.release_ready();
            return;
        }
    }
    let stats = &store.stats().store;
    if store.is_leader() {
        tracing::info!("auto-restore: this node leads; loading the downloaded database");
        match store.load_file(&file).await {
            Ok(()) => {
                stats.add("num_auto_restores", 1);
                tracing::info!("auto-restore: the node restored successfully");
            }
            Err(e) => {
                stats.add("num_auto_restores_failed", 1);
                tracing::warn!(error = %e, "auto-restore: loading failed");
            }
        }
    } else {
        stats.add("num_auto_restores_skipped", 1);
        tracing::info!("auto-restore: another node leads; not restoring here");
    }
    drop(file);
    store.release_ready();
}
