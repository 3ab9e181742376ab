//! The shell's HTTP client, as rqlite's: requests go to the current host; one that cannot be
//! reached moves the client to the next of `-H:-p` and the `-a` alternatives (logged to
//! stderr), and an answer from another host than before is reported so the prompt can follow.
//! 301 answers (a follower's redirect to the leader) are followed, at most 21 times.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};

/// Redirects followed before a host counts as unavailable.
const MAX_REDIRECTS: usize = 21;

/// What a request carries.
#[derive(Clone)]
pub enum Payload {
    None,
    Bytes(Bytes),
    /// A file read as it is sent, then `suffix`, with `progress` advanced as bytes go out;
    /// reopened for each host tried.
    File {
        path: std::path::PathBuf,
        suffix: &'static [u8],
        progress: Option<indicatif::ProgressBar>,
    },
}

impl Payload {
    async fn body(&self) -> Result<Option<reqwest::Body>, String> {
        use futures::StreamExt;
        match self {
            Payload::None => Ok(None),
            Payload::Bytes(b) => Ok(Some(reqwest::Body::from(b.clone()))),
            Payload::File { path, suffix, progress } => {
                let f = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("open {}: {e}", path.display()))?;
                let progress = progress.clone();
                let file = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map(move |chunk| {
                    if let (Ok(c), Some(p)) = (&chunk, &progress) {
                        p.inc(c.len() as u64);
                    }
                    chunk
                });
                let tail = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(suffix))]);
                Ok(Some(reqwest::Body::wrap_stream(file.chain(tail))))
            }
        }
    }
}

/// An answer, and the host that gave it when that is not the host asked first.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub new_host: Option<String>,
}

impl Answer {
    /// Reads a response's body into an answer.
    pub async fn read(resp: reqwest::Response, new_host: Option<String>) -> Result<Answer, String> {
        Ok(Answer {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.map_err(|e| e.to_string())?,
            new_host,
        })
    }

    /// Go's `resp.Status`: the code and its reason, e.g. `503 Service Unavailable`.
    pub fn status_line(&self) -> String {
        format!(
            "{} {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or_default()
        )
    }
}

/// Why a request got no answer at all.
#[derive(Debug)]
pub enum RequestError {
    /// Every host was tried.
    NoHost,
    /// The request could not be made (bad credentials format, bad URL).
    Invalid(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::NoHost => f.write_str("no host available to perform the request"),
            RequestError::Invalid(e) => f.write_str(e),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    /// The same client with no overall timeout, for uploads and downloads of whole databases.
    unbounded: reqwest::Client,
    scheme: String,
    hosts: Vec<String>,
    current: usize,
    pub prefix: String,
    /// `-u user:password`.
    creds: Option<String>,
    /// Read-your-writes: the log index of the last write answered (its `X-RQLITE-RAFT-INDEX`),
    /// sent with every later request as `X-RQLITE-MIN-INDEX`, so that whichever node answers
    /// has applied it first.
    last_write: std::sync::atomic::AtomicU64,
}

/// The log index a write's answer says made it visible.
const X_RQLITE_RAFT_INDEX: &str = "x-rqlite-raft-index";
/// The log index a read must see.
const X_RQLITE_MIN_INDEX: &str = "x-rqlite-min-index";

/// A notice in the form rqlite's client logs it: `[client] 2009/01/23 01:23:23 message`.
fn log(msg: &str) {
    eprintln!("[client] {} {msg}", chrono::Local::now().format("%Y/%m/%d %H:%M:%S"));
}

impl Client {
    pub fn new(
        tls: Option<std::sync::Arc<rq_net::rustls::ClientConfig>>,
        timeout: Duration,
        scheme: &str,
        hosts: Vec<String>,
        prefix: &str,
        creds: Option<String>,
    ) -> anyhow::Result<Client> {
        let build = |timeout: Option<Duration>| -> anyhow::Result<reqwest::Client> {
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .http1_only();
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            if let Some(c) = &tls {
                b = b.tls_backend_preconfigured((**c).clone());
            }
            Ok(b.build()?)
        };
        Ok(Client {
            http: build((!timeout.is_zero()).then_some(timeout))?,
            unbounded: build(None)?,
            scheme: scheme.to_string(),
            hosts,
            current: 0,
            prefix: prefix.to_string(),
            creds,
            last_write: Default::default(),
        })
    }

