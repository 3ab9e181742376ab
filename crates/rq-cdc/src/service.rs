//! Delivery of captured changes: while this node leads, it sends what its queue holds above the
//! high-water mark to the endpoint, in order, a batch of log indexes per request, and keeps the
//! other voters' marks current so that they prune their queues and a new leader resumes where
//! this one stopped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rq_cluster::Network;
use rq_store::Store;
use rq_store::cdc::CdcQueue;
use serde_json::{Value, json};

use crate::config::CdcConfig;

/// Longest a high-water mark message to another node may take.
const HWM_TIMEOUT: Duration = Duration::from_secs(5);

pub struct CdcService {
    cfg: CdcConfig,
    store: Store,
    net: Network,
    queue: Arc<CdcQueue>,
    http: reqwest::Client,
    status: Mutex<Status>,
}

#[derive(Default)]
struct Status {
    is_leader: bool,
    last_error: Option<String>,
}

impl CdcService {
    /// The service for `store`, whose queue must exist (capture is on).
    pub fn new(cfg: CdcConfig, store: Store, net: Network) -> Result<Arc<CdcService>, String> {
        cfg.check_endpoint()?;
        let queue = store
            .cdc_queue()
            .cloned()
            .ok_or("change capture is not on in the store")?;
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.transmit_timeout)
            .connect_timeout(cfg.transmit_timeout);
        if let Some(t) = &cfg.tls {
            let read = |what: &str, path: &str| {
                std::fs::read(path).map_err(|e| format!("failed to build TLS config: {what} {path}: {e}"))
            };
            let ca = (!t.ca_cert_file.is_empty())
                .then(|| read("CA", &t.ca_cert_file))
                .transpose()?;
            let identity = if !t.cert_file.is_empty() && !t.key_file.is_empty() {
                Some((read("certificate", &t.cert_file)?, read("key", &t.key_file)?))
            } else {
                None
            };
            let config = rq_net::client_config_from_pem(&rq_net::PemClientOptions {
                ca,
                identity,
                no_verify: t.insecure_skip_verify,
                server_name: (!t.server_name.is_empty()).then(|| t.server_name.clone()),
            })
            .map_err(|e| format!("failed to build TLS config: {e}"))?;
            builder = builder.tls_backend_preconfigured((*config).clone());
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Arc::new(CdcService {
            cfg,
            store,
            net,
            queue,
            http,
            status: Mutex::default(),
        }))
    }

    fn status_mut(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `cdc` section of `/status`: rqlite's fields, and the queue's size and last error.
    pub fn status(&self) -> Value {
        let (length, bytes) = self.queue.len();
        let hwm = self.queue.hwm();
        let st = self.status_mut();
        let mut v = json!({
            "node_id": self.store.node_id(),
            "dir": self.queue.dir().display().to_string(),
            "highwater_mark": hwm,
            "is_leader": st.is_leader,
            "sink": self.cfg.redacted_endpoint(),
            "fifo": {"has_next": self.queue.has_after(hwm), "length": length, "bytes": bytes},
        });
        if !self.cfg.service_id.is_empty() {
            v["service_id"] = json!(self.cfg.service_id);
        }
        if let Some(e) = &st.last_error {
            v["last_error"] = json!(e);
        }
        v
    }

    /// Runs until the store stops: sends while leading, and tells the others the mark.
    pub async fn run(self: Arc<Self>) {
        match self.cfg.service_id.as_str() {
            "" => tracing::info!(node = %self.store.node_id(), "CDC: service started"),
            id => tracing::info!(service_id = %id, node = %self.store.node_id(), "CDC: service started"),
        }
        tokio::spawn(self.clone().broadcast_loop());
        let mut metrics = self.store.raft().metrics();
        loop {
            while !self.store.is_leader() {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
            self.status_mut().is_leader = true;
            tracing::info!(node = %self.store.node_id(), "CDC: this node now leads; sending changes");
            self.lead().await;
            self.status_mut().is_leader = false;
            tracing::info!(node = %self.store.node_id(), "CDC: this node no longer leads; not sending changes");
        }
    }

    /// Sends batches while this node leads.
    async fn lead(&self) {
        let stats = &self.store.stats().cdc;
        let mut sent = self.queue.hwm();
        while self.store.is_leader() {
            let mut batch = match self.queue.read_after(sent, self.cfg.max_batch_size) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "CDC: cannot read the queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                // Wait for more, rechecking leadership now and then.
                let _ = tokio::time::timeout(Duration::from_millis(250), self.queue.appended.notified()).await;
                continue;
            }
            // A batch goes when it is full, or once its first change has waited the delay.
            let deadline = tokio::time::Instant::now() + self.cfg.max_batch_delay;
            while batch.len() < self.cfg.max_batch_size {
                let more = self.queue.appended.notified();
                if tokio::time::timeout_at(deadline, more).await.is_err() {
                    break;
                }
                if let Ok(b) = self.queue.read_after(sent, self.cfg.max_batch_size) {
                    batch = b;
                }
            }
            let last = batch.last().map_or(sent, |m| m.0);
            let body = self.envelope(&batch);
            match self.deliver(&body).await {
                Delivery::Sent => {
                    stats.add("num_events_tx_ok", 1);
                    if let Err(e) = self.queue.set_hwm(last) {
                        tracing::warn!(error = %e, "CDC: could not record the high-water mark");
                    }
                    self.status_mut().last_error = None;
                }
                Delivery::Dropped => {}
                Delivery::NotLeader => return,
            }
            sent = last;
        }
    }

    /// The request body: rqlite's envelope around the batch's messages.
    fn envelope(&self, batch: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + batch.iter().map(|m| m.1.len() + 1).sum::<usize>());
        out.push(b'{');
        if !self.cfg.service_id.is_empty() {
            out.extend_from_slice(b"\"service_id\":");
            rq_proto::json::write_str(&mut out, &self.cfg.service_id, true);
            out.push(b',');
        }
        out.extend_from_slice(b"\"node_id\":");
        rq_proto::json::write_str(&mut out, self.store.node_id(), true);
        out.extend_from_slice(b",\"payload\":[");
        for (n, (_, m)) in batch.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Sends one batch, retrying by the policy.
    async fn deliver(&self, body: &[u8]) -> Delivery {
        let stats = &self.store.stats().cdc;
        if self.cfg.is_stdout() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(body);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            return Delivery::Sent;
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            stats.add("num_bytes_tx", body.len() as i64);
            let sent = self
                .http
                .post(&self.cfg.endpoint)
                .header("Content-Type", "application/json")
                .body(body.to_vec())
                .send()
                .await;
            let error = match sent {
                Ok(r) if r.status() == 200 || r.status() == 202 => return Delivery::Sent,
                Ok(r) => format!("HTTP request failed with status {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            stats.add("num_events_tx_failed", 1);
            self.status_mut().last_error = Some(error.clone());
            if self.cfg.transmit_max_retries.is_some_and(|n| attempt >= n) {
                tracing::error!(attempts = attempt, last_error = %error, "CDC: failed to send request to endpoint; dropping it");
                stats.add("dropped_failed_to_send", 1);
                return Delivery::Dropped;
            }
            let wait = self.cfg.backoff(attempt);
            tracing::warn!(attempt, error = %error, retry_in = ?wait, "CDC: sending failed");
            stats.add("retries", 1);
            tokio::time::sleep(wait).await;
            if !self.store.is_leader() {
                return Delivery::NotLeader;
            }
        }
    }

    /// Every `high_watermark_interval`, while leading, tells every other voter the mark.
    async fn broadcast_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.high_watermark_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let hwm = self.queue.hwm();
            if hwm == 0 || !self.store.is_leader() {
                continue;
            }
            let me = self.store.config().raft_addr.clone();
            let sends = self
                .store
                .nodes()
                .into_iter()
                .filter(|(n, voter)| *voter && n.addr != me)
                .map(|(n, _)| {
                    let net = self.net.clone();
                    async move {
                        if let Err(e) = net.send_cdc_hwm(&n.addr, hwm, HWM_TIMEOUT).await {
                            tracing::debug!(to = %n.addr, error = %e, "CDC: high-water mark not delivered");
                        }
                    }
                });
            futures::future::join_all(sends).await;
        }
    }
}

enum Delivery {
    Sent,
    Dropped,
    NotLeader,
}
