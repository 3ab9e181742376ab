//! The public HTTP API on `-http-addr`: rqlite's endpoints, parameters, bodies, JSON shapes and
//! status codes.
//!
//! This is the only crate that knows HTTP status codes: store errors arrive as `StoreError`
//! and are mapped here, in `store_error`. It never calls rusqlite or openraft; everything goes
//! through the `Store` facade.

mod body;
mod console;
mod encode;
mod metrics;
mod node;

pub use crate::metrics::{GaugeReading, describe as describe_metrics, is_gauge};
mod params;
mod queue;
mod upload;

#[cfg(test)]
mod fuzz_test;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request as HttpRequest, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::FutureExt;
use futures::future::BoxFuture;
use rq_proto::auth::{CredentialStore, Credentials, perm};
use rq_proto::{Request, Statement};
use rq_store::stats::{Counter, ExpvarMap};
use rq_store::{BackupFormat, BackupOptions, Forward, Outcome, ReadOptions, SqlOptions, Store, StoreError};

use crate::encode::{Envelope, Format, Shape};
use crate::params::Params;
pub use crate::queue::QueueConfig;
use crate::queue::WriteQueue;

/// Keys of the `http` expvar map.
const HTTP_KEYS: &[&str] = &[
    "auth_fail",
    "auth_ok",
    "backups",
    "boot",
    "execute_stmts_rx",
    "executions",
    "leader_not_found",
    "loads",
    "num_readyz",
    "num_status",
    "queries",
    "query_stmts_rx",
    "queued_executions",
    "queued_executions_failed",
    "queued_executions_leadership_lost",
    "queued_executions_no_leader",
    "queued_executions_not_leader",
    "queued_executions_num_stmts_rx",
    "queued_executions_num_stmts_tx",
    "queued_executions_ok",
    "queued_executions_unknown_error",
    "queued_executions_wait",
    "queued_executions_wait_timeout",
    "request_stmts_rx",
    "requests",
    "sql_analyze",
    "tls_cert_fetched",
    "ui",
    "user_reaps",
    "user_snapshots",
];

/// Facts about the build, reported in `/status` and the version header.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: String,
    pub commit: String,
    pub build_time: String,
}

/// Settings of the HTTP service.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The address the listener is bound to.
    pub bind_addr: String,
    /// `-http-adv-addr`: what clients and other nodes are told.
    pub adv_addr: String,
    /// Whether the API is served over TLS (`-http-cert`): the advertised URL is `https`.
    pub https: bool,
    /// `-auth`'s users and permissions; every request is checked against them when set.
    pub auth: Option<Arc<CredentialStore>>,
    /// `-http-max-body-size`: the largest body a request to a data endpoint may have (a SQLite
    /// file to `/db/load` or `/boot` is streamed to disk and not bound by it).
    pub max_body: usize,
    /// `-http-allow-origin`.
    pub allow_origin: Option<String>,
    pub queue: QueueConfig,
    pub build: BuildInfo,
    /// The command line, for `/debug/vars`.
    pub cmdline: Vec<String>,
    /// The process's Prometheus recorder, whose histograms `/metrics` renders (the expvar
    /// counters and scrape-time gauges are rendered without one).
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// What the HTTP layer needs from other nodes, by their node-to-node addresses.
pub trait Cluster: Send + Sync + 'static {
    /// The API URL and version of the node at `addr`.
    fn node_meta<'a>(
        &'a self,
        addr: &'a str,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<(String, String), String>>;

    /// Runs a client request on the leader at `addr`. Here and below, `creds` are the
    /// client's, which the leader checks again.
    fn forward<'a>(
        &'a self,
        addr: &'a str,
        request: Forward,
        creds: Option<&'a Credentials>,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<Outcome, StoreError>>;

    /// Removes node `id`, asked of the leader at `addr`.
    fn remove<'a>(
        &'a self,
        addr: &'a str,
        id: &'a str,
        creds: Option<&'a Credentials>,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<(), StoreError>>;

    /// A backup made by the leader at `addr`, as a body stream.
    fn backup<'a>(
        &'a self,
        addr: &'a str,
        opts: BackupOptions,
        creds: Option<&'a Credentials>,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<Body, StoreError>>;

    /// Hands leadership to node `to` (or the best-placed voter): here when `leader` is `None`
    /// (this node leads), else by asking the leader at that address.
    fn stepdown<'a>(
        &'a self,
        leader: Option<&'a str>,
        to: Option<String>,
        wait: bool,
        creds: Option<&'a Credentials>,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<(), StoreError>>;

    /// Loads the database file at `path` through the leader at `addr`.
    fn load<'a>(
        &'a self,
        addr: &'a str,
        path: &'a std::path::Path,
        creds: Option<&'a Credentials>,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<(), StoreError>>;
}

/// A request's results and who served them (X-RQLITE-SERVED-BY): this node's API address, or
/// the Raft address of the leader it was passed to.
pub(crate) struct Served {
    pub outcome: Outcome,
    /// The address of the node that ran it, as a header value (none if it cannot be one).
    pub by: Option<HeaderValue>,
}