    /// The host requests go to first.
    pub fn current_host(&self) -> &str {
        &self.hosts[self.current]
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, RequestError> {
        match &self.creds {
            None => Ok(req),
            Some(c) => {
                let parts: Vec<&str> = c.split(':').collect();
                if parts.len() != 2 {
                    return Err(RequestError::Invalid("invalid Basic Auth credential format".into()));
                }
                Ok(req.basic_auth(parts[0], Some(parts[1])))
            }
        }
    }

    /// Sends `method` to `path` (with its query string) on the current host, moving on to the
    /// next host while none answers. `unbounded` lifts the request timeout.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
        unbounded: bool,
    ) -> Result<Answer, RequestError> {
        let payload = body.map_or(Payload::None, Payload::Bytes);
        let (resp, new_host) = self.respond(method, path, &payload, content_type, unbounded).await?;
        Answer::read(resp, new_host).await.map_err(RequestError::Invalid)
    }

    /// As `request`, with the answer's body left to read as a stream.
    pub async fn respond(
        &mut self,
        method: Method,
        path: &str,
        payload: &Payload,
        content_type: Option<&str>,
        unbounded: bool,
    ) -> Result<(reqwest::Response, Option<String>), RequestError> {
        let mut tried = 0;
        while tried < self.hosts.len() {
            let host = self.hosts[self.current].clone();
            let url = format!("{}://{host}{path}", self.scheme);
            match self.follow(&method, url, payload, content_type, unbounded).await {
                Ok(resp) => return Ok((resp, (tried > 0).then_some(host))),
                Err(Failure::Invalid(e)) => return Err(RequestError::Invalid(e)),
                Err(Failure::TooManyRedirects) => {
                    log(&format!("too many redirects from host: '{host}'"));
                }
                Err(Failure::Unreachable) => {}
            }
            log(&format!(
                "host '{host}' is unavailable, retrying with the next available host"
            ));
            tried += 1;
            self.current = (self.current + 1) % self.hosts.len();
        }
        log("none of the available hosts are responsive");
        Err(RequestError::NoHost)
    }

    async fn follow(
        &self,
        method: &Method,
        mut url: String,
        payload: &Payload,
        content_type: Option<&str>,
        unbounded: bool,
    ) -> Result<reqwest::Response, Failure> {
        let http = if unbounded { &self.unbounded } else { &self.http };
        let mut redirects = 0;
        loop {
            let mut req = http.request(method.clone(), &url);
            if let Some(b) = payload.body().await.map_err(Failure::Invalid)? {
                req = req.body(b);
            }
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            let seen = self.last_write.load(Ordering::Relaxed);
            if seen > 0 {
                req = req.header(X_RQLITE_MIN_INDEX, seen);
            }
            let req = self.authorize(req).map_err(|e| Failure::Invalid(e.to_string()))?;
            let resp = req.send().await.map_err(|_| Failure::Unreachable)?;
            if let Some(i) = resp
                .headers()
                .get(X_RQLITE_RAFT_INDEX)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                self.last_write.fetch_max(i, Ordering::Relaxed);
            }
            if resp.status() == StatusCode::MOVED_PERMANENTLY {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(Failure::TooManyRedirects);
                }
                match resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    Some(l) => {
                        url = l.to_string();
                        continue;
                    }
                    None => return Err(Failure::Unreachable),
                }
            }
            return Ok(resp);
        }
    }

    /// GETs an absolute URL on exactly that node, with credentials, without fail-over.
    pub async fn get_direct(&self, url: &str) -> Result<Answer, String> {
        let req = self.authorize(self.http.get(url)).map_err(|e| e.to_string())?;
        let resp = req.send().await.map_err(|e| e.to_string())?;
        Answer::read(resp, None).await
    }
}

enum Failure {
    Unreachable,
    TooManyRedirects,
    Invalid(String),
}
