//! One keep-alive HTTP/1.1 connection to a node, driven by the task that uses it.
//!
//! Raft sends to each node one request at a time, from one task. A pooled client hands every
//! request to a connection task and takes the answer back from it: two task switches, often
//! two thread wake-ups, on each of the thousands of requests a second that replication makes.
//! Here the calling task polls the connection itself while it waits for its answer. (The
//! bench tool's clients, one request at a time each, use it too.)
//!
//! openraft also makes a short-lived client for each leadership check (a round of heartbeats
//! for a linearizable read) and each vote. Those take an idle connection from a shared `Idle`
//! pool and put it back when dropped, so no request waits for a new TCP connection. What nodes
//! ask of each other outside Raft (forwarded requests, joins, elections) uses a pool of its own.
//!
//! A pooled connection may have been closed by the other side while it sat idle (that node
//! restarted, say). The request it was to carry is then sent on a new connection, and the pool
//! counts the replacement.
//!
//! With node-to-node TLS on, every connection is made through the `Dialer`'s TLS client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rq_net::{MaybeTls, TlsConnector};
use tokio::net::TcpStream;

use crate::hangup::{Hangups, OnHangup, Watch};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// No connection could be made: the node is down or unreachable.
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection failed during the request.
    #[error("{0}")]
    Io(String),
    /// No answer came within the time allowed.
    #[error("{0}")]
    Timeout(String),
}

/// A failed attempt, and whether the request may have reached the other side.
struct Failed {
    error: ConnError,
    unsent: bool,
}

type Io = TokioIo<MaybeTls>;

struct Live {
    sender: SendRequest<Full<Bytes>>,
    conn: Pin<Box<Connection<Io, Full<Bytes>>>>,
    /// Dropped after the connection, which it keeps open while it lives.
    _watch: Option<Watch>,
}

/// How connections are made: plain TCP, or TLS over it.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<TlsConnector>,
}

