//! Node endpoints: `/status`, `/nodes`, `/leader`, `/readyz` and `/debug/vars`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use rq_proto::gofmt::{duration_string, rfc3339};
use rq_proto::json::{indent, write_f64, write_str, write_value};
use serde_json::{Value, json};

use crate::params::Params;
use crate::{Service, empty, json_response, served_by, text_error};

/// Other expvar maps rqlite publishes; this node reports them with every key at zero where
/// the feature they count is not in use.
const IDLE_MAPS: &[(&str, &[&str])] = &[
    (
        "db.wal",
        &[
            "compact_frames_input",
            "compact_frames_output",
            "compact_frames_ratio",
            "compact_scan_duration_ms",
            "compact_scan_errors",
            "compact_write_duration_ms",
        ],
    ),
    (
        "mux",
        &[
            "num_connections_handled",
            "num_tls_cert_fetched",
            "num_unregistered_handlers",
        ],
    ),
    (
        "proto",
        &[
            "num_compressed_bytes",
            "num_compressed_requests",
            "num_compression_misses",
            "num_precompressed_bytes",
            "num_requests",
            "num_uncompressed_bytes",
            "num_uncompressed_requests",
        ],
    ),
    ("snapshot.plan", &["calc_crc32_duration_ms", "checkpoint_duration_ms"]),
    ("sql.processor", &["num_parser_panics", "num_rewritten_stmts"]),
];

fn write_json(v: &Value, pretty: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, v, true);
    if pretty { indent(&out) } else { out }
}

/// A value from `/proc/self/status`, in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn parent_pid() -> u32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            after.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `?key=a.b.c`: the subtree at that path; `{}` if a step is missing; a non-object reached
/// early is returned as it is.
fn subtree(v: &Value, key: &str) -> Value {
    let mut cur = v;
    for part in key.split('.') {
        match cur {
            Value::Object(m) => match m.get(part) {
                Some(next) => cur = next,
                None => return json!({}),
            },
            other => return other.clone(),
        }
    }
    cur.clone()
}

impl Service {
    fn status_document(&self) -> Value {
        let cfg = &self.cfg;
        let uptime = self.started.elapsed().unwrap_or_default();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut doc = json!({
            "build": {
                "build_time": cfg.build.build_time,
                "commit": cfg.build.commit,
                "compiler_command": "cargo",
                "compiler_toolchain": "rustc",
                "version": cfg.build.version,
            },
            "cluster": {
                "addr": self.store.config().raft_addr,
                "api_addr": cfg.adv_addr,
                "https": cfg.https.to_string(),
            },
            "extensions": {
                "dir": self.store.config().data_dir.join("extensions").display().to_string(),
                "names": extension_names(&self.store.config().data_dir.join("extensions")),
            },
            "http": {
                "auth": if cfg.auth.is_some() { "enabled" } else { "disabled" },
                "bind_addr": cfg.bind_addr,
                "cluster": {
                    "local_node_addr": self.store.config().raft_addr,
                    "timeout": "30s",
                },
                "queue": {
                    "_default": {
                        "batch_size": cfg.queue.batch_size,
                        "max_size": cfg.queue.capacity,
                        "sequence_number": self.queue.written(),
                        "timeout": duration_string(cfg.queue.timeout),
                    }
                },
                "tls": {"enabled": "false"},
            },
            "node": {
                "current_time": rfc3339(SystemTime::now()),
                "start_time": rfc3339(self.started),
                "uptime": duration_string(uptime),
            },
            "os": {
                "executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
                "hostname": hostname(),
                "page_size": 4096,
                "pid": std::process::id(),
                "ppid": parent_pid(),
            },
            "runtime": {
                "GOARCH": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
                "GOMAXPROCS": threads,
                "GOOS": std::env::consts::OS,
                "kubernetes_hint": std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
                "num_cpu": threads,
                "num_goroutine": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
                "version": "rust",
            },
            "store": self.store.status(),
        });
        let sections = self.sections.read().unwrap_or_else(|e| e.into_inner());
        for (name, section) in sections.iter() {
            doc[name.as_str()] = section();
        }
        doc
    }

    /// Probes one member: itself in process, others over the node-to-node API.
    async fn probe(&self, id: &str, addr: &str, voter: bool, leader_addr: Option<&str>, timeout: Duration) -> Value {
        let started = Instant::now();
        let meta = if addr == self.store.config().raft_addr {
            Ok((self.api_url(), self.cfg.build.version.clone()))
        } else {
            self.cluster.node_meta(addr, timeout).await
        };
        let elapsed = started.elapsed();
        match meta {
            Ok((api_url, version)) => json!({
                "id": id,
                "api_addr": api_url,
                "addr": addr,
                "version": version,
                "voter": voter,
                "reachable": true,
                "leader": leader_addr == Some(addr),
                "time": elapsed.as_secs_f64(),
                "time_s": duration_string(elapsed),
            }),
            Err(e) => json!({
                "id": id,
                "addr": addr,
                "version": "",
                "voter": voter,
                "reachable": false,
                "leader": false,
                "error": e,
            }),
        }
    }
}