impl Service {
    /// Runs a request here, or, if it needs the leader and this node is not it, on the leader
    /// (unless `?redirect` asks for a 301 instead).
    pub(crate) async fn run(&self, f: Forward, p: &Params) -> Result<Served, StoreError> {
        let local = |outcome| Served {
            outcome,
            by: self.served_by.clone(),
        };
        if self.store.is_leader() {
            return self.store.run(f).await.map(local);
        }
        match self.store.run(f.clone()).await {
            Err(StoreError::NotLeader { leader: Some(l) }) if !p.has("redirect") => {
                let proxy = &self.store.stats().proxy;
                let (sent, failed) = match f {
                    Forward::Execute { .. } => ("remote_executions", "remote_executions_failed"),
                    Forward::Query { .. } => ("remote_queries", "remote_queries_failed"),
                    Forward::Request { .. } => ("remote_requests", "remote_requests_failed"),
                };
                proxy.add(sent, 1);
                let out = self.cluster.forward(&l.addr, f, p.credentials(), p.timeout()).await;
                if out.is_err() {
                    proxy.add(failed, 1);
                }
                let out = out?;
                Ok(Served {
                    outcome: out,
                    by: HeaderValue::from_str(&l.addr).ok(),
                })
            }
            other => other.map(local),
        }
    }
}

/// Header names every answer carries, parsed once.
const X_RQLITE_VERSION: HeaderName = HeaderName::from_static("x-rqlite-version");
const X_RQLITE_SERVED_BY: HeaderName = HeaderName::from_static("x-rqlite-served-by");
/// The log index that made a write visible, on every answer to a write.
const X_RQLITE_RAFT_INDEX: HeaderName = HeaderName::from_static("x-rqlite-raft-index");
/// The log index a read must see (as `min_index=`).
const X_RQLITE_MIN_INDEX: HeaderName = HeaderName::from_static("x-rqlite-min-index");

/// The `http` counters that data requests bump, looked up once.
struct HttpCounters {
    auth_ok: Counter,
    executions: Counter,
    queries: Counter,
    requests: Counter,
    readyz: Counter,
    execute_stmts_rx: Counter,
    query_stmts_rx: Counter,
    request_stmts_rx: Counter,
}

impl HttpCounters {
    fn new(stats: &ExpvarMap) -> HttpCounters {
        HttpCounters {
            auth_ok: stats.counter("auth_ok"),
            executions: stats.counter("executions"),
            queries: stats.counter("queries"),
            requests: stats.counter("requests"),
            readyz: stats.counter("num_readyz"),
            execute_stmts_rx: stats.counter("execute_stmts_rx"),
            query_stmts_rx: stats.counter("query_stmts_rx"),
            request_stmts_rx: stats.counter("request_stmts_rx"),
        }
    }
}

/// The HTTP service. Shared by every connection.
pub struct Service {
    store: Store,
    cluster: Arc<dyn Cluster>,
    cfg: HttpConfig,
    stats: Arc<ExpvarMap>,
    counters: HttpCounters,
    queue: WriteQueue,
    started: SystemTime,
    /// Values of the headers every answer carries, made once.
    version: Option<HeaderValue>,
    allow_origin: Option<HeaderValue>,
    /// This node's address, for `X-RQLITE-SERVED-BY`.
    served_by: Option<HeaderValue>,
    /// Sections other parts of the node add to `/status` (as `disco`).
    sections: std::sync::RwLock<Vec<(String, StatusSection)>>,
    metrics: crate::metrics::HttpMetrics,
}

/// Produces one section of `/status` when asked.
pub type StatusSection = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

impl Service {
    pub fn new(store: Store, cluster: Arc<dyn Cluster>, cfg: HttpConfig) -> Arc<Service> {
        let stats = Arc::new(ExpvarMap::new(HTTP_KEYS));
        let queue = WriteQueue::start(store.clone(), cluster.clone(), cfg.queue, stats.clone());
        let version = HeaderValue::from_str(&cfg.build.version).ok();
        let allow_origin = cfg.allow_origin.as_deref().and_then(|o| HeaderValue::from_str(o).ok());
        let served_by = HeaderValue::from_str(&cfg.adv_addr).ok();
        Arc::new(Service {
            store,
            cluster,
            cfg,
            counters: HttpCounters::new(&stats),
            stats,
            queue,
            started: SystemTime::now(),
            version,
            allow_origin,
            served_by,
            sections: Default::default(),
            metrics: crate::metrics::HttpMetrics::new(),
        })
    }

    /// Adds (or replaces) the `/status` section `name`.
    pub fn register_status(&self, name: &str, section: StatusSection) {
        let mut sections = self.sections.write().unwrap_or_else(|e| e.into_inner());
        sections.retain(|(n, _)| n != name);
        sections.push((name.to_string(), section));
    }

