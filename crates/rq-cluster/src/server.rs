//! The serving side of the node-to-node API.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rq_store::Store;
use rq_store::types::TypeConfig;
use serde::{Deserialize, Serialize};

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
    api_url: String,
    version: String,
}

/// The node-to-node router. `api_url` and `version` are what `/meta` reports.
pub fn router(store: Store, api_url: String, version: String) -> Router {
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::META, get(meta))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Ctx {
            store,
            api_url,
            version,
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
    reply(&ctx.store.raft().append_entries(req).await)
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
