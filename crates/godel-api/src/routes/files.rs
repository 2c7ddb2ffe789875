//! File handlers: raw bytes for file and tar bodies, JSON for listings.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use godel_control::{Caller, Control};
use godel_core::FileEntry;
use serde::Deserialize;

use crate::error::ApiResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameQuery {
    from: String,
    to: String,
}

pub async fn read(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<impl IntoResponse> {
    let data = c.read_file(&caller, &id, &q.path).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data))
}

pub async fn write(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    c.write_file(&caller, &id, &q.path, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<StatusCode> {
    c.remove(&caller, &id, &q.path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    Ok(Json(c.list_dir(&caller, &id, &q.path).await?))
}

pub async fn stat(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<FileEntry>> {
    Ok(Json(c.stat(&caller, &id, &q.path).await?))
}

pub async fn mkdir(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<StatusCode> {
    c.make_dir(&caller, &id, &q.path).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rename(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> ApiResult<StatusCode> {
    c.rename(&caller, &id, &q.from, &q.to).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn download_tar(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<impl IntoResponse> {
    let data = c.download_tar(&caller, &id, &q.path).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], data))
}

pub async fn upload_tar(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    c.upload_tar(&caller, &id, &q.path, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
