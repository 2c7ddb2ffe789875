//! Snapshot, restore and fork handlers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use godel_control::{Caller, Control};
use godel_core::{SandboxInfo, SnapshotInfo, SnapshotRequest};
use serde::Deserialize;

use crate::error::ApiResult;

pub async fn create(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(c.snapshot(&caller, &id, req).await?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    runtime_id: Option<String>,
}

pub async fn list(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SnapshotInfo>>> {
    Ok(Json(c.list_snapshots(&caller, q.runtime_id.as_deref())?))
}

pub async fn get(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotInfo>> {
    Ok(Json(c.get_snapshot(&caller, &id)?))
}

pub async fn remove(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.delete_snapshot(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn restore(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    Ok((StatusCode::CREATED, Json(c.restore(&caller, &id).await?)))
}

/// Body of a fork request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    count: usize,
}

pub async fn fork(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<ForkRequest>,
) -> ApiResult<(StatusCode, Json<Vec<SandboxInfo>>)> {
    Ok((
        StatusCode::CREATED,
        Json(c.fork(&caller, &id, req.count).await?),
    ))
}