/// The extension files every connection loads (`-extensions-path`), sorted, as rqlite lists
/// them: the regular files of the directory whose names do not start with a dot.
fn extension_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Writes a node object with rqlite's field order (a struct, not a map).
fn write_node(out: &mut Vec<u8>, n: &Value) {
    out.push(b'{');
    let mut first = true;
    for k in [
        "id",
        "api_addr",
        "addr",
        "version",
        "voter",
        "reachable",
        "leader",
        "time",
        "time_s",
        "error",
    ] {
        let Some(v) = n.get(k) else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, k, true);
        out.push(b':');
        match v {
            Value::Number(x) if k == "time" => write_f64(out, x.as_f64().unwrap_or(0.0)),
            other => write_value(out, other, true),
        }
    }
    out.push(b'}');
}

pub(crate) fn status(svc: &Arc<Service>, method: &Method, p: &Params) -> Response {
    if method != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let doc = svc.status_document();
    match p.get("key").filter(|k| !k.is_empty()) {
        Some(key) => json_response(write_json(&subtree(&doc, key), false)),
        None => json_response(write_json(&doc, p.has("pretty"))),
    }
}

pub(crate) async fn nodes(svc: &Arc<Service>, method: &Method, p: &Params) -> Response {
    if method != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let leader = svc.store.leader().map(|l| l.addr);
    let timeout = p.timeout();
    let members: Vec<_> = svc
        .store
        .nodes()
        .into_iter()
        .filter(|(_, voter)| *voter || p.has("nonvoters"))
        .collect();
    let probes = members
        .iter()
        .map(|(n, voter)| svc.probe(&n.id, &n.addr, *voter, leader.as_deref(), timeout));
    let results = futures::future::join_all(probes).await;
    let mut out = Vec::new();
    if p.get("ver") == Some("2") {
        out.extend_from_slice(b"{\"nodes\":[");
        for (i, n) in results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_node(&mut out, n);
        }
        out.extend_from_slice(b"]}");
    } else {
        out.push(b'{');
        for (i, ((m, _), n)) in members.iter().zip(&results).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, &m.id, true);
            out.push(b':');
            write_node(&mut out, n);
        }
        out.push(b'}');
    }
    json_response(if p.has("pretty") { indent(&out) } else { out })
}

