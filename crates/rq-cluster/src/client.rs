//! The calling side of the node-to-node API: openraft's network, over reqwest.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use rq_store::NodeInfo;
use rq_store::types::TypeConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::NodeMeta;
use crate::paths;

/// Longest a connection attempt to another node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates connections to other nodes; one HTTP client (with its pool) is shared.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
}

impl Network {
    pub fn new() -> Result<Network, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Network { http })
    }

    /// Asks the node at node-to-node address `addr` about itself.
    pub async fn node_meta(&self, addr: &str, timeout: Duration) -> Result<NodeMeta, String> {
        let url = format!("http://{addr}{}", paths::META);
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

/// A connection to one node.
pub struct Peer {
    http: reqwest::Client,
    target: u64,
    node: NodeInfo,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Peer {
        Peer {
            http: self.http.clone(),
            target,
            node: node.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, NodeInfo, E>>;

impl Peer {
    /// Posts `req` to `path` and decodes the remote's `Result<T, E>`.
    async fn call<Q, T, E>(&self, path: &str, req: &Q, ttl: Duration) -> RpcResult<T, E>
    where
        Q: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let body = postcard::to_stdvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let url = format!("http://{}{}", self.node.addr, path);
        let resp = self.http.post(&url).timeout(ttl).body(body).send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let e = std::io::Error::other(format!("{url}: {status}: {text}"));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let result: Result<T, E> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
