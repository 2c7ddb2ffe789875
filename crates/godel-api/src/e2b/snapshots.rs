//! E2B's fork and snapshot endpoints over the control plane's snapshots:
//!
//! - `POST /sandboxes/{id}/fork`: one snapshot of the running sandbox (it
//!   keeps running, id and deadline untouched), then `count` sandboxes
//!   restored from it concurrently, each reported on its own (`sandbox` or
//!   `error`), each with its own time to live (E2B's default 15 s).
//! - `POST /sandboxes/{id}/snapshots`: a persistent snapshot, labelled as
//!   E2B's, named when asked; `GET /snapshots` lists the team's;
//!   `DELETE /templates/{id}` removes one (the SDK's `delete_snapshot`).
//! - A create whose `templateID` names a snapshot (its id, or its name,
//!   optionally `team/` prefixed and `:tag` suffixed) restores it.
//!
//! `memory: true` is refused on a runtime without memory snapshots (the
//! worktree runtime keeps files, not processes); absent, the runtime's own
//! kind is taken.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use godel_control::Caller;
use godel_core::{Error, SandboxState, SnapshotInfo as GodelSnapshot, SnapshotRequest};
use godel_e2b::platform::{
    FORK_DEFAULT_TIMEOUT, ForkRequest, ForkResult, SnapshotInfo, SnapshotRequest as E2bSnapRequest,
};
use godel_e2b::wire::ApiError;

use super::rest::{caller, clamp_timeout, parse_body, sandbox_response, set_deadline};
use super::{State, api_error, api_error_status};

type S = AxState<Arc<State>>;

/// Label on snapshots made through E2B's snapshot endpoint.
pub const SNAPSHOT_LABEL: &str = "e2b.snapshot";
/// Label on the snapshot a fork is made from (not listed as a snapshot).
pub const FORK_LABEL: &str = "e2b.fork";
/// Most forks one request may create (the control plane's `MAX_FORK`).
pub const MAX_FORKS: i64 = 64;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/sandboxes/{id}/snapshots", post(create_snapshot))
        .route("/snapshots", get(list))
}

/// A running sandbox of the caller's team, or `NOT_FOUND`.
fn running(state: &State, caller: &Caller, id: &str) -> godel_core::Result<()> {
    let r = state.record(caller, id)?;
    if r.state != SandboxState::Running {
        return Err(Error::not_found(format!("sandbox {id} is not running")));
    }
    Ok(())
}

async fn fork(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = tri!(caller(&state, &headers));
    let req: ForkRequest = tri!(parse_body(&body));
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return api_error_status(
            StatusCode::BAD_REQUEST,
            &format!("count must be between 1 and {MAX_FORKS}, got {count}"),
        );
    }
    if req.timeout.is_some_and(|t| t < 0) {
        return api_error_status(StatusCode::BAD_REQUEST, "timeout must not be negative");
    }
    trb!(running(&state, &caller, &id));
    let snap = trb!(
        state
            .control
            .snapshot(
                &caller,
                &id,
                SnapshotRequest {
                    name: None,
                    description: Some(format!("E2B fork of {id}")),
                    labels: BTreeMap::from([(FORK_LABEL.to_string(), id.clone())]),
                },
            )
            .await
    );
    let ttl = clamp_timeout(&state, Some(req.timeout.unwrap_or(FORK_DEFAULT_TIMEOUT)));
    let restores = (0..count).map(|_| {
        state
            .control
            .restore_with(&caller, &snap.id, godel_core::new_sandbox_id(), |spec| {
                spec.ttl_secs = Some(ttl.num_seconds() as u64)
            })
    });
    let results = futures::future::join_all(restores).await;
    // A fork of a template with a server gets its server back (the files
    // are copied, not the processes); a fork whose server fails is an error.
    let started = futures::future::join_all(results.into_iter().map(|r| {
        let (state, caller) = (&state, &caller);
        async move {
            let info = r?;
            match super::templates::restart_after_restore(state, caller, &info).await {
                Ok(()) => Ok(info),
                Err(e) => {
                    let _ = state.control.terminate(caller, &info.id).await;
                    Err(e)
                }
            }
        }
    }))
    .await;
    let out: Vec<ForkResult> = started
        .into_iter()
        .map(|r| match r {
            Ok(info) => {
                let e = state.registry.learn(&info, &state.cfg.token_secret);
                set_deadline(&state, &caller, &info.id, Utc::now() + ttl);
                ForkResult {
                    sandbox: Some(sandbox_response(&state, &info, &e)),
                    error: None,
                }
            }
            Err(err) => ForkResult {
                sandbox: None,
                error: Some(ApiError {
                    code: i32::from(err.code.http_status()),
                    message: err.message,
                }),
            },
        })
        .collect();
    // The fork's snapshot is godel's own means, not something the caller
    // asked to keep: drop it once the forks exist. A runtime whose forks
    // still read it (microVM RAM files) refuses with CONFLICT; it is then
    // kept, listed with its fork label, until deleted.
    if let Err(e) = state.control.delete_snapshot(&caller, &snap.id).await {
        tracing::debug!(snapshot = %snap.id, error = %e, "fork snapshot kept");
    }
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

