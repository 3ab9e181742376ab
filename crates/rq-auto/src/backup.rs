//! The uploader: while this node leads, every `interval` it uploads a consistent copy of the
//! database if the database changed since the last upload.
//!
//! "Changed" is rqlite's test: the store's `db_applied_index` is past the index last uploaded.
//! Before the first upload after a start, or after this node became leader, the store's own
//! record of the newest upload's ID (the index it held) is read, so a new leader does not
//! upload the same data again. The copy is made by the store into a temporary file in the data
//! directory (VACUUMed and gzipped as configured) and streamed from there.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rq_proto::gofmt::{duration_string, friendly_bytes, rfc3339};
use rq_store::{BackupFormat, BackupOptions, Store};
use serde_json::{Value, json};

use crate::config::BackupConfig;
use crate::storage::Storage;

pub struct Uploader {
    store: Store,
    storage: Storage,
    cfg: BackupConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The index of the data most recently uploaded (or found already uploaded).
    last_index: u64,
    last_time: Option<SystemTime>,
    last_duration: Duration,
    last_bytes: u64,
    /// How the last attempt that did something ended.
    last_outcome: &'static str,
    last_error: Option<String>,
}

impl Uploader {
    pub fn new(store: Store, cfg: BackupConfig) -> Result<Arc<Uploader>, String> {
        let storage = Storage::new(&cfg.storage, cfg.timestamp)?;
        Ok(Arc::new(Uploader {
            store,
            storage,
            cfg,
            state: Mutex::default(),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uploads every interval while this node leads; runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        tracing::info!(to = %self.storage.describe(), every = %duration_string(self.cfg.interval), "auto-backup: starting");
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.cfg.interval, self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.store.is_leader() {
                continue;
            }
            if let Err(e) = self.upload_once().await {
                tracing::warn!(to = %self.storage.describe(), error = %e, "auto-backup: upload failed; trying again at the next interval");
                let mut st = self.state();
                st.last_outcome = "failed";
                st.last_error = Some(e);
            }
        }
    }

    async fn upload_once(&self) -> Result<(), String> {
        let stats = &self.store.stats().uploader;
        let index = self.store.db_applied_index();
        let last = self.state().last_index;
        if index <= last {
            stats.add("num_uploads_skipped", 1);
            return Ok(());
        }
        if last == 0 {
            match self.storage.current_id().await {
                Ok(id) if id == index.to_string() => {
                    stats.add("num_uploads_skipped_id", 1);
                    self.state().last_index = index;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    stats.add("num_sum_get_fail", 1);
                    tracing::info!(from = %self.storage.describe(), error = %e, "auto-backup: no ID of an earlier upload");
                }
            }
        }
        let opts = BackupOptions {
            format: BackupFormat::Binary,
            vacuum: self.cfg.vacuum,
            compress: self.cfg.compress,
            tables: Vec::new(),
        };
        let copy = self.store.backup(opts).await.map_err(|e| e.to_string())?;
        let started = Instant::now();
        let sent = match self.storage.upload(copy, &index.to_string()).await {
            Ok(n) => n,
            Err(e) => {
                stats.add("num_uploads_fail", 1);
                return Err(e);
            }
        };
        let took = started.elapsed();
        stats.add("num_uploads_ok", 1);
        stats.add("total_upload_bytes", sent as i64);
        stats.set("last_upload_bytes", sent as i64);
        let mut st = self.state();
        st.last_index = index;
        st.last_time = Some(SystemTime::now());
        st.last_duration = took;
        st.last_bytes = sent;
        st.last_outcome = "ok";
        st.last_error = None;
        tracing::info!(
            size = %friendly_bytes(sent),
            to = %self.storage.describe(),
            took = %duration_string(took),
            index,
            "auto-backup: uploaded"
        );
        Ok(())
    }

    /// The `auto_backups` section of `/status`: rqlite's fields, and the last attempt's size,
    /// outcome and error.
    pub fn status(&self) -> Value {
        let st = self.state();
        let mut v = json!({
            "upload_destination": self.storage.describe(),
            "upload_interval": duration_string(self.cfg.interval),
            "last_upload_time": st.last_time.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| {
                let s = rfc3339(t);
                // Go's time.RFC3339: whole seconds.
                match s.split_once('.') {
                    Some((secs, _)) => format!("{secs}Z"),
                    None => s,
                }
            }),
            "last_upload_duration": duration_string(st.last_duration),
            "last_upload_bytes": st.last_bytes,
            "last_index": st.last_index.to_string(),
        });
        if !st.last_outcome.is_empty() {
            v["last_outcome"] = json!(st.last_outcome);
        }
        if let Some(e) = &st.last_error {
            v["last_error"] = json!(e);
        }
        v
    }
}
