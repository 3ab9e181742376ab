//! `rqlited`: reads the command line, opens the store, and serves the public API and the
//! node-to-node API until it is told to stop. Wiring only; the work is in the libraries.

mod extensions;
mod flags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use flags::{FlagError, Flags};
use futures::future::BoxFuture;
use rq_auto::{BackupConfig, RestoreConfig, Uploader};
use rq_cdc::{CdcConfig, CdcService};
use rq_cluster::bootstrap::{self, JoinPlan};
use rq_cluster::disco::Disco;
use rq_http::{BuildInfo, HttpConfig, QueueConfig, Service};
use rq_proto::auth::Credentials;
use rq_store::{BackupOptions, Forward, Outcome, Store, StoreConfig, StoreError};
use tokio::net::TcpListener;

/// Connections open at once on the HTTP API, and on the node-to-node port.
const MAX_HTTP_CONNECTIONS: usize = 4096;
const MAX_NODE_CONNECTIONS: usize = 1024;
/// Longest a client may take to send a request's headers, or stay idle between two requests
/// on one connection, on either port.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The API this build is compatible with, and its own version.
const VERSION: &str = concat!("v10.3.0+rs.", env!("CARGO_PKG_VERSION"));

const LOGO: &str = r"
            _ _ _
           | (_) |
  _ __ __ _| |_| |_ ___
 | '__/ _  | | | __/ _ \   The lightweight, fault-tolerant,
 | | | (_| | | | ||  __/   relational database.
 |_|  \__, |_|_|\__\___|
         | |               www.rqlite.io
         |_|

";

fn version_line() -> String {
    format!(
        "rqlited {VERSION} {} {} rust sqlite{} (commit unknown, compiler rustc)",
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        },
        rq_store::sqlite_version()
    )
}

/// Async worker threads: one fewer than the cores, at least one (`TOKIO_WORKER_THREADS`
/// overrides). The threads that block (the SQLite writer, the log's background flush, long reads
/// and copies) keep a core of their own, and each worker fewer is a hand-off fewer: a request
/// whose tasks run on two workers pays a wake-up of the other (an eventfd write and a futex)
/// at each step. Measured on 2 cores against 2 workers (see ARCHITECTURE.md, "Runtime").
fn async_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let flags = match Flags::parse(&args[1..]) {
        Ok(f) => f,
        Err(FlagError::Help) => {
            eprint!("{}", flags::usage());
            return ExitCode::SUCCESS;
        }
        Err(FlagError::Usage(msg)) => {
            eprintln!("{msg}");
            eprint!("{}", flags::usage());
            return ExitCode::from(2);
        }
        Err(FlagError::Fatal(msg)) => {
            eprintln!("fatal: {msg}");
            return ExitCode::from(1);
        }
    };
    if flags.bool("version") {
        eprintln!("{}", version_line());
        return ExitCode::SUCCESS;
    }
    init_logging(&flags.string("raft-log-level"));
    // Crash tests name failpoints in FAILPOINTS; one that fires ends the process at once,
    // as kill -9 would. Without the variable none is configured and they cost a map lookup.
    let _failpoints = fail::FailScenario::setup();
    abort_on_failpoint_panic();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(async_workers());
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fatal: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(flags, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fatal: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A failpoint configured to panic stands for a crash at that point: abort the process, so
/// nothing after it (unwinding, other tasks) runs.
fn abort_on_failpoint_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failpoint") {
            eprintln!("{msg}: aborting");
            std::process::abort();
        }
        default(info);
    }));
}