    /// Every expvar map of integers (as `/debug/vars` has them), for exporters.
    pub fn expvar_maps(self: &Arc<Self>) -> Vec<(String, Vec<(&'static str, i64)>)> {
        crate::node::expvar_maps(self)
    }

    /// The gauges `/metrics` reads when scraped, read now, for exporters.
    pub fn gauges(self: &Arc<Self>) -> Vec<GaugeReading> {
        crate::metrics::gauges(self)
    }

    /// The service that answers every path: requests go straight to `handle`, which routes
    /// them itself (an axum `Router` in front would only add work to every request).
    pub fn service(self: Arc<Self>) -> ApiService {
        ApiService(self)
    }

    /// This node's API URL as others are told it.
    pub fn api_url(&self) -> String {
        let scheme = if self.cfg.https { "https" } else { "http" };
        format!("{scheme}://{}", self.cfg.adv_addr)
    }

    fn headers(&self, h: &mut HeaderMap) {
        if let Some(v) = &self.version {
            h.insert(X_RQLITE_VERSION, v.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("OPTIONS, GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        if let Some(v) = &self.allow_origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v.clone());
        }
        if self.cfg.auth.is_some() {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"rqlite\""),
            );
        }
    }

    /// Whether the request's credentials grant every permission `path` needs; counted in
    /// `auth_ok` or `auth_fail` as rqlite counts them (every request is, auth on or off).
    fn authorized(&self, path: &str, creds: Option<&Credentials>) -> bool {
        let Some(perms) = required_perms(path) else {
            return true;
        };
        let ok = match &self.cfg.auth {
            None => true,
            Some(store) => perms.iter().all(|p| store.allows(creds, p)),
        };
        if ok {
            self.counters.auth_ok.add(1);
        } else {
            self.stats.add("auth_fail", 1);
        }
        ok
    }
}

/// A plain-text error as Go's `http.Error` writes it: the message and a newline.
pub(crate) fn text_error(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, format!("{msg}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    r
}

/// How many headers a JSON answer carries: its type, `X-RQLITE-SERVED-BY`,
/// `X-RQLITE-RAFT-INDEX`, and the version and CORS headers `Service::headers` adds (hyper
/// writes the length itself). Reserved up front, so the map is allocated once, at its
/// smallest size; only `-http-allow-origin` or auth makes it grow.
const JSON_ANSWER_HEADERS: usize = 6;

pub(crate) fn json_response(body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.reserve(JSON_ANSWER_HEADERS);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// The HTTP API as a tower service (see `Service::service`).
#[derive(Clone)]
pub struct ApiService(Arc<Service>);

impl tower::Service<HttpRequest<Body>> for ApiService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: HttpRequest<Body>) -> Self::Future {
        Box::pin(handle(self.0.clone(), req).map(Ok))
    }
}

async fn handle(svc: Arc<Service>, req: HttpRequest<Body>) -> Response {
    let started = Instant::now();
    let endpoint = crate::metrics::endpoint_of(req.uri().path());
    let json_first = req.method() != Method::OPTIONS && declares_json_first(req.uri().path());
    let mut resp = route(&svc, req).await;
    svc.metrics.request(endpoint, resp.status(), started.elapsed());
    // rqlite's handlers for these paths set the JSON content type before anything else, so
    // every answer that does not replace it (a bare 405, a 301, an empty 200) carries it.
    if json_first && !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    svc.headers(resp.headers_mut());
    resp
}

/// Paths whose every answer is JSON unless it is an error text.
fn declares_json_first(path: &str) -> bool {
    [
        "/db/execute",
        "/db/query",
        "/db/request",
        "/db/sql",
        "/status",
        "/nodes",
    ]
    .iter()
    .any(|p| path.starts_with(p))
        || path == "/leader"
        || path == "/debug/vars"
}

async fn route(svc: &Arc<Service>, req: HttpRequest<Body>) -> Response {
    if req.method() == Method::OPTIONS {
        return empty(StatusCode::OK);
    }
    // A clone of the URI shares its bytes: the path can be borrowed while `req` moves on.
    let uri = req.uri().clone();
    let path = uri.path();
    if path == "/" || path.is_empty() {
        return console_redirect(StatusCode::FOUND, req.method());
    }
    if path == "/console" {
        return console_redirect(StatusCode::MOVED_PERMANENTLY, req.method());
    }
    let params = match Params::parse(&uri) {
        Ok(p) => p,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e.0),
    };
    let creds = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| Credentials::from_header(v.as_bytes()));
    if !svc.authorized(path, creds.as_ref()) {
        return empty(StatusCode::UNAUTHORIZED);
    }
    let params = params.with_credentials(creds);
    if path.starts_with("/console/") {
        svc.stats.add("ui", 1);
        return console::serve(path, req.method());
    }
    if path.starts_with("/db/execute") {
        svc.counters.executions.add(1);
        return execute(svc, req, params).await;
    }
    if path.starts_with("/db/query") {
        svc.counters.queries.add(1);
        return query(svc, req, params).await;
    }
    if path.starts_with("/db/request") {
        svc.counters.requests.add(1);
        return request(svc, req, params).await;
    }
    if path.starts_with("/db/sql") {
        svc.stats.add("sql_analyze", 1);
        return analyze(svc, req, params).await;
    }
    if path.starts_with("/db/backup") {
        svc.stats.add("backups", 1);
        return backup(svc, req.method(), &params).await;
    }
    if path.starts_with("/db/load") {
        svc.stats.add("loads", 1);
        return load(svc, req, params).await;
    }
    if path == "/boot" {
        svc.stats.add("boot", 1);
        return boot(svc, req).await;
    }
    if path == "/snapshot" {
        svc.stats.add("user_snapshots", 1);
        return snapshot(svc, req.method(), &params).await;
    }
    if path.starts_with("/remove") {
        return remove(svc, req, &params).await;
    }
    if path == "/reap" {
        svc.stats.add("user_reaps", 1);
        return reap(svc, req.method()).await;
    }
    if path.starts_with("/status") {
        svc.stats.add("num_status", 1);
        return node::status(svc, req.method(), &params);
    }
    if path.starts_with("/nodes") {
        return node::nodes(svc, req.method(), &params).await;
    }
    if path == "/leader" {
        return node::leader(svc, req, &params).await;
    }
    if path.starts_with("/readyz") {
        svc.counters.readyz.add(1);
        return node::readyz(svc, req.method(), &params).await;
    }
    if path == "/debug/vars" {
        return node::expvar(svc, &params);
    }
    if path == "/metrics" {
        if req.method() != Method::GET {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        return metrics::render(svc);
    }
    empty(StatusCode::NOT_FOUND)
}

