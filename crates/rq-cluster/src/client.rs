//! The calling side of the node-to-node API: openraft's network and what nodes ask of each
//! other, over pooled connections (`conn.rs`); backups, loads and node metadata over reqwest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use rq_store::NodeInfo;
use rq_store::stats::Stats;
use rq_store::types::{TypeConfig, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::NodeMeta;
use crate::conn::{Conn, ConnError, Dialer, Idle};
use crate::hangup::Hangups;
use crate::messages::{JoinRequest, NotifyRequest, RemoveRequest, StepdownRequest};
use crate::paths;
use rq_proto::auth::Credentials;
use rq_store::{BackupOptions, Forward, Outcome, StoreError};

/// Joins follow at most this many "not leader" answers to the leader.
const MAX_REDIRECTS: usize = 10;

fn unreachable_error(addr: &str, e: &reqwest::Error) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(format!("timeout waiting for node {addr} to respond"))
    } else {
        StoreError::Internal(format!("node {addr} unreachable: {e}"))
    }
}

/// Longest a connection attempt to another node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When each node last answered a Raft RPC from this one, by Raft id.
type Contacts = Arc<Mutex<HashMap<u64, Instant>>>;

/// Told the Raft id of a node that closed a Raft connection.
type NodeHungUp = Arc<dyn Fn(u64) + Send + Sync>;

/// Creates connections to other nodes; one HTTP client (with its pool) is shared.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    /// Plain TCP, or TLS with the node's client configuration.
    dialer: Dialer,
    contacts: Contacts,
    /// Raft connections not in use, for openraft's short-lived clients.
    idle: Idle,
    /// Connections not in use for what nodes ask of each other outside Raft.
    service: Idle,
    /// Where `cluster.num_client_force_new_conn` is reported; the network is made before the
    /// store that holds the counters.
    stats: Arc<OnceLock<Arc<Stats>>>,
    /// Told the Raft id of a node that closed a Raft connection (`on_hangup`), and the set
    /// those connections are watched in, made with the first of them.
    on_hangup: Arc<OnceLock<NodeHungUp>>,
    hangups: Arc<OnceLock<Option<Hangups>>>,
}