pub(crate) async fn leader(svc: &Arc<Service>, req: axum::http::Request<axum::body::Body>, p: &Params) -> Response {
    let method = req.method().clone();
    match method {
        Method::GET => {
            let Some(l) = svc.store.leader() else {
                return text_error(StatusCode::SERVICE_UNAVAILABLE, "leader not found");
            };
            let node = svc.probe(&l.id, &l.addr, true, Some(&l.addr), p.timeout()).await;
            let mut out = Vec::new();
            write_node(&mut out, &node);
            json_response(if p.has("pretty") { indent(&out) } else { out })
        }
        Method::POST => stepdown(svc, req, p).await,
        _ => empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// `POST /leader`: the leader hands leadership to `{"id": ...}` or to the best-placed voter.
async fn stepdown(svc: &Arc<Service>, req: axum::http::Request<axum::body::Body>, p: &Params) -> Response {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return text_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let mut to = None;
    if is_json && !bytes.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => to = v.get("id").and_then(|i| i.as_str()).map(str::to_string),
            Err(e) => return text_error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
        }
    }
    // A target that is not a voter, or already leads, is the client's error: checked here
    // against this node's view of the cluster, so the answer is a 400 wherever it is asked.
    if let Some(id) = &to {
        if svc.store.leader().is_some_and(|l| &l.id == id) {
            return text_error(
                StatusCode::BAD_REQUEST,
                "stepdown: cannot step down to the current Leader",
            );
        }
        if !svc.store.nodes().iter().any(|(n, voter)| *voter && &n.id == id) {
            return text_error(StatusCode::BAD_REQUEST, "stepdown: node not found in cluster");
        }
    }
    let wait = p.has("wait");
    let result = if svc.store.is_leader() {
        let by = svc.cfg.adv_addr.clone();
        svc.cluster
            .stepdown(None, to, wait, p.credentials(), p.timeout())
            .await
            .map(|()| by)
    } else {
        match svc.store.leader() {
            Some(l) if p.has("redirect") => {
                return crate::store_error(svc, &rq_store::StoreError::NotLeader { leader: Some(l) }, p).await;
            }
            Some(l) => svc
                .cluster
                .stepdown(Some(&l.addr), to, wait, p.credentials(), p.timeout())
                .await
                .map(|()| l.addr),
            None => return text_error(StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
        }
    };
    match result {
        Ok(by) => served_by(empty(StatusCode::OK), &by),
        Err(rq_store::StoreError::NotLeader { .. }) => text_error(StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
        Err(rq_store::StoreError::Unauthorized) => {
            text_error(StatusCode::UNAUTHORIZED, "remote stepdown not authorized")
        }
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) async fn readyz(svc: &Arc<Service>, method: &Method, p: &Params) -> Response {
    if method != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    // Room for every line of a ready answer, so it is allocated once.
    let mut body = String::with_capacity(64);
    body.push_str("[+]node ok");
    if p.has("noleader") {
        return plain(StatusCode::OK, body);
    }
    // The leader is contacted unless it is this node (known without copying its details).
    if !svc.store.is_leader() {
        let Some(leader) = svc.store.leader() else {
            body.push_str("\n[+]leader does not exist");
            return plain(StatusCode::SERVICE_UNAVAILABLE, body);
        };
        if leader.addr != svc.store.config().raft_addr
            && let Err(e) = svc.cluster.node_meta(&leader.addr, p.timeout()).await
        {
            body.push_str(&format!("\n[+]leader not contactable: {e}"));
            return plain(StatusCode::SERVICE_UNAVAILABLE, body);
        }
    }
    body.push_str("\n[+]leader ok");
    if !svc.store.is_ready() {
        body.push_str("\n[+]store not ready");
        return plain(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    body.push_str("\n[+]store ok");
    if p.has("sync") {
        let target = svc.store.commit_index();
        if let Err(e) = svc.store.wait_applied(target, p.timeout()).await {
            body.push_str(&format!("\n[+]sync {e}"));
            return plain(StatusCode::SERVICE_UNAVAILABLE, body);
        }
        body.push_str("\n[+]sync ok");
    }
    match svc.store.probe_db(p.timeout()).await {
        Ok(()) => {
            body.push_str("\n[+]db ok");
            plain(StatusCode::OK, body)
        }
        Err(e) => {
            body.push_str(&format!("\n[+]db not ok: ({e})"));
            plain(StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }
}

/// Go's `expvar.Map.String()`: one line, keys sorted, `": "` and `", "` separators.
fn expvar_map(entries: &[(&str, i64)]) -> String {
    let inner: Vec<String> = entries.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Every expvar map of integers: its name and its keys with their values.
pub(crate) fn expvar_maps(svc: &Arc<Service>) -> Vec<(String, Vec<(&'static str, i64)>)> {
    let stats = svc.store.stats();
    let mut maps: Vec<(String, Vec<(&'static str, i64)>)> = vec![
        ("db".into(), stats.db.entries()),
        ("http".into(), svc.stats.entries()),
        ("queue".into(), stats.queue.entries()),
        ("store".into(), stats.store.entries()),
        ("cluster".into(), stats.cluster.entries()),
        ("proxy".into(), stats.proxy.entries()),
        ("uploader".into(), stats.uploader.entries()),
        ("downloader".into(), stats.downloader.entries()),
        ("cdc.service".into(), stats.cdc.entries()),
        ("snapshot".into(), stats.snapshot.entries()),
    ];
    for (name, keys) in IDLE_MAPS {
        maps.push((name.to_string(), keys.iter().map(|k| (*k, 0)).collect()));
    }
    maps
}

pub(crate) fn expvar(svc: &Arc<Service>, p: &Params) -> Response {
    let mut vars: Vec<(String, String)> = expvar_maps(svc)
        .into_iter()
        .map(|(name, entries)| (name, expvar_map(&entries)))
        .collect();
    let mut cmdline = Vec::new();
    write_value(&mut cmdline, &json!(svc.cfg.cmdline), true);
    vars.push(("cmdline".into(), String::from_utf8_lossy(&cmdline).into_owned()));
    let rss = proc_status_bytes("VmRSS:");
    let memstats = json!({
        "Alloc": rss,
        "HeapAlloc": rss,
        "Sys": proc_status_bytes("VmSize:"),
        "HeapSys": rss,
    });
    let mut mem = Vec::new();
    write_value(&mut mem, &memstats, true);
    vars.push(("memstats".into(), String::from_utf8_lossy(&mem).into_owned()));
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let key = p.get("key").filter(|k| !k.is_empty());
    let body: Vec<String> = vars
        .into_iter()
        .filter(|(name, _)| key.is_none_or(|k| k == name))
        .map(|(name, v)| format!("\"{name}\": {v}"))
        .collect();
    json_response(format!("{{\n{}\n}}\n", body.join(",\n")).into_bytes())
}