/// The permissions a request to `path` needs, as rqlite's handlers check them (first thing,
/// before the method); `None` for paths that need none (unknown ones, answered 404).
fn required_perms(path: &str) -> Option<&'static [&'static str]> {
    let perms: &[&str] = if path.starts_with("/console") {
        &[perm::UI]
    } else if path.starts_with("/db/execute") {
        &[perm::EXECUTE]
    } else if path.starts_with("/db/query") || path.starts_with("/db/sql") {
        &[perm::QUERY]
    } else if path.starts_with("/db/request") {
        &[perm::QUERY, perm::EXECUTE]
    } else if path.starts_with("/db/backup") {
        &[perm::BACKUP]
    } else if path.starts_with("/db/load") || path == "/boot" {
        &[perm::LOAD]
    } else if path == "/snapshot" || path == "/reap" {
        &[perm::SNAPSHOT]
    } else if path.starts_with("/remove") {
        &[perm::REMOVE]
    } else if path.starts_with("/status")
        || path.starts_with("/nodes")
        || path == "/licenses"
        || path == "/debug/vars"
        || path == "/metrics"
        || path.starts_with("/debug/pprof")
    {
        &[perm::STATUS]
    } else if path == "/leader" {
        &[perm::LEADER_OPS]
    } else if path.starts_with("/readyz") {
        &[perm::READY]
    } else {
        return None;
    };
    Some(perms)
}

/// What a follower answers when the leader refused a request it passed on for want of
/// permission, in rqlite's words for each endpoint.
fn remote_refusal(path: &str) -> &'static str {
    if path.starts_with("/db/execute") {
        "remote Execute not authorized"
    } else if path.starts_with("/db/query") {
        "remote query not authorized"
    } else if path.starts_with("/db/request") {
        "remote Request not authorized"
    } else if path.starts_with("/db/backup") {
        "remote backup not authorized"
    } else if path.starts_with("/db/load") {
        "remote load not authorized"
    } else if path.starts_with("/remove") {
        "remote remove node not authorized"
    } else {
        "remote stepdown not authorized"
    }
}

/// A redirect to the console as Go's `http.Redirect` writes it when no content type was set:
/// a GET gets a short HTML body, a HEAD its content type only.
fn console_redirect(status: StatusCode, method: &Method) -> Response {
    const TO: &str = "/console/";
    let mut r = match *method {
        Method::GET => {
            let text = status.canonical_reason().unwrap_or_default();
            (status, format!("<a href=\"{TO}\">{text}</a>.\n\n")).into_response()
        }
        _ => empty(status),
    };
    if *method == Method::GET || *method == Method::HEAD {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(TO));
    r
}