fn init_logging(raft_level: &str) {
    let raft = match raft_level.to_ascii_uppercase().as_str() {
        "ERROR" => "error",
        "INFO" => "info",
        "DEBUG" => "debug",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,openraft={raft}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Checks an advertised address: `host:port`, no scheme, not an unspecified IP.
fn check_adv(flag: &str, addr: &str) -> anyhow::Result<()> {
    if addr.contains("://") {
        bail!("-{flag} ({addr}) must not include a scheme");
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("-{flag} ({addr}) must be host:port"))?;
    if port.parse::<u16>().is_err() {
        bail!("-{flag} ({addr}) has an invalid port");
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>()
        && ip.is_unspecified()
    {
        bail!("advertised address {addr} is not routable: set -{flag}");
    }
    Ok(())
}

async fn bind(flag: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on -{flag} {addr}"))
}

async fn run(flags: Flags, args: Vec<String>) -> anyhow::Result<()> {
    print!("{LOGO}");
    for name in flags.unimplemented() {
        eprintln!("warning: -{name} is not implemented by this build yet and has no effect");
    }
    rq_net::idle_poll::start(
        flags.duration("idle-poll-time"),
        tokio::runtime::Handle::current().metrics().num_workers(),
    );
    let http_addr = flags.string("http-addr");
    let raft_addr = flags.string("raft-addr");
    if http_addr == raft_addr && !http_addr.ends_with(":0") {
        bail!("HTTP and Raft addresses must differ");
    }
    let http_listener = bind("http-addr", &http_addr).await?;
    let raft_listener = bind("raft-addr", &raft_addr).await?;
    let bound_http: SocketAddr = http_listener.local_addr()?;
    let bound_raft: SocketAddr = raft_listener.local_addr()?;
    // With port 0 the kernel picks the port; what is advertised by default is what was bound.
    let http_adv = non_empty(flags.string("http-adv-addr")).unwrap_or_else(|| default_adv(&http_addr, bound_http));
    let raft_adv = non_empty(flags.string("raft-adv-addr")).unwrap_or_else(|| default_adv(&raft_addr, bound_raft));
    check_adv("http-adv-addr", &http_adv)?;
    check_adv("raft-adv-addr", &raft_adv)?;
    let node_id = non_empty(flags.string("node-id")).unwrap_or_else(|| raft_adv.clone());
    let data_dir = absolute(&flags.data_dir)?;
    let join = non_empty(flags.string("join"));
    tracing::info!(http = %bound_http, raft = %bound_raft, "listening");

    let cdc = match non_empty(flags.string("cdc-config")) {
        None => None,
        Some(arg) => {
            let cfg = CdcConfig::parse(&arg)
                .map_err(|e| anyhow!("failed to create CDC Service: failed to create CDC config: {e}"))?;
            cfg.check_endpoint()
                .map_err(|e| anyhow!("failed to create CDC Service: failed to create CDC Service: {e}"))?;
            Some(cfg)
        }
    };
    // A directory rqlite wrote is converted into this node's layout before anything else in it
    // is touched.
    let rqlite_upgrades = {
        let (dir, remove) = (data_dir.clone(), flags.bool("remove-rqlite-backup"));
        tokio::task::spawn_blocking(move || rq_store::open_rqlite_data(&dir, remove)).await??
    };
    // Extensions go into the data directory and are checked before anything opens a database.
    let ext_paths: Vec<String> = flags
        .string("extensions-path")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let ext_files = extensions::gather(&ext_paths, &data_dir.join("extensions"))?;
    if !ext_files.is_empty() {
        rq_db::conn::set_extensions(ext_files).map_err(|e| anyhow!(e))?;
    }
    let heartbeat = if flags.is_set("raft-heartbeat-timeout") {
        flags.duration("raft-heartbeat-timeout")
    } else {
        flags.duration("raft-timeout")
    };
    // The metrics recorder is installed before the store opens, so that the store's first
    // records reach it; OTLP starts before it, and the recorder feeds it too.
    let otlp = match otlp_config(&flags, &node_id) {
        Some(cfg) => {
            Some(rq_otlp::Otlp::start(cfg).map_err(|e| anyhow!("failed to start OTLP metrics reporting: {e}"))?)
        }
        None => None,
    };
    let prometheus = install_metrics_recorder(otlp.as_ref())?;
    let cfg = StoreConfig {
        data_dir,
        node_id,
        raft_addr: raft_adv.clone(),
        foreign_keys: flags.bool("fk"),
        max_read_conns: flags.int("db-max-ro-conns").max(0) as usize,
        snapshot_threshold: flags.int("raft-snap").max(0) as u64,
        snapshot_interval: flags.duration("raft-snap-int"),
        wal_checkpoint_size: flags.int("raft-snap-wal-size").max(0) as u64,
        heartbeat_timeout: heartbeat,
        election_timeout: flags.duration("raft-election-timeout"),
        apply_timeout: flags.duration("raft-apply-timeout"),
        non_voter: flags.bool("raft-non-voter"),
        raft_log_level: flags.string("raft-log-level"),
        reap_timeout: flags.duration("raft-reap-node-timeout"),
        reap_read_only_timeout: flags.duration("raft-reap-read-only-node-timeout"),
        cdc: cdc.as_ref().map(rq_cdc::capture),
        rqlite_upgrades,
        read_lease: flags.bool("raft-read-lease"),
    };
    let tls = Tls::from_flags(&flags)?;
    let auth = match non_empty(flags.string("auth")) {
        Some(path) => {
            let bytes = std::fs::read(&path).with_context(|| format!("failed to load credential store {path}"))?;
            let store = rq_proto::auth::CredentialStore::parse(&bytes)
                .map_err(|e| anyhow!("failed to load credential store {path}: {e}"))?;
            Some(Arc::new(store))
        }
        None => None,
    };
    // `-join-as`: joins, notifications and the removal at shutdown carry this user's
    // credentials from the auth file; a user not in it (or no file) joins anonymously.
    let join_as =
        non_empty(flags.string("join-as")).and_then(|user| auth.as_ref().and_then(|a| a.credentials_for(&user)));
    let network = rq_cluster::Network::new(tls.node_client.clone()).context("cannot create node-to-node client")?;
    // A node with -join (or -bootstrap-expect) becomes part of a cluster formed with others;
    // only a node on its own bootstraps itself.
    let expect = flags.int("bootstrap-expect").max(0) as usize;
    let non_voter = cfg.non_voter;
    let disco = disco_from_flags(&flags, bound_raft.port())?;
    let bootstrap = join.is_none() && expect == 0 && disco.is_none();
    let auto_backup = match non_empty(flags.string("auto-backup")) {
        None => None,
        Some(path) => {
            let text =
                rq_auto::config::read_file(&path).map_err(|e| anyhow!("failed to read auto-backup file: {e}"))?;
            Some(BackupConfig::parse(&text).map_err(|e| anyhow!("failed to parse auto-backup file: {e}"))?)
        }
    };
    tracing::info!(version = VERSION, sqlite = rq_store::sqlite_version(), launch = %args.join(" "), "rqlited starting");
    // Set before the store opens, so that a node that starts as leader watches its first
    // connections too.
    let hung_up: Arc<std::sync::OnceLock<Store>> = Arc::default();
    {
        let hung_up = hung_up.clone();
        network.on_hangup(move |target| {
            if let Some(store) = hung_up.get() {
                store.peer_hung_up(target);
            }
        });
    }
    // Opened without bootstrapping: whether the node is new decides the automatic restore.
    let store = Store::open(cfg, network.clone(), false)
        .await
        .map_err(|e| anyhow!("cannot open store: {e}"))?;
    network.report_to(store.stats().clone());
    let _ = hung_up.set(store.clone());
    if let Some(path) = non_empty(flags.string("auto-restore")) {
        auto_restore(&store, &path).await?;
    }
    if bootstrap {
        store
            .bootstrap_alone()
            .await
            .map_err(|e| anyhow!("failed to bootstrap single new node: {e}"))?;
    }
    let uploader = match auto_backup {
        None => None,
        Some(cfg) => Some(Uploader::new(store.clone(), cfg).map_err(|e| anyhow!("failed to start auto-backups: {e}"))?),
    };
    if non_voter && join.is_none() && disco.is_none() && !store.is_initialized().await {
        store.shutdown().await;
        bail!("a new read-only node needs -join to find its cluster");
    }
    if join.is_some() && store.is_initialized().await && store.is_sole_member() {
        store.shutdown().await;
        bail!("node is the only node in a single-node cluster, joining other clusters not supported");
    }

    tokio::spawn(rq_cluster::reaper::run(
        store.clone(),
        network.clone(),
        rq_cluster::reaper::ReapTimeouts {
            voter: store.config().reap_timeout,
            non_voter: store.config().reap_read_only_timeout,
        },
    ));

    let scheme = if tls.http.is_some() { "https" } else { "http" };
    let api_url = format!("{scheme}://{http_adv}");
    let node_router = rq_cluster::router(
        store.clone(),
        network.clone(),
        api_url.clone(),
        VERSION.to_string(),
        auth.clone(),
    );
    let node_opts = rq_net::ServeOptions {
        tls: tls.node_server.clone(),
        max_connections: MAX_NODE_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        port: "raft",
    };
    tokio::spawn(async move {
        if let Err(e) = rq_net::serve(raft_listener, node_router, node_opts, std::future::pending()).await {
            tracing::error!(error = %e, "node-to-node server stopped");
        }
    });

    let http_cfg = HttpConfig {
        bind_addr: bound_http.to_string(),
        adv_addr: http_adv,
        https: tls.http.is_some(),
        auth,
        max_body: usize::try_from(flags.int("http-max-body-size"))
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("-http-max-body-size must be a positive number of bytes"))?,
        allow_origin: non_empty(flags.string("http-allow-origin")),
        queue: QueueConfig {
            capacity: flags.int("write-queue-capacity").max(1) as usize,
            batch_size: flags.int("write-queue-batch-size").max(1) as usize,
            timeout: flags.duration("write-queue-timeout").max(Duration::from_millis(1)),
            transaction: flags.bool("write-queue-tx"),
        },
        build: BuildInfo {
            version: VERSION.to_string(),
            commit: "unknown".into(),
            build_time: "unknown".into(),
        },
        cmdline: args,
        prometheus: Some(prometheus),
    };
    // Linearizable reads are served here when this node follows, with the leader's read index.
    {
        let net = network.clone();
        store.set_read_index_source(Arc::new(
            move |addr: String, ask: rq_store::ReadIndexAsk, timeout: Duration| {
                let net = net.clone();
                Box::pin(async move { net.read_index(&addr, ask, timeout).await })
            },
        ));
    }
    // Leadership rounds ask the other voters for their saved votes.
    {
        let net = network.clone();
        store.set_vote_probe(Arc::new(move |addr: String, timeout: Duration| {
            let net = net.clone();
            Box::pin(async move { net.saved_vote(&addr, timeout).await })
        }));
    }
    let cluster = ClusterClient {
        net: network.clone(),
        store: store.clone(),
    };
    let service = Service::new(store.clone(), Arc::new(cluster), http_cfg);
    service.register_status("idle_poll", Arc::new(rq_net::idle_poll::status));
    let http_opts = rq_net::ServeOptions {
        tls: tls.http.clone(),
        max_connections: MAX_HTTP_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        port: "http",
    };
    if let Some(cfg) = cdc {
        let svc = CdcService::new(cfg, store.clone(), network.clone())
            .map_err(|e| anyhow!("failed to create CDC Service: failed to create CDC Service: {e}"))?;
        let status = svc.clone();
        service.register_status("cdc", Arc::new(move || status.status()));
        tokio::spawn(svc.run());
    }
    if let Some(u) = uploader {
        let status = u.clone();
        service.register_status("auto_backups", Arc::new(move || status.status()));
        tokio::spawn(u.run());
    }
    let otlp = otlp.map(Arc::new);
    if let Some(o) = &otlp {
        let (s1, s2) = (service.clone(), service.clone());
        o.observe(
            Arc::new(move || s1.expvar_maps()),
            rq_http::is_gauge,
            Arc::new(move || s2.gauges()),
        );
        let status = o.clone();
        service.register_status("otlp_metrics", Arc::new(move || status.status()));
    }
    let http = tokio::spawn(rq_net::serve(
        http_listener,
        service.clone().service(),
        http_opts,
        shutdown_signal(),
    ));

    // Joining needs the node-to-node API up (the leader calls back) and the HTTP API serving.
    // It runs beside the servers, so that a node still looking for its cluster stops when told.
    let plan = JoinPlan {
        targets: join
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        attempts: flags.int("join-attempts").max(1) as u32,
        interval: flags.duration("join-interval"),
        voter: !non_voter,
        expect,
        expect_timeout: flags.duration("bootstrap-expect-timeout"),
        credentials: join_as.clone(),
    };
    let had_state = store.is_initialized().await;
    let forming = async {
        match &disco {
            Some(Disco::Dns(lookup)) => {
                tracing::info!(mode = %flags.string("disco-mode"), "discovery: looking up the cluster's nodes");
                let l = lookup.clone();
                service.register_status("disco", Arc::new(move || l.status()));
                bootstrap::form(&store, &network, &plan, Some(lookup.as_ref())).await
            }
            Some(Disco::Kv(kv)) => {
                let me = rq_cluster::disco::kv::Leader {
                    id: store.node_id().to_string(),
                    api_addr: api_url.clone(),
                    addr: raft_adv.clone(),
                };
                let k = kv.clone();
                service.register_status("disco", Arc::new(move || k.status()));
                tokio::spawn(kv.clone().report(store.clone(), me.clone()));
                rq_cluster::disco::form_by_kv(&store, &network, &plan, kv, &me).await
            }
            None if expect > 0 => bootstrap::form(&store, &network, &plan, None).await,
            None if join.is_some() => bootstrap::join(&store, &network, &plan).await,
            None => Ok(()),
        }
    };
    let forming = async {
        match forming.await {
            Ok(()) => {}
            // A node with state is already a member; it serves whatever the join said.
            Err(e) if had_state => tracing::warn!(error = %e, "could not join the cluster"),
            Err(e) => return anyhow!("{e}"),
        }
        std::future::pending().await
    };

    tokio::select! {
        served = http => served?.context("HTTP server failed")?,
        e = forming => {
            store.shutdown().await;
            return Err(e);
        }
        e = store.fault() => {
            // Everything acknowledged is in the log; without a clean-stop record the next start
            // trusts the database as after a crash and replays the log's tail into it.
            tracing::error!(error = %e, "Raft stopped on a storage error; stopping the node");
            bail!("Raft stopped on a storage error: {e}");
        }
    }
    tracing::info!("shutting down");
    if flags.bool("raft-cluster-remove-shutdown") {
        remove_self(&store, &network, join_as.as_ref()).await;
    } else if flags.bool("raft-shutdown-stepdown") && store.is_leader() && store.nodes().len() > 1 {
        // Hand leadership over rather than leave the others to notice the silence.
        if let Err(e) = rq_cluster::transfer::transfer(&store, &network, None, Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "could not hand leadership over before stopping");
        }
    }
    store.shutdown().await;
    if let Some(o) = otlp {
        // The last values go out before the process ends.
        tokio::task::spawn_blocking(move || o.shutdown()).await?;
    }
    Ok(())
}

/// `-otlp-*`, once the flags have been checked; `None` without `-otlp-endpoint`.
fn otlp_config(flags: &Flags, node_id: &str) -> Option<rq_otlp::OtlpConfig> {
    let endpoint = non_empty(flags.string("otlp-endpoint"))?;
    let cert = non_empty(flags.string("otlp-cert"));
    let key = non_empty(flags.string("otlp-key"));
    Some(rq_otlp::OtlpConfig {
        endpoint,
        interval: flags.duration("otlp-interval"),
        insecure: flags.bool("otlp-insecure"),
        no_verify: flags.bool("otlp-no-verify"),
        ca_cert: non_empty(flags.string("otlp-ca-cert")).map(PathBuf::from),
        identity: cert.zip(key).map(|(c, k)| (PathBuf::from(c), PathBuf::from(k))),
        node_id: node_id.to_string(),
        version: VERSION.to_string(),
    })
}

/// TLS for the two ports, from the flags, as rqlite sets it up.
/// `-auto-restore`: on a node with no Raft state, downloads the file now and holds the node
/// not ready until the first leader has loaded it (or another node leads). A failed download
/// stops the node unless the configuration says `continue_on_failure`.
async fn auto_restore(store: &Store, path: &str) -> anyhow::Result<()> {
    if store.is_initialized().await {
        tracing::info!(dir = %store.config().data_dir.display(), "auto-restore requested, but data already exists; skipping");
        return Ok(());
    }
    tracing::info!("auto-restore requested, initiating download");
    let cfg = rq_auto::config::read_file(path)
        .map_err(|e| format!("failed to read auto-restore file: {e}"))
        .and_then(|text| RestoreConfig::parse(&text).map_err(|e| format!("failed to create storage client: {e}")));
    let (cfg, continue_on_failure) = match cfg {
        Ok(c) => {
            let cont = c.continue_on_failure;
            (Ok(c), cont)
        }
        Err(e) => (Err(e), false),
    };
    let downloaded = match cfg {
        Ok(cfg) => rq_auto::restore::download(store, &cfg).await,
        Err(e) => Err(e),
    };
    match downloaded {
        Ok(file) => {
            store.hold_ready();
            tokio::spawn(rq_auto::restore::install_at_first_leader(store.clone(), file));
            Ok(())
        }
        Err(e) if continue_on_failure => {
            tracing::warn!(error = %e, "failed to download auto-restore file, continuing with node startup anyway");
            Ok(())
        }
        Err(e) => {
            store.shutdown().await;
            bail!("failed to download auto-restore file: {e}")
        }
    }
}

/// `-disco-mode` with its `-disco-key` and `-disco-config`, if set; the flags were checked.
fn disco_from_flags(flags: &Flags, raft_port: u16) -> anyhow::Result<Option<Disco>> {
    let Some(mode) = non_empty(flags.string("disco-mode")) else {
        return Ok(None);
    };
    let mode = rq_cluster::disco::Mode::parse(&mode).ok_or_else(|| anyhow!("invalid disco mode {mode}"))?;
    let config = rq_cluster::disco::config_text(&flags.string("disco-config")).map_err(|e| anyhow!(e))?;
    let disco = Disco::new(mode, &flags.string("disco-key"), config.as_deref(), raft_port)
        .map_err(|e| anyhow!("failed to start discovery service: {e}"))?;
    Ok(Some(disco))
}

struct Tls {
    /// The HTTP API's server side (`-http-cert`, `-http-key`, `-http-ca-cert`,
    /// `-http-verify-client`, `-http-verify-common-name`).
    http: Option<Arc<rq_net::rustls::ServerConfig>>,
    /// The node-to-node port's server side (`-node-cert`, `-node-key`, with `-node-ca-cert`,
    /// `-node-verify-client` and `-node-verify-common-name` for client certificates).
    node_server: Option<Arc<rq_net::rustls::ServerConfig>>,
    /// Calls to other nodes: in TLS when `-node-cert` or `-node-ca-cert` is set, showing this
    /// node's certificate, verifying theirs against `-node-ca-cert` (or the system's roots)
    /// and `-node-verify-server-name`, unless `-node-no-verify`.
    node_client: Option<Arc<rq_net::rustls::ClientConfig>>,
}

impl Tls {
    fn from_flags(flags: &Flags) -> anyhow::Result<Tls> {
        let path = |name: &str| non_empty(flags.string(name)).map(PathBuf::from);
        let pair = |side: &str| {
            Some(rq_net::KeyPair {
                cert: path(&format!("{side}-cert"))?,
                key: path(&format!("{side}-key"))?,
            })
        };
        let server = |side: &str, alpn: Vec<Vec<u8>>| -> anyhow::Result<Option<Arc<rq_net::rustls::ServerConfig>>> {
            let Some(pair) = pair(side) else {
                return Ok(None);
            };
            let opts = rq_net::ServerOptions {
                pair,
                ca: path(&format!("{side}-ca-cert")),
                verify_client: flags.bool(&format!("{side}-verify-client")),
                verify_common_name: non_empty(flags.string(&format!("{side}-verify-common-name"))),
                alpn,
            };
            let config = rq_net::server_config(&opts).with_context(|| format!("-{side}-cert"))?;
            tracing::info!(
                cert = %opts.pair.cert.display(),
                mutual = opts.verify_client,
                common_name = opts.verify_common_name.as_deref().unwrap_or(""),
                "TLS enabled on the {} port",
                if side == "http" { "HTTP" } else { "node-to-node" }
            );
            Ok(Some(config))
        };
        let http = server("http", vec![b"h2".to_vec(), b"http/1.1".to_vec()])?;
        let node_server = server("node", Vec::new())?;
        let node_client = if pair("node").is_some() || path("node-ca-cert").is_some() {
            let opts = rq_net::ClientOptions {
                ca: path("node-ca-cert"),
                no_verify: flags.bool("node-no-verify"),
                server_name: non_empty(flags.string("node-verify-server-name")),
                pair: pair("node"),
            };
            Some(rq_net::client_config(&opts).context("node-to-node TLS client")?)
        } else {
            None
        };
        Ok(Tls {
            http,
            node_server,
            node_client,
        })
    }
}

/// `-raft-cluster-remove-shutdown`: asks the leader to take this node out of the cluster.
async fn remove_self(store: &Store, network: &rq_cluster::Network, creds: Option<&rq_proto::auth::Credentials>) {
    const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
    let id = store.node_id().to_string();
    let result = match store.leader() {
        Some(_) if store.is_leader() => tokio::time::timeout(REMOVE_TIMEOUT, store.remove(&id))
            .await
            .unwrap_or_else(|_| Err(StoreError::Timeout("timeout removing this node".into()))),
        Some(l) => network.remove(&l.addr, &id, creds, REMOVE_TIMEOUT).await,
        None => Err(StoreError::NotLeader { leader: None }),
    };
    match result {
        Ok(()) => tracing::info!("removed this node from the cluster"),
        Err(e) => tracing::warn!(error = %e, "could not remove this node from the cluster"),
    }
}

/// The bind address as given, unless its port was 0: then the address actually bound.
fn default_adv(given: &str, bound: SocketAddr) -> String {
    if given.ends_with(":0") {
        bound.to_string()
    } else {
        given.to_string()
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn absolute(dir: &str) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(dir);
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The HTTP layer's view of other nodes, over the node-to-node client.
struct ClusterClient {
    net: rq_cluster::Network,
    store: Store,
}

impl rq_http::Cluster for ClusterClient {
    fn node_meta<'a>(&'a self, addr: &'a str, timeout: Duration) -> BoxFuture<'a, Result<(String, String), String>> {
        Box::pin(async move { self.net.node_meta(addr, timeout).await.map(|m| (m.api_url, m.version)) })
    }

    fn forward<'a>(
        &'a self,
        addr: &'a str,
        request: Forward,
        creds: Option<&'a Credentials>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Outcome, StoreError>> {
        Box::pin(async move { self.net.forward(addr, &request, creds, timeout).await })
    }

    fn remove<'a>(
        &'a self,
        addr: &'a str,
        id: &'a str,
        creds: Option<&'a Credentials>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.net.remove(addr, id, creds, timeout).await })
    }

    fn backup<'a>(
        &'a self,
        addr: &'a str,
        opts: BackupOptions,
        creds: Option<&'a Credentials>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<axum::body::Body, StoreError>> {
        Box::pin(async move {
            let resp = self.net.backup(addr, &opts, creds, timeout).await?;
            Ok(axum::body::Body::from_stream(resp.bytes_stream()))
        })
    }

    fn stepdown<'a>(
        &'a self,
        leader: Option<&'a str>,
        to: Option<String>,
        wait: bool,
        creds: Option<&'a Credentials>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match leader {
                None => rq_cluster::transfer::stepdown(&self.store, &self.net, to, wait).await,
                Some(addr) => {
                    let req = rq_cluster::messages::StepdownRequest { id: to, wait };
                    self.net.stepdown(addr, &req, creds, timeout).await
                }
            }
        })
    }

    fn load<'a>(
        &'a self,
        addr: &'a str,
        path: &'a std::path::Path,
        creds: Option<&'a Credentials>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.net.load(addr, path, creds, timeout).await })
    }
}

/// Installs the process's metrics recorder: Prometheus', which `/metrics` renders, beside
/// OTLP's when it is on. Histogram samples recorded between scrapes are folded into their
/// buckets every second, so they stay bounded.
fn install_metrics_recorder(
    otlp: Option<&rq_otlp::Otlp>,
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use rq_store::metric::{COUNT_BUCKETS, ENTRY_REQUESTS, SECONDS_BUCKETS};
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(ENTRY_REQUESTS.into()), COUNT_BUCKETS)?
        .build_recorder();
    let handle = prometheus.handle();
    match otlp {
        None => metrics::set_global_recorder(prometheus)?,
        Some(o) => metrics::set_global_recorder(
            metrics_util::layers::FanoutBuilder::default()
                .add_recorder(prometheus)
                .add_recorder(o.recorder(SECONDS_BUCKETS, COUNT_BUCKETS))
                .build(),
        )
        .map_err(|e| anyhow!("{e}"))?,
    }
    rq_store::metric::describe();
    rq_http::describe_metrics();
    let h = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            h.run_upkeep();
        }
    });
    Ok(handle)
}