impl Dialer {
    /// Connections in TLS with this client configuration.
    pub fn tls(config: std::sync::Arc<rq_net::rustls::ClientConfig>) -> Dialer {
        Dialer {
            tls: Some(TlsConnector::from(config)),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http` or `https`, for URLs to the same nodes.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

/// Idle connections kept per address.
const IDLE_PER_ADDR: usize = 4;

/// Idle connections by address, shared by the `Conn`s made from it.
#[derive(Clone, Default)]
pub struct Idle {
    conns: Arc<Mutex<HashMap<String, Vec<Live>>>>,
}

impl Idle {
    fn take(&self, addr: &str) -> Option<Live> {
        self.conns.lock().unwrap().get_mut(addr).and_then(Vec::pop)
    }

    fn put(&self, addr: &str, live: Live) {
        let mut idle = self.conns.lock().unwrap();
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < IDLE_PER_ADDR {
            list.push(live);
        }
    }
}

/// A connection to `addr`, opened when first needed and again after a failure.
pub struct Conn {
    addr: String,
    dialer: Dialer,
    connect_timeout: Duration,
    live: Option<Live>,
    idle: Option<Idle>,
    in_flight: bool,
    replaced: u64,
    /// Where the connections this makes are watched for the other side hanging up, and what
    /// to call then.
    hangups: Option<(Hangups, OnHangup)>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let (Some(idle), Some(live), false) = (&self.idle, self.live.take(), self.in_flight) {
            idle.put(&self.addr, live);
        }
    }
}

impl Conn {
    pub fn new(addr: &str, connect_timeout: Duration) -> Conn {
        Conn::with_dialer(addr, connect_timeout, Dialer::default())
    }

    /// A connection made by `dialer`.
    pub fn with_dialer(addr: &str, connect_timeout: Duration, dialer: Dialer) -> Conn {
        Conn {
            addr: addr.to_string(),
            dialer,
            connect_timeout,
            live: None,
            idle: None,
            in_flight: false,
            replaced: 0,
            hangups: None,
        }
    }

    /// Watches the connections this makes (not those taken from the pool, watched by whoever
    /// made them) in `hangups`, calling `on_hangup` if the other side closes one.
    pub fn watch_hangups(&mut self, hangups: Hangups, on_hangup: OnHangup) {
        self.hangups = Some((hangups, on_hangup));
    }

    /// A connection that starts from an idle one in `idle`, if any, and goes back there when
    /// dropped. A request that a connection taken from the pool failed to send, because the
    /// other side had closed it meanwhile, is sent on a new one; a request that may have gone
    /// out is never sent twice.
    pub fn pooled(addr: &str, connect_timeout: Duration, dialer: Dialer, idle: Idle) -> Conn {
        let mut conn = Conn::with_dialer(addr, connect_timeout, dialer);
        conn.idle = Some(idle);
        conn
    }

    /// How many connections taken from the pool this connection found closed by the other side
    /// and replaced with new ones.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// POSTs `body` (of `content_type`) to `path` and returns the status and body of the
    /// answer, all within `ttl`. After a failure the next request opens a new connection.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
        ttl: Duration,
    ) -> Result<(StatusCode, Bytes), ConnError> {
        self.post_as(path, content_type, None, body, ttl).await
    }

    /// POSTs as `post` does, with an `Authorization` header when `authorization` is given.
    pub async fn post_as(
        &mut self,
        path: &str,
        content_type: &str,
        authorization: Option<&str>,
        body: Bytes,
        ttl: Duration,
    ) -> Result<(StatusCode, Bytes), ConnError> {
        self.exchange(Method::POST, path, content_type, authorization, body, ttl)
            .await
    }

    /// GETs `path`, as `post` does.
    pub async fn get(&mut self, path: &str, ttl: Duration) -> Result<(StatusCode, Bytes), ConnError> {
        self.exchange(Method::GET, path, "", None, Bytes::new(), ttl).await
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        authorization: Option<&str>,
        body: Bytes,
        ttl: Duration,
    ) -> Result<(StatusCode, Bytes), ConnError> {
        // Set until the exchange is complete: a request abandoned half-way leaves its
        // connection in an unknown state, and such a connection never goes back to the pool.
        self.in_flight = true;
        let attempt = async {
            let mut from_pool = false;
            if self.live.is_none()
                && let Some(live) = self.idle.as_ref().and_then(|i| i.take(&self.addr))
            {
                self.live = Some(live);
                from_pool = true;
            }
            match self
                .try_send(method.clone(), path, content_type, authorization, body.clone())
                .await
            {
                Err(Failed { unsent: true, .. }) if from_pool => {
                    self.replaced += 1;
                    self.try_send(method, path, content_type, authorization, body).await
                }
                r => r,
            }
            .map_err(|f| f.error)
        };
        let r = match tokio::time::timeout(ttl, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout(format!(
                "timeout after {ttl:?} waiting for {}",
                self.addr
            ))),
        };
        if r.is_err() {
            // What state the connection is in is unknown: never reuse it.
            self.live = None;
        }
        self.in_flight = false;
        r
    }

    async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        authorization: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Failed> {
        if self.live.is_none() {
            self.live = Some(self.connect().await.map_err(|error| Failed { error, unsent: true })?);
        }
        let live = self.live.as_mut().expect("connected");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.addr);
        if !content_type.is_empty() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req.body(Full::new(body)).map_err(|e| Failed {
            error: ConnError::Io(e.to_string()),
            unsent: true,
        })?;
        let mut phase = Phase::Ready;
        let r = async {
            drive(&mut live.conn, live.sender.ready())
                .await?
                .map_err(Ended::Failed)?;
            phase = Phase::Sending;
            let resp = drive(&mut live.conn, live.sender.send_request(req))
                .await?
                .map_err(Ended::Failed)?;
            phase = Phase::Answered;
            let (parts, body) = resp.into_parts();
            let bytes = drive(&mut live.conn, body.collect())
                .await?
                .map_err(Ended::Failed)?
                .to_bytes();
            Ok((parts.status, bytes))
        }
        .await;
        r.map_err(|e: Ended| {
            self.live = None;
            // Whether the request surely never went out: the connection was found closed
            // before it was handed over, or while it still waited to be written (hyper ends
            // cleanly, or cancels it, only then; a request written and cut off is an error).
            let unsent = match (&phase, &e) {
                (Phase::Ready, _) | (Phase::Sending, Ended::Closed) => true,
                (Phase::Sending, Ended::Failed(e)) => e.is_canceled(),
                (Phase::Answered, _) => false,
            };
            let error = match e {
                Ended::Closed => ConnError::Io(format!("{}: connection closed", self.addr)),
                Ended::Failed(e) => ConnError::Io(format!("{}: {e}", self.addr)),
            };
            Failed { error, unsent }
        })
    }

    async fn connect(&self) -> Result<Live, ConnError> {
        let failed = |reason: String| ConnError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let open = async {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| failed(e.to_string()))?;
            stream.set_nodelay(true).map_err(|e| failed(e.to_string()))?;
            let watch = self.hangups.as_ref().and_then(|(h, f)| h.watch(&stream, f.clone()));
            let tls = match &self.dialer.tls {
                Some(c) => Some((
                    c,
                    rq_net::server_name_of(&self.addr).map_err(|e| failed(e.to_string()))?,
                )),
                None => None,
            };
            let stream = rq_net::connect(stream, tls)
                .await
                .map_err(|e| failed(format!("TLS handshake: {e}")))?;
            Ok::<_, ConnError>((stream, watch))
        };
        let (stream, watch) = tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| failed("timed out".into()))??;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Live {
            sender,
            conn: Box::pin(conn),
            _watch: watch,
        })
    }
}

/// How far a request got on its connection.
enum Phase {
    Ready,
    Sending,
    Answered,
}

/// How a connection ended before the answer came.
enum Ended {
    Closed,
    Failed(hyper::Error),
}

/// Polls `fut` to completion while driving the connection it needs. An error if the
/// connection ends first.
async fn drive<F: Future>(conn: &mut Pin<Box<Connection<Io, Full<Bytes>>>>, fut: F) -> Result<F::Output, Ended> {
    let mut fut = std::pin::pin!(fut);
    let mut ended: Option<Result<(), hyper::Error>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if ended.is_none()
            && let Poll::Ready(r) = conn.as_mut().poll(cx)
        {
            // The connection is done; what it finished may have completed `fut`.
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            ended = Some(r);
        }
        match ended.take() {
            Some(Err(e)) => Poll::Ready(Err(Ended::Failed(e))),
            Some(Ok(())) => Poll::Ready(Err(Ended::Closed)),
            None => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::Response;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// An HTTP/1.1 server on loopback that echoes request bodies, after `delay` for a body of
    /// "slow"; it counts the connections it accepted, and closes each after `per_conn` requests.
    async fn server(per_conn: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let served = served.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            if &body[..] == b"slow" {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let mut resp = Response::new(Full::new(body));
                            if served.fetch_add(1, Ordering::SeqCst) + 1 >= per_conn {
                                resp.headers_mut()
                                    .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                            }
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    async fn echo(conn: &mut Conn, body: &'static str) -> Bytes {
        let (status, got) = conn
            .post("/", "text/plain", Bytes::from_static(body.as_bytes()), T)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        got
    }

    #[tokio::test]
    async fn pooled_connections_are_reused_across_clients() {
        let (addr, accepted) = server(usize::MAX).await;
        let idle = Idle::default();
        for i in 0..5 {
            let mut c = Conn::pooled(&addr, T, Dialer::default(), idle.clone());
            assert_eq!(echo(&mut c, "a").await, "a");
            assert_eq!(echo(&mut c, "b").await, "b", "round {i}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Without a pool, each client has its own connection.
        for _ in 0..2 {
            echo(&mut Conn::new(&addr, T), "c").await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_abandoned_mid_request_is_not_reused() {
        let (addr, accepted) = server(usize::MAX).await;
        let idle = Idle::default();
        let mut c = Conn::pooled(&addr, T, Dialer::default(), idle.clone());
        echo(&mut c, "warm").await;
        let abandoned = tokio::time::timeout(Duration::from_millis(50), c.post("/", "text/plain", "slow".into(), T));
        assert!(abandoned.await.is_err(), "the slow request was cut off");
        drop(c);
        // The next client must not read the abandoned request's answer.
        let mut next = Conn::pooled(&addr, T, Dialer::default(), idle.clone());
        assert_eq!(echo(&mut next, "fresh").await, "fresh");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced() {
        // The server closes every connection after one request.
        let (addr, accepted) = server(1).await;
        let idle = Idle::default();
        let mut c = Conn::pooled(&addr, T, Dialer::default(), idle.clone());
        assert_eq!(echo(&mut c, "a").await, "a");
        assert_eq!(c.replaced(), 0, "a new connection replaces nothing");
        drop(c);
        for body in ["b", "c"] {
            let mut c = Conn::pooled(&addr, T, Dialer::default(), idle.clone());
            assert_eq!(echo(&mut c, body).await, body);
            assert_eq!(c.replaced(), 1, "the pooled connection was closed");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