impl Network {
    /// A network that calls other nodes in plain text, or, given a TLS client configuration
    /// (`-node-cert` and the rest), in TLS.
    pub fn new(tls: Option<Arc<rq_net::rustls::ClientConfig>>) -> Result<Network, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        let dialer = match tls {
            Some(config) => {
                builder = builder.tls_backend_preconfigured((*config).clone());
                Dialer::tls(config)
            }
            None => Dialer::default(),
        };
        Ok(Network {
            http: builder.build()?,
            dialer,
            contacts: Contacts::default(),
            idle: Idle::default(),
            service: Idle::default(),
            stats: Arc::default(),
            on_hangup: Arc::default(),
            hangups: Arc::default(),
        })
    }

    /// Calls `f` with its Raft id when a node closes a Raft connection from this one (it
    /// stopped, say), as soon as that happens rather than at the next request.
    pub fn on_hangup(&self, f: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.on_hangup.set(Arc::new(f));
    }

    /// Reports replaced service connections in `stats` from now on.
    pub fn report_to(&self, stats: Arc<Stats>) {
        let _ = self.stats.set(stats);
    }

    /// When the node with Raft id `target` last answered a Raft RPC from this node.
    pub fn last_contact(&self, target: u64) -> Option<Instant> {
        self.contacts.lock().unwrap().get(&target).copied()
    }

    /// POSTs a postcard body to another node and decodes its `Result<T, StoreError>`. Failing
    /// to reach it is an error too: the node at `addr` is not reachable.
    async fn call<Q: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Q,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let body = postcard::to_stdvec(req).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut conn = Conn::pooled(addr, CONNECT_TIMEOUT, self.dialer.clone(), self.service.clone());
        let authorization = creds.map(Credentials::header_value);
        let sent = conn
            .post_as(
                path,
                "application/octet-stream",
                authorization.as_deref(),
                body.into(),
                timeout,
            )
            .await;
        if let Some(stats) = self.stats.get()
            && conn.replaced() > 0
        {
            stats.cluster.add("num_client_force_new_conn", conn.replaced() as i64);
        }
        let (status, bytes) = sent.map_err(|e| match e {
            ConnError::Timeout(_) => StoreError::Timeout(format!("timeout waiting for node {addr} to respond")),
            e => StoreError::Internal(format!("node {addr} unreachable: {e}")),
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(StoreError::Internal(format!("{addr}: {status}: {text}")));
        }
        postcard::from_bytes::<Result<T, StoreError>>(&bytes).map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Asks the node at `addr` to add this node; follows it to the leader if it is not one.
    /// `creds` are `-join-as`'s, if any.
    pub async fn join(
        &self,
        addr: &str,
        req: &JoinRequest,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let mut target = addr.to_string();
        for _ in 0..MAX_REDIRECTS {
            match self.call::<_, ()>(&target, paths::JOIN, req, creds, timeout).await {
                Err(StoreError::NotLeader { leader: Some(l) }) if l.addr != target => target = l.addr,
                other => return other,
            }
        }
        Err(StoreError::Internal("too many redirects while joining".into()))
    }

    pub async fn notify(
        &self,
        addr: &str,
        req: &NotifyRequest,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.call(addr, paths::NOTIFY, req, creds, timeout).await
    }

    /// Tells the node at `addr` the change data capture high-water mark.
    pub async fn send_cdc_hwm(&self, addr: &str, hwm: u64, timeout: Duration) -> Result<(), StoreError> {
        self.call(addr, paths::CDC_HWM, &hwm, None, timeout).await
    }

    pub async fn remove(
        &self,
        addr: &str,
        id: &str,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let req = RemoveRequest { id: id.to_string() };
        self.call(addr, paths::REMOVE, &req, creds, timeout).await
    }

    /// Asks the leader at `addr` for a read index (it confirms its leadership first).
    pub async fn read_index(
        &self,
        addr: &str,
        ask: rq_store::ReadIndexAsk,
        timeout: Duration,
    ) -> Result<u64, StoreError> {
        self.call(addr, paths::READ_INDEX, &ask, None, timeout).await
    }

    /// Asks the node at `addr` for the vote it has saved.
    pub async fn saved_vote(&self, addr: &str, timeout: Duration) -> Result<Option<rq_store::types::Vote>, StoreError> {
        self.call(addr, paths::SAVED_VOTE, &(), None, timeout).await
    }

    /// Passes a client request to the leader at `addr`, with the client's credentials.
    pub async fn forward(
        &self,
        addr: &str,
        req: &Forward,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Outcome, StoreError> {
        self.call(addr, paths::FORWARD, req, creds, timeout).await
    }

    /// Asks the leader at `addr` for a backup; the response streams the file.
    pub async fn backup(
        &self,
        addr: &str,
        opts: &BackupOptions,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<reqwest::Response, StoreError> {
        let body = postcard::to_stdvec(opts).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut req = self
            .http
            .post(format!("{}://{addr}{}", self.dialer.scheme(), paths::BACKUP))
            .timeout(timeout)
            .body(body);
        if let Some(c) = creds {
            req = req.header(reqwest::header::AUTHORIZATION, c.header_value());
        }
        let resp = req.send().await.map_err(|e| StoreError::Internal(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(StoreError::Unauthorized);
        }
        if !resp.status().is_success() {
            return Err(StoreError::Internal(resp.text().await.unwrap_or_default()));
        }
        Ok(resp)
    }

    /// Streams the database file at `path` to the leader at `addr` to load it.
    pub async fn load(
        &self,
        addr: &str,
        path: &std::path::Path,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .len();
        let stream = futures::stream::try_unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), f)))
        });
        let mut req = self
            .http
            .post(format!("{}://{addr}{}", self.dialer.scheme(), paths::LOAD))
            .timeout(timeout)
            .header("Content-Length", len);
        if let Some(c) = creds {
            req = req.header(reqwest::header::AUTHORIZATION, c.header_value());
        }
        let resp = req
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| unreachable_error(addr, &e))?;
        let bytes = resp.bytes().await.map_err(|e| unreachable_error(addr, &e))?;
        postcard::from_bytes::<Result<(), StoreError>>(&bytes).map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Asks the node at `addr` to stand for election, for the leader whose vote is `leader`.
    pub async fn elect(&self, addr: &str, leader: &Vote, timeout: Duration) -> Result<(), StoreError> {
        self.call(addr, paths::ELECT, leader, None, timeout).await
    }

    /// Passes a `POST /leader` to the leader at `addr`, with the client's credentials.
    pub async fn stepdown(
        &self,
        addr: &str,
        req: &StepdownRequest,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.call(addr, paths::STEPDOWN, req, creds, timeout).await
    }

    /// Asks the node at node-to-node address `addr` about itself.
    pub async fn node_meta(&self, addr: &str, timeout: Duration) -> Result<NodeMeta, String> {
        let url = format!("{}://{addr}{}", self.dialer.scheme(), paths::META);
        let resp = self.http.get(&url).timeout(timeout).send().await.map_err(|e| {
            if e.is_timeout() {
                "timeout waiting for node to respond".to_string()
            } else {
                e.to_string()
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        postcard::from_bytes(&bytes).map_err(|e| e.to_string())
    }
}

/// Raft's connection to one node.
pub struct Peer {
    conn: Conn,
    contacts: Contacts,
    target: u64,
    node: NodeInfo,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Peer {
        let mut conn = Conn::pooled(&node.addr, CONNECT_TIMEOUT, self.dialer.clone(), self.idle.clone());
        if let Some(f) = self.on_hangup.get()
            && let Some(hangups) = self.hangups.get_or_init(Hangups::new)
        {
            let f = f.clone();
            conn.watch_hangups(hangups.clone(), Arc::new(move || f(target)));
        }
        Peer {
            conn,
            contacts: self.contacts.clone(),
            target,
            node: node.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, NodeInfo, E>>;

impl Peer {
    /// Posts `req` to `path` and decodes the remote's `Result<T, E>`.
    async fn call<Q, T, E>(&mut self, path: &str, req: &Q, ttl: Duration) -> RpcResult<T, E>
    where
        Q: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let body = postcard::to_stdvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (status, bytes) = self
            .conn
            .post(path, "application/octet-stream", body.into(), ttl)
            .await
            .map_err(|e| match e {
                ConnError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                ConnError::Io(_) | ConnError::Timeout(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let e = std::io::Error::other(format!("{}{path}: {status}: {text}", self.node.addr));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<T, E> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.contacts.lock().unwrap().insert(self.target, Instant::now());
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.call(paths::APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.call(paths::SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call(paths::VOTE, &rpc, option.hard_ttl()).await
    }
}