fn redirect(status: StatusCode, to: &str) -> Response {
    let mut r = empty(status);
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The request's body, up to `limit` bytes (413 past that), and its content type.
async fn read_body(req: HttpRequest<Body>, limit: usize) -> Result<(Option<HeaderValue>, Bytes), Response> {
    let ct = req.headers().get(header::CONTENT_TYPE).cloned();
    match whole_body(req.into_body(), limit).await {
        Some(b) => Ok((ct, b)),
        None => Err(text_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")),
    }
}

/// A body's bytes, if it ends within `limit` bytes and arrives intact. A body that comes in
/// one piece, as most do, is passed on as it came, not copied.
async fn whole_body(mut body: Body, limit: usize) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        // Once a second piece came, `more` holds all of them.
        let had = match (&first, &more) {
            (_, Some(m)) => m.len(),
            (f, None) => f.as_ref().map_or(0, Bytes::len),
        };
        if had + data.len() > limit {
            return None;
        }
        match (&mut first, &mut more) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut m = BytesMut::with_capacity(f.len() + data.len());
                m.extend_from_slice(f);
                m.extend_from_slice(&data);
                more = Some(m);
            }
            (Some(_), Some(m)) => m.extend_from_slice(&data),
        }
    }
    Some(match (first, more) {
        (_, Some(m)) => m.freeze(),
        (f, None) => f.unwrap_or_default(),
    })
}

