//! Change data capture (`-cdc-config`): rqlite's configuration, and delivery of the changes the
//! store captures (`rq_store::cdc`) to an HTTP endpoint or standard output, at least once, in
//! log order, from the leader only.

pub mod config;
mod service;

pub use config::CdcConfig;
pub use service::CdcService;

/// What the store captures for `cfg`.
pub fn capture(cfg: &CdcConfig) -> rq_store::CdcCapture {
    rq_store::CdcCapture {
        capture: rq_db::capture::CaptureConfig {
            table_filter: cfg.table_filter.clone(),
            row_ids_only: cfg.row_ids_only,
        },
        max_queue_bytes: cfg.max_queue_bytes,
    }
}
