//! `--cdc`: an HTTP endpoint in this process that every spawned node sends its change data
//! capture to, recording each message's delivery lag (arrival time less the message's
//! `commit_timestamp`, in milliseconds, both from this machine's clock).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

/// Lags of every message received so far, in milliseconds.
#[derive(Clone, Default)]
pub struct Lags(Arc<Mutex<Vec<u64>>>);

impl Lags {
    /// Takes the lags recorded so far.
    pub fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the endpoint; its URL and the lags it records.
pub async fn start() -> anyhow::Result<(String, Lags)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/cdc", listener.local_addr()?);
    let lags = Lags::default();
    let l = lags.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let l = l.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let l = l.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let at = now_ms();
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                            let mut lags = l.0.lock().unwrap();
                            for m in v["payload"].as_array().into_iter().flatten() {
                                if let Some(ts) = m["commit_timestamp"].as_u64() {
                                    lags.push(at.saturating_sub(ts));
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok((url, lags))
}

/// The p-th percentile of `v` (sorted in place).
pub fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}
