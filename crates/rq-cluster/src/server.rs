//! The serving side of the node-to-node API.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rq_proto::auth::{CredentialStore, Credentials, perm};
use rq_store::types::TypeConfig;
use rq_store::{BackupOptions, Forward, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::messages::{JoinRequest, NotifyRequest, RemoveRequest, StepdownRequest};
use crate::paths;

/// Largest node-to-node request body: a batch of log entries or a snapshot chunk.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// What a node tells others about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The node's public API URL, e.g. `http://host:4001`.
    pub api_url: String,
    pub version: String,
    pub commit_index: u64,
}

#[derive(Clone)]
struct Ctx {
    store: Store,
    net: crate::Network,
    api_url: String,
    version: String,
    /// `-auth`'s users: what other nodes ask on a client's behalf (forwarded requests,
    /// backups, loads, removals, stepdowns) and joins and notifications are checked against
    /// the credentials they carry, as rqlite's cluster service checks them. Raft's own
    /// messages and `/meta` are not.
    auth: Option<Arc<CredentialStore>>,
}

impl Ctx {
    /// Whether the request's Basic credentials allow every one of `perms`.
    fn allows(&self, headers: &HeaderMap, perms: &[&str]) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        let creds = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| Credentials::from_header(v.as_bytes()));
        perms.iter().all(|p| auth.allows(creds.as_ref(), p))
    }
}

/// The `Result` answer that refuses a request for want of permission.
fn unauthorized() -> Response {
    reply(&Err::<(), StoreError>(StoreError::Unauthorized))
}

/// The node-to-node router. `api_url` and `version` are what `/meta` reports; `auth` holds the
/// users of `-auth`, if set.
pub fn router(
    store: Store,
    net: crate::Network,
    api_url: String,
    version: String,
    auth: Option<Arc<CredentialStore>>,
) -> Router {
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::META, get(meta))
        .route(paths::JOIN, post(join))
        .route(paths::NOTIFY, post(notify))
        .route(paths::CDC_HWM, post(cdc_hwm))
        .route(paths::READ_INDEX, post(read_index))
        .route(paths::SAVED_VOTE, post(saved_vote))
        .route(paths::REMOVE, post(remove))
        .route(paths::FORWARD, post(forward))
        .route(paths::BACKUP, post(backup))
        .route(paths::LOAD, post(load))
        .route(paths::ELECT, post(elect))
        .route(paths::STEPDOWN, post(stepdown))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Ctx {
            store,
            net,
            api_url,
            version,
            auth,
        })
}