fn names(s: &GodelSnapshot) -> Vec<String> {
    s.name.iter().cloned().collect()
}

fn info(s: &GodelSnapshot) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: s.id.clone(),
        names: names(s),
    }
}

async fn create_snapshot(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = tri!(caller(&state, &headers));
    let req: E2bSnapRequest = tri!(parse_body(&body));
    let rec = trb!(state.record(&caller, &id));
    if req.memory == Some(true) {
        let provider = trb!(state.control.provider(&rec.runtime));
        if !provider.capabilities().memory_snapshots {
            return api_error_status(
                StatusCode::BAD_REQUEST,
                &format!(
                    "memory: the {} runtime keeps files, not memory, in a snapshot; send memory: false or leave it out",
                    rec.runtime
                ),
            );
        }
    }
    let snap = trb!(
        state
            .control
            .snapshot(
                &caller,
                &id,
                SnapshotRequest {
                    name: req.name.clone(),
                    description: Some(format!("E2B snapshot of {id}")),
                    labels: BTreeMap::from([(SNAPSHOT_LABEL.to_string(), "true".to_string())]),
                },
            )
            .await
    );
    (StatusCode::CREATED, axum::Json(info(&snap))).into_response()
}

/// A snapshot listed as E2B's: made through E2B's endpoint or natively, but
/// not the internal ones behind pause and fork.
fn listed(s: &GodelSnapshot) -> bool {
    !s.labels.contains_key(FORK_LABEL) && !s.labels.contains_key("e2b.pause")
}

async fn list(AxState(state): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let caller = tri!(caller(&state, &headers));
    let (mut sandbox, mut name, mut limit, mut offset) = (None, None, 100usize, 0usize);
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "sandboxID" => sandbox = Some(v.into_owned()),
            "name" => name = Some(bare_name(&v).to_string()),
            "limit" => limit = v.parse().unwrap_or(100).clamp(1, 100),
            "nextToken" => offset = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let all = match state.control.list_snapshots(&caller, None) {
        Ok(v) => v,
        Err(e) => return api_error(&e),
    };
    let mut all: Vec<GodelSnapshot> = all
        .into_iter()
        .filter(listed)
        .filter(|s| sandbox.as_ref().is_none_or(|id| s.runtime_id == *id))
        .filter(|s| {
            name.as_ref()
                .is_none_or(|n| s.id == *n || s.name.as_ref() == Some(n))
        })
        .collect();
    all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    let end = (offset + limit).min(all.len());
    let page: Vec<SnapshotInfo> = all
        .get(offset.min(end)..end)
        .unwrap_or(&[])
        .iter()
        .map(info)
        .collect();
    let mut resp = axum::Json(page).into_response();
    if end < all.len()
        && let Ok(v) = HeaderValue::from_str(&end.to_string())
    {
        resp.headers_mut().insert("x-next-token", v);
    }
    resp
}

/// `team/name:tag` → `name`.
fn bare_name(s: &str) -> &str {
    let s = s.rsplit_once('/').map_or(s, |(_, n)| n);
    s.split_once(':').map_or(s, |(n, _)| n)
}

/// The snapshot a create's `templateID` names, if it names one of the
/// caller's: by id, else the newest with that name.
pub(super) fn resolve(
    state: &State,
    caller: &Caller,
    template: &str,
) -> godel_core::Result<Option<GodelSnapshot>> {
    let n = bare_name(template);
    if let Ok(s) = state.control.get_snapshot(caller, n) {
        return Ok(Some(s));
    }
    let mut named: Vec<GodelSnapshot> = state
        .control
        .list_snapshots(caller, None)?
        .into_iter()
        .filter(|s| listed(s) && s.name.as_deref() == Some(n))
        .collect();
    named.sort_by_key(|s| s.created_at);
    Ok(named.pop())
}

/// `DELETE /templates/{id}` of a snapshot: `Some(response)` when `id` names
/// one of the caller's snapshots.
pub(super) async fn delete(state: &State, caller: &Caller, id: &str) -> Option<Response> {
    let snap = resolve(state, caller, id).ok().flatten()?;
    Some(
        match state.control.delete_snapshot(caller, &snap.id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => api_error(&e),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::bare_name;

    #[test]
    fn names_lose_their_team_and_tag() {
        assert_eq!(bare_name("team/snap:v1"), "snap");
        assert_eq!(bare_name("snap:default"), "snap");
        assert_eq!(bare_name("snap-123"), "snap-123");
    }
}
