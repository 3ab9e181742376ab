//! A keep-alive HTTP/1.1 client for one node, in plain text or, after `use_tls`, over HTTPS.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rq_cluster::conn::{Conn, Dialer};
use rq_net::rustls::ClientConfig;

/// The TLS client every connection of this run uses, once `use_tls` set it.
static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Talks HTTPS to every node from now on, with `config`.
pub fn use_tls(config: Arc<ClientConfig>) {
    let _ = TLS.set(config);
}

fn scheme() -> &'static str {
    if TLS.get().is_some() { "https" } else { "http" }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    pub fn new(addr: &str) -> Client {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.enforce_http(false);
        let tls = TLS.get().map_or_else(
            || {
                let roots = rq_net::rustls::RootCertStore::empty();
                ClientConfig::builder_with_provider(Arc::new(rq_net::rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            },
            |c| (**c).clone(),
        );
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(conn);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(https);
        Client {
            base: format!("{}://{addr}", scheme()),
            http,
        }
    }

    async fn send(&self, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<Bytes> {
        let resp = self.http.request(req).await.context("request failed")?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        successful(status, body)
    }

    /// POSTs a JSON body and checks that no result carries an error.
    pub async fn post_json(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Bytes> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        without_errors(self.send(req).await?)
    }

    /// POSTs a raw body (a database file); expects a success status.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Bytes> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("Content-Type", "application/octet-stream")
            .body(Full::new(Bytes::from(body)))?;
        self.send(req).await
    }

    /// GETs `path` and counts the body's bytes without keeping them.
    pub async fn get_discard(&self, path: &str) -> anyhow::Result<u64> {
        let req = hyper::Request::get(format!("{}{path}", self.base)).body(Full::new(Bytes::new()))?;
        let resp = self.http.request(req).await.context("request failed")?;
        if !resp.status().is_success() {
            bail!("{}", resp.status());
        }
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                n += data.len() as u64;
            }
        }
        Ok(n)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        let req = hyper::Request::get(format!("{}{path}", self.base)).body(Full::new(Bytes::new()))?;
        self.send(req).await
    }
}

/// One measured client's own keep-alive connection, driven by the client's task: the load
/// generator then adds no task switches of its own to each request it times.
pub struct Connection(Conn);

/// Longest a measured request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Connection {
    pub fn new(addr: &str) -> Connection {
        let dialer = TLS.get().map_or_else(Dialer::default, |c| Dialer::tls(c.clone()));
        Connection(Conn::with_dialer(addr, Duration::from_secs(5), dialer))
    }

    /// POSTs a JSON body and checks that no result carries an error.
    pub async fn post_json(&mut self, path: &str, body: Vec<u8>) -> anyhow::Result<Bytes> {
        let (status, body) = self
            .0
            .post(path, "application/json", Bytes::from(body), REQUEST_TIMEOUT)
            .await?;
        without_errors(successful(status, body)?)
    }

    /// GETs `path` and checks for a success status.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Bytes> {
        let (status, body) = self.0.get(path, REQUEST_TIMEOUT).await?;
        successful(status, body)
    }
}

fn successful(status: hyper::StatusCode, body: Bytes) -> anyhow::Result<Bytes> {
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

fn without_errors(body: Bytes) -> anyhow::Result<Bytes> {
    if memchr_error(&body) {
        bail!("request failed: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// Whether a response body carries an `"error"` key.
fn memchr_error(body: &[u8]) -> bool {
    body.windows(8).any(|w| w == b"\"error\":")
}
