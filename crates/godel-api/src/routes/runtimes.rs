//! Runtime lifecycle and exec handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use godel_control::{Caller, Control};
use godel_core::{
    ExecEvent, ExecOutput, ExecRequest, SandboxInfo, SandboxState, SnapshotRequest, SpawnSpec,
};
use serde::Deserialize;

use crate::error::ApiResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnQuery {
    /// Wait up to this many seconds in the team's fair queue when its quota is full.
    #[serde(default)]
    wait_secs: Option<u64>,
}

pub async fn spawn(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SpawnQuery>,
    Json(spec): Json<SpawnSpec>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    let opts = godel_control::SpawnOptions {
        queue_wait: q.wait_secs.map(Duration::from_secs),
    };
    let info = c.spawn_with(&caller, spec, opts).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

pub async fn list(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SandboxInfo>>> {
    Ok(Json(c.list(&caller, q.all)?))
}

pub async fn status(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(c.status(&caller, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateQuery {
    #[serde(default)]
    snapshot: bool,
}

pub async fn terminate(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<TerminateQuery>,
) -> ApiResult<Json<SandboxInfo>> {
    if q.snapshot {
        let req = SnapshotRequest {
            name: None,
            description: Some("taken before removal".into()),
            labels: Default::default(),
        };
        c.snapshot(&caller, &id, req).await?;
    }
    Ok(Json(c.terminate(&caller, &id).await?))
}

pub async fn pause(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(c.pause(&caller, &id).await?))
}

pub async fn resume(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(c.resume(&caller, &id).await?))
}

/// Body of `POST /v1/runtimes/{id}/ttl`.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TtlRequest {
    /// Seconds from now; `null` clears the deadline.
    pub ttl_secs: Option<u64>,
}

pub async fn set_ttl(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<TtlRequest>,
) -> ApiResult<Json<SandboxInfo>> {
    let at = req.ttl_secs.map(|s| {
        chrono::Utc::now() + chrono::Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64)
    });
    Ok(Json(c.set_expiry(&caller, &id, at)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    state: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

pub async fn wait(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<SandboxInfo>> {
    let state = SandboxState::parse(&q.state)?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(30_000));
    Ok(Json(c.wait_for_state(&caller, &id, state, timeout).await?))
}

pub async fn exec(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Json<ExecOutput>> {
    Ok(Json(c.exec_collect(&caller, &id, req).await?))
}

/// SSE: one `data:` line per `ExecEvent` (JSON, output base64), event name = its type.
pub async fn exec_stream(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let mut handle = c.exec(&caller, &id, req).await?;
    // Stdin, if any, was given in the request; keep the sender alive with the stream
    // only when the caller asked for interactive mode (not possible over SSE): close it.
    drop(handle.stdin.take());
    let signal = handle.signal.take();
    let stream = handle.events.map(move |ev| {
        let _keep = &signal;
        let name = match &ev {
            ExecEvent::Started { .. } => "started",
            ExecEvent::Stdout { .. } => "stdout",
            ExecEvent::Stderr { .. } => "stderr",
            ExecEvent::Exit(_) => "exit",
            ExecEvent::Error(_) => "error",
        };
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Ok(SseEvent::default().event(name).data(data))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