fn reply<T: Serialize>(v: &T) -> Response {
    match postcard::to_stdvec(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn bad_body(e: postcard::Error) -> Response {
    (StatusCode::BAD_REQUEST, format!("invalid body: {e}")).into_response()
}

async fn append(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: openraft::raft::AppendEntriesRequest<TypeConfig> = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    ctx.store.note_leader_contact(req.leader_commit.map(|l| l.index));
    reply(&ctx.store.append_entries(req).await)
}

async fn vote(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: openraft::raft::VoteRequest<u64> = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    reply(&ctx.store.raft().vote(req).await)
}

async fn snapshot(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    ctx.store.note_leader_contact(None);
    reply(&ctx.store.raft().install_snapshot(req).await)
}

async fn meta(State(ctx): State<Ctx>) -> Response {
    ctx.store.stats().cluster.add("num_get_node_api_req", 1);
    let commit_index = ctx
        .store
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index)
        .unwrap_or(0);
    reply(&NodeMeta {
        api_url: ctx.api_url.clone(),
        version: ctx.version.clone(),
        commit_index,
    })
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(body)
}

async fn join(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    ctx.store.stats().cluster.add("num_join_req", 1);
    let req: JoinRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    // A voter needs `join`; a read replica `join-read-only` or its newer name.
    let allowed = if req.voter {
        ctx.allows(&headers, &[perm::JOIN])
    } else {
        ctx.allows(&headers, &[perm::JOIN_READ_ONLY]) || ctx.allows(&headers, &[perm::JOIN_READ_REPLICA])
    };
    if !allowed {
        tracing::warn!(id = %req.id, addr = %req.addr, "join refused: not authorized");
        return unauthorized();
    }
    reply(&ctx.store.join(&req.id, &req.addr, req.voter).await.map(|_| ()))
}

async fn notify(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    ctx.store.stats().cluster.add("num_notify_req", 1);
    let req: NotifyRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    if !ctx.allows(&headers, &[perm::JOIN]) {
        return unauthorized();
    }
    ctx.store.notify(&req.id, &req.addr);
    reply(&Ok::<(), StoreError>(()))
}

/// The leader's change data capture high-water mark: this node prunes its queue up to it. Like
/// the Raft messages on this port (and rqlite's broadcast), it carries no credentials; protect
/// the port with `-node-verify-client`.
async fn cdc_hwm(State(ctx): State<Ctx>, body: Bytes) -> Response {
    ctx.store.stats().cluster.add("num_broadcast_hwm_req", 1);
    let hwm: u64 = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    if let Some(q) = ctx.store.cdc_queue()
        && let Err(e) = q.set_hwm(hwm)
    {
        tracing::warn!(error = %e, "CDC: could not record the high-water mark");
    }
    reply(&Ok::<(), StoreError>(()))
}

async fn remove(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    ctx.store.stats().cluster.add("num_remove_node_req", 1);
    let req: RemoveRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    if !ctx.allows(&headers, &[perm::REMOVE]) {
        return unauthorized();
    }
    reply(&ctx.store.remove(&req.id).await)
}

/// A read index for a linearizable read on another node (see `rq_store::follower_read`).
async fn read_index(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let ask: rq_store::ReadIndexAsk = match postcard::from_bytes(&body) {
        Ok(a) => a,
        Err(e) => return bad_body(e),
    };
    ctx.store.stats().cluster.add("num_read_index_req", 1);
    reply(&ctx.store.read_index(ask).await)
}

/// The vote this node has saved, for a leader confirming its leadership (see
/// `rq_store::VoteProbe`).
async fn saved_vote(State(ctx): State<Ctx>) -> Response {
    ctx.store.stats().cluster.add("num_saved_vote_req", 1);
    // Tests make a node slow to answer (`return(MS)`).
    if let Some(ms) = fail::eval("saved-vote-delay-ms", |a| a.and_then(|a| a.parse::<u64>().ok())).flatten() {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    reply(&Ok::<_, StoreError>(ctx.store.saved_vote()))
}

async fn forward(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Forward = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    let (key, perms): (_, &[&str]) = match req {
        Forward::Execute { .. } => ("num_execute_req", &[perm::EXECUTE]),
        Forward::Query { .. } => ("num_query_req", &[perm::QUERY]),
        Forward::Request { .. } => ("num_request_req", &[perm::QUERY, perm::EXECUTE]),
    };
    ctx.store.stats().cluster.add(key, 1);
    if !ctx.allows(&headers, perms) {
        return unauthorized();
    }
    reply(&ctx.store.run(req).await)
}

/// A backup for another node: the file's bytes, or 500 with the error.
async fn backup(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    ctx.store.stats().cluster.add("num_backup_req", 1);
    let opts: BackupOptions = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    if !ctx.allows(&headers, &[perm::BACKUP]) {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    if !ctx.store.is_leader() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not leader").into_response();
    }
    match ctx.store.backup(opts).await {
        Ok(file) => (StatusCode::OK, axum::body::Body::from_stream(file_stream(file))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A database file to load, streamed from the node that received it.
async fn load(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Body) -> Response {
    ctx.store.stats().cluster.add("num_load_req", 1);
    if !ctx.allows(&headers, &[perm::LOAD]) {
        return unauthorized();
    }
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let result = async {
        let named = ctx
            .store
            .scratch_file()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut out = tokio::fs::File::from_std(named.reopen().map_err(|e| StoreError::Internal(e.to_string()))?);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StoreError::Internal(e.to_string()))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
        }
        out.flush().await.map_err(|e| StoreError::Internal(e.to_string()))?;
        Store::check_database_file(named.path())
            .await
            .map_err(StoreError::Internal)?;
        ctx.store.load_file(named.path()).await
    }
    .await;
    reply(&result)
}

/// Reads a file in blocks, as a body stream.
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

/// The current leader asks this node to stand for election (a leadership transfer). The body
/// is the leader's vote; an older node sends none.
async fn elect(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let leader = if body.is_empty() {
        None
    } else {
        match decode(&body) {
            Ok(v) => Some(v),
            Err(e) => return bad_body(e),
        }
    };
    reply(&ctx.store.stand_for_election(leader).await)
}

/// Another node passes on a `POST /leader`.
async fn stepdown(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    ctx.store.stats().cluster.add("num_stepdown_req", 1);
    let req: StepdownRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    if !ctx.allows(&headers, &[perm::LEADER_OPS]) {
        return unauthorized();
    }
    reply(&crate::transfer::stepdown(&ctx.store, &ctx.net, req.id, req.wait).await)
}