/// A `Content-Type` header's value, if it is text.
fn content_type(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

async fn statements_from(req: HttpRequest<Body>, limit: usize, allow_text: bool) -> Result<Vec<Statement>, Response> {
    let (ct, bytes) = read_body(req, limit).await?;
    body::parse(&bytes, content_type(ct.as_ref()), allow_text).map_err(|e| text_error(StatusCode::BAD_REQUEST, &e.0))
}

fn format_of(p: &Params) -> Format {
    Format {
        pretty: p.has("pretty"),
        associative: p.has("associative"),
        blob_array: p.has("blob_array"),
    }
}

fn sql_options(p: &Params) -> SqlOptions {
    SqlOptions {
        noparse: p.has("noparse"),
        no_rewrite_random: p.has("norwrandom"),
        no_rewrite_time: p.has("norwtime"),
    }
}

/// The read options of a request: its parameters, and the index it must see, from
/// `min_index=N` or the `X-RQLITE-MIN-INDEX` header (read-your-writes).
fn read_options(p: &Params, headers: &HeaderMap) -> Result<ReadOptions, String> {
    let given = p
        .get("min_index")
        .or_else(|| headers.get(X_RQLITE_MIN_INDEX).and_then(|v| v.to_str().ok()));
    let min_index = match given {
        None | Some("") => 0,
        Some(v) => v.trim().parse::<u64>().map_err(|_| format!("invalid min_index: {v}"))?,
    };
    Ok(ReadOptions {
        level: p.level(),
        freshness: p.freshness(),
        freshness_strict: p.has("freshness_strict"),
        linearizable_timeout: p.linearizable_timeout(),
        min_index,
        min_index_timeout: p.timeout(),
    })
}

fn request_of(statements: Vec<Statement>, p: &Params) -> Request {
    Request {
        transaction: p.has("transaction"),
        rollback_on_error: false,
        qualify_columns: p.has("qualify_columns"),
        db_timeout_ns: p.db_timeout().as_nanos() as u64,
        timings: p.has("timings"),
        statements,
    }
}

/// The response to a store error. Most are reported inside a 200 JSON envelope, as rqlite
/// does; a missing leader and a failed rewrite are HTTP errors. Nothing a client sends gets a
/// 5xx other than 503.
async fn store_error(svc: &Service, e: &StoreError, p: &Params) -> Response {
    match e {
        StoreError::NotLeader { leader: Some(l) } if p.has("redirect") => {
            // 301 to the same path and query on the leader's API.
            match svc.cluster.node_meta(&l.addr, p.timeout()).await {
                Ok((api_url, _)) => {
                    let mut to = format!("{api_url}{}", p.path());
                    if let Some(q) = p.raw_query() {
                        to.push('?');
                        to.push_str(q);
                    }
                    redirect(StatusCode::MOVED_PERMANENTLY, &to)
                }
                Err(_) => text_error(StatusCode::INTERNAL_SERVER_ERROR, "leader not found"),
            }
        }
        StoreError::NotLeader { .. } => {
            svc.stats.add("leader_not_found", 1);
            text_error(StatusCode::SERVICE_UNAVAILABLE, "leader not found")
        }
        // The leader refused what this node passed on with the client's credentials.
        StoreError::Unauthorized => text_error(StatusCode::UNAUTHORIZED, remote_refusal(p.path())),
        // A statement that cannot be made deterministic is the client's to change: 400 where
        // rqlite answers 500.
        StoreError::Rewrite(_) => text_error(StatusCode::BAD_REQUEST, &e.to_string()),
        _ => {
            let msg = e.to_string();
            let env = Envelope {
                error: Some(&msg),
                ..Default::default()
            };
            json_response(encode::envelope(&env, Shape::Execute, format_of(p)))
        }
    }
}

/// Names the node that served a request in X-RQLITE-SERVED-BY.
pub(crate) fn served_by(mut r: Response, by: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(by) {
        r.headers_mut().insert(X_RQLITE_SERVED_BY, v);
    }
    r
}

fn served_by_value(mut r: Response, by: Option<&HeaderValue>) -> Response {
    if let Some(v) = by {
        r.headers_mut().insert(X_RQLITE_SERVED_BY, v.clone());
    }
    r
}

fn respond(served: &Served, shape: Shape, p: &Params, started: Instant) -> Response {
    let out = &served.outcome;
    let env = Envelope {
        results: &out.results,
        time: if p.has("timings") {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        },
        raft_index: if p.has("raft_index") { out.raft_index } else { 0 },
        ..Default::default()
    };
    let mut r = served_by_value(
        json_response(encode::envelope(&env, shape, format_of(p))),
        served.by.as_ref(),
    );
    if out.raft_index != 0 {
        r.headers_mut()
            .insert(X_RQLITE_RAFT_INDEX, HeaderValue::from(out.raft_index));
    }
    r
}

async fn execute(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params) -> Response {
    if req.method() != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let started = Instant::now();
    if p.has("queue") {
        return queued(svc, req, p, started).await;
    }
    let statements = match statements_from(req, svc.cfg.max_body, true).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    svc.counters.execute_stmts_rx.add(statements.len() as i64);
    let f = Forward::Execute {
        request: request_of(statements, &p),
        sql: sql_options(&p),
    };
    match svc.run(f, &p).await {
        Ok(served) => respond(&served, Shape::Execute, &p, started),
        Err(e) => store_error(svc, &e, &p).await,
    }
}

async fn queued(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params, started: Instant) -> Response {
    svc.stats.add("queued_executions", 1);
    if !p.has("noleader") && !svc.store.leader_known() {
        svc.stats.add("leader_not_found", 1);
        return text_error(StatusCode::SERVICE_UNAVAILABLE, "leader not found");
    }
    let wait = p.has("wait");
    let (ct, bytes) = match read_body(req, svc.cfg.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // With `wait`, an empty body is a flush barrier.
    let statements = if wait && bytes.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        match body::parse(&bytes, content_type(ct.as_ref()), true) {
            Ok(s) => s,
            Err(e) => return text_error(StatusCode::BAD_REQUEST, &e.0),
        }
    };
    let mut req = request_of(statements, &p);
    // Queued writes are always parsed and rewritten, whatever `noparse` says.
    let opts = SqlOptions {
        noparse: false,
        ..sql_options(&p)
    };
    if let Err(e) = Store::prepare(&mut req, opts) {
        return store_error(svc, &e, &p).await;
    }
    svc.stats
        .add("queued_executions_num_stmts_rx", req.statements.len() as i64);
    let (seq, done) = svc.queue.enqueue(req.statements, wait).await;
    if let Some(done) = done {
        svc.stats.add("queued_executions_wait", 1);
        if tokio::time::timeout(p.timeout(), done).await.is_err() {
            svc.stats.add("queued_executions_wait_timeout", 1);
            return text_error(StatusCode::REQUEST_TIMEOUT, "queue wait timeout");
        }
    }
    let env = Envelope {
        sequence_number: seq,
        time: if p.has("timings") {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        },
        ..Default::default()
    };
    json_response(encode::envelope(&env, Shape::Execute, format_of(&p)))
}

async fn query(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params) -> Response {
    let started = Instant::now();
    let read = match read_options(&p, req.headers()) {
        Ok(r) => r,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    let statements = match *req.method() {
        Method::GET => vec![Statement::new(p.get("q").unwrap_or_default())],
        Method::POST => match statements_from(req, svc.cfg.max_body, true).await {
            Ok(s) => s,
            Err(r) => return r,
        },
        _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
    };
    svc.counters.query_stmts_rx.add(statements.len() as i64);
    let level = read.level;
    let f = Forward::Query {
        request: request_of(statements, &p),
        read,
        sql: sql_options(&p),
    };
    match svc.run(f, &p).await {
        Ok(served) => {
            svc.metrics.read(level, started.elapsed());
            respond(&served, Shape::Query, &p, started)
        }
        Err(e) => store_error(svc, &e, &p).await,
    }
}

async fn request(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params) -> Response {
    if req.method() != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let started = Instant::now();
    let read = match read_options(&p, req.headers()) {
        Ok(r) => r,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    let statements = match statements_from(req, svc.cfg.max_body, false).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    svc.counters.request_stmts_rx.add(statements.len() as i64);
    // The HTTP layer's `linearizable_timeout` is not read for /db/request (rqlite uses 1 s).
    let read = ReadOptions {
        linearizable_timeout: std::time::Duration::ZERO,
        ..read
    };
    let f = Forward::Request {
        request: request_of(statements, &p),
        read,
        sql: sql_options(&p),
    };
    match svc.run(f, &p).await {
        Ok(served) => {
            let shape = if served.outcome.raft_index == 0 {
                Shape::Query
            } else {
                Shape::Execute
            };
            respond(&served, shape, &p, started)
        }
        Err(e) => store_error(svc, &e, &p).await,
    }
}

async fn analyze(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params) -> Response {
    let started = Instant::now();
    let statements = match *req.method() {
        Method::GET => match p.get("q") {
            Some(q) => vec![Statement::new(q)],
            None => return text_error(StatusCode::BAD_REQUEST, "query not specified"),
        },
        Method::POST => match statements_from(req, svc.cfg.max_body, false).await {
            Ok(s) => s,
            Err(r) => return r,
        },
        _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
    };
    let opts = sql_options(&p);
    let items: Vec<encode::Analysis> = statements
        .into_iter()
        .map(|s| match Store::rewrite(&s.sql, opts) {
            Ok(rewritten) => encode::Analysis {
                rewritten: Some(rewritten.unwrap_or_else(|| s.sql.clone())),
                original: s.sql,
                error: None,
            },
            Err(e) => encode::Analysis {
                original: s.sql,
                rewritten: None,
                error: Some(e.to_string()),
            },
        })
        .collect();
    let time = if p.has("timings") {
        started.elapsed().as_secs_f64()
    } else {
        0.0
    };
    json_response(encode::analysis(&items, time, p.has("pretty")))
}

async fn snapshot(svc: &Arc<Service>, method: &Method, p: &Params) -> Response {
    if method != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let trailing = p.int("trailing_logs").filter(|n| *n > 0).map(|n| n as u64);
    match svc.store.snapshot(trailing).await {
        Ok(true) => empty(StatusCode::OK),
        Ok(false) => empty(StatusCode::NO_CONTENT),
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `/reap`: this node keeps a single full snapshot, so there are no older ones to fold in;
/// what it can do is checkpoint the WAL into the database file.
async fn reap(svc: &Arc<Service>, method: &Method) -> Response {
    if method != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let had_wal = svc.store.wal_size() > 0;
    let checkpointed = had_wal && svc.store.checkpoint().await;
    let body = format!(
        "{{\"snapshots_reaped\":0,\"wals_checkpointed\":{}}}\n",
        u8::from(checkpointed)
    );
    json_response(body.into_bytes())
}

/// `/db/load`: a SQLite file replaces the database on every node; anything else is a SQL dump,
/// run as one statement that stops and rolls back at its first error.
async fn load(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params) -> Response {
    let mut r = load_answer(svc, req, p).await;
    // rqlite writes these JSON answers without naming a content type, and Go's sniffing calls
    // them plain text.
    if r.headers().get(header::CONTENT_TYPE) == Some(&HeaderValue::from_static("application/json; charset=utf-8")) {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

async fn load_answer(svc: &Arc<Service>, req: HttpRequest<Body>, p: Params) -> Response {
    if req.method() != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let started = Instant::now();
    let file = match upload::to_temp_file(req.into_body(), &svc.store).await {
        Ok(f) => f,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    if file.is_sqlite() {
        // A file that claims to be SQLite but does not hold a sound database is the client's
        // error; rqlite's word for it is the one `/boot` uses.
        if Store::check_database_file(file.path()).await.is_err() {
            return text_error(StatusCode::BAD_REQUEST, "invalid SQLite data");
        }
        let loaded = match svc.store.load_file(file.path()).await {
            Err(StoreError::NotLeader { leader: Some(l) }) if !p.has("redirect") => {
                svc.store.stats().proxy.add("remote_loads", 1);
                svc.cluster
                    .load(&l.addr, file.path(), p.credentials(), p.timeout())
                    .await
                    .map(|()| l.addr)
            }
            other => other.map(|()| svc.cfg.adv_addr.clone()),
        };
        return match loaded {
            Ok(by) => {
                let env = Envelope::default();
                served_by(
                    json_response(encode::envelope(&env, Shape::Execute, format_of(&p))),
                    &by,
                )
            }
            Err(e @ (StoreError::NotLeader { .. } | StoreError::Unauthorized)) => store_error(svc, &e, &p).await,
            Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    let sql = match file.read_text(svc.cfg.max_body).await {
        Ok(s) => s,
        Err(upload::TextError::TooLarge(e)) => return text_error(StatusCode::PAYLOAD_TOO_LARGE, &e),
        Err(upload::TextError::NotText(e)) => return text_error(StatusCode::BAD_REQUEST, &e),
        Err(upload::TextError::Io(e)) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let req = Request {
        rollback_on_error: true,
        timings: p.has("timings"),
        statements: vec![Statement::new(sql)],
        ..Default::default()
    };
    let opts = SqlOptions {
        noparse: true,
        ..Default::default()
    };
    match svc
        .run(
            Forward::Execute {
                request: req,
                sql: opts,
            },
            &p,
        )
        .await
    {
        Ok(served) => respond(&served, Shape::Execute, &p, started),
        Err(e) => store_error(svc, &e, &p).await,
    }
}

/// `/boot`: a single node takes a SQLite file as its database, bypassing the log.
async fn boot(svc: &Arc<Service>, req: HttpRequest<Body>) -> Response {
    if req.method() != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let file = match upload::to_temp_file(req.into_body(), &svc.store).await {
        Ok(f) => f,
        Err(e) => return text_error(StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    if !file.is_sqlite() {
        return text_error(StatusCode::BAD_REQUEST, "invalid SQLite data");
    }
    if Store::check_database_file(file.path()).await.is_err() {
        return text_error(StatusCode::BAD_REQUEST, "invalid SQLite data");
    }
    match svc.store.boot(file.path()).await {
        Ok(()) => empty(StatusCode::OK),
        Err(e) => text_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `/db/backup`: the database as a SQLite file (`fmt=binary`, the default, or `delete`) or as
/// SQL text (`fmt=sql`), optionally gzipped, streamed from a temporary copy.
async fn backup(svc: &Arc<Service>, method: &Method, p: &Params) -> Response {
    if method != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let format = match p.get("fmt") {
        Some("sql") => BackupFormat::Sql,
        Some("delete") => BackupFormat::Delete,
        _ => BackupFormat::Binary,
    };
    // rqlite answers 500 here; a request the client can correct is a 400.
    if p.has("vacuum") && format != BackupFormat::Binary {
        return text_error(StatusCode::BAD_REQUEST, "invalid backup format");
    }
    let opts = BackupOptions {
        format,
        vacuum: p.has("vacuum"),
        compress: p.has("compress"),
        tables: p
            .get("tables")
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let content_type = HeaderValue::from_static(if format == BackupFormat::Sql {
        "application/sql"
    } else {
        "application/octet-stream"
    });
    // No X-RQLITE-SERVED-BY here: rqlite names the server only after the body has gone out,
    // too late for the header to be sent.
    let body = if p.has("noleader") || svc.store.is_leader() {
        match svc.store.backup(opts).await {
            Ok(f) => Body::from_stream(file_stream(f)),
            Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    } else {
        match svc.store.leader() {
            Some(l) if !p.has("redirect") => {
                svc.store.stats().proxy.add("remote_backups", 1);
                match svc.cluster.backup(&l.addr, opts, p.credentials(), p.timeout()).await {
                    Ok(body) => body,
                    Err(e @ StoreError::Unauthorized) => return store_error(svc, &e, p).await,
                    Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            leader => {
                // The content type is set before the redirect, which keeps it.
                let mut r = store_error(svc, &StoreError::NotLeader { leader }, p).await;
                if !r.headers().contains_key(header::CONTENT_TYPE) {
                    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
                }
                return r;
            }
        }
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
    r
}

/// Reads a file in blocks, as a body stream; memory holds one block at a time.
fn file_stream(file: std::fs::File) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    use tokio::io::AsyncReadExt;
    const BLOCK: usize = 256 * 1024;
    futures::stream::try_unfold(tokio::fs::File::from_std(file), |mut f| async move {
        let mut buf = vec![0u8; BLOCK];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), f)))
    })
}

/// `DELETE /remove` with exactly `{"id": "<node id>"}`: takes a node out of the cluster.
async fn remove(svc: &Arc<Service>, req: HttpRequest<Body>, p: &Params) -> Response {
    if req.method() != Method::DELETE {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let (_, bytes) = match read_body(req, svc.cfg.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // rqlite answers a body that is not exactly `{"id": "..."}` with a bare 400.
    let id = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(m)) if m.len() == 1 => match m.get("id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            _ => return empty(StatusCode::BAD_REQUEST),
        },
        _ => return empty(StatusCode::BAD_REQUEST),
    };
    // Removing a node that is not a member changes nothing, and rqlite's Raft accepts it.
    if !svc.store.nodes().iter().any(|(n, _)| n.id == id) {
        return served_by(empty(StatusCode::OK), &svc.cfg.adv_addr);
    }
    let removed = match svc.store.remove(&id).await {
        Err(StoreError::NotLeader { leader: Some(l) }) if !p.has("redirect") => {
            svc.store.stats().proxy.add("remote_remove_node", 1);
            svc.cluster
                .remove(&l.addr, &id, p.credentials(), p.timeout())
                .await
                .map(|()| l.addr)
        }
        other => other.map(|()| svc.cfg.adv_addr.clone()),
    };
    match removed {
        Ok(by) => served_by(empty(StatusCode::OK), &by),
        Err(e @ (StoreError::NotLeader { .. } | StoreError::Unauthorized)) => store_error(svc, &e, p).await,
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_pieces(pieces: &[&'static str]) -> Body {
        let frames: Vec<Result<Bytes, Infallible>> =
            pieces.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect();
        Body::from_stream(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_is_gathered_up_to_its_limit() {
        let one = Bytes::from_static(b"[\"SELECT 1\"]");
        let got = whole_body(Body::from(one.clone()), 64).await.unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr(), "one piece is passed on, not copied");
        assert_eq!(whole_body(in_pieces(&["ab", "", "cd", "e"]), 5).await.unwrap(), "abcde");
        assert_eq!(whole_body(in_pieces(&["ab", "cd", "e"]), 4).await, None);
        assert_eq!(whole_body(in_pieces(&["abcde"]), 4).await, None);
        assert_eq!(whole_body(Body::empty(), 0).await.unwrap(), "");
    }
}
