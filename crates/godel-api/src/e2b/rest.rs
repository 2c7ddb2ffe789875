//! The E2B control plane: `/sandboxes` and `/v2/sandboxes` (create, list,
//! info, kill, timeout, refresh, pause, connect/resume, metrics), translated
//! into `Control` calls. Status codes follow what the
//! SDKs accept (create 201; kill 204 or 404; connect 200 when running, 201
//! when resumed; pause 409 when already paused).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use godel_control::Caller;
use godel_core::{
    Error, ErrorCode, OnTimeout, ParkReason, SandboxInfo, SandboxState, SnapshotRequest, SpawnSpec,
};
use godel_e2b::wire::{
    API_KEY_HEADER, ConnectSandbox, DEFAULT_TEMPLATE, E2bState, HOPS_HEADER, Lifecycle, MAX_HOPS,
    NewSandbox, RefreshRequest, Sandbox, SandboxDetail, SandboxMetric, TimeoutRequest,
};
use serde::de::DeserializeOwned;

use super::registry::{Entry, META_PREFIX, SandboxView};
use super::{State, api_error, api_error_status, present};

type S = AxState<Arc<State>>;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .merge(super::network::routes())
        .route("/templates/{id}", axum::routing::delete(delete_template))
        .merge(super::snapshots::routes())
        .merge(super::volumes::routes())
        .merge(super::templates::routes())
}

/// The caller, from `X-API-Key` (or `Authorization: Bearer`): always a
/// team (an admin token acts for the default team, as E2B keys are per team).
pub(super) fn caller(state: &State, headers: &HeaderMap) -> Result<Caller, Response> {
    let key = headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Err(api_error_status(
            StatusCode::UNAUTHORIZED,
            "missing X-API-Key header",
        ));
    };
    match state.control.authenticate(key) {
        Ok(Caller::Team(t)) => Ok(Caller::Team(t)),
        Ok(Caller::Admin) => Ok(Caller::Team(state.control.settings().default_team.clone())),
        Err(e)
            if matches!(
                e.code,
                ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::NotFound
            ) =>
        {
            Err(api_error_status(
                StatusCode::UNAUTHORIZED,
                "invalid API key",
            ))
        }
        Err(e) => Err(api_error(&e)),
    }
}

pub(super) fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        api_error_status(
            StatusCode::BAD_REQUEST,
            &format!("invalid request body: {e}"),
        )
    })
}

pub(super) fn clamp_timeout(state: &State, secs: Option<i64>) -> ChronoDuration {
    let max = state.cfg.max_timeout.as_secs() as i64;
    let secs = secs.unwrap_or(state.cfg.default_timeout.as_secs() as i64);
    ChronoDuration::seconds(secs.clamp(0, max))
}

fn e2b_state(s: SandboxState) -> Option<E2bState> {
    match s {
        SandboxState::Running => Some(E2bState::Running),
        SandboxState::Paused => Some(E2bState::Paused),
        _ => None,
    }
}

pub(super) fn sandbox_response(state: &State, info: &SandboxInfo, e: &Entry) -> Sandbox {
    Sandbox {
        template_id: SandboxView::of(info).template,
        sandbox_id: e.id.clone(),
        alias: None,
        client_id: state.cfg.client_id.clone(),
        envd_version: state.cfg.envd_version.clone(),
        envd_access_token: Some(e.token.clone()),
        traffic_access_token: super::proxy::traffic_token_of(state, info),
        domain: state.cfg.domain.clone(),
    }
}

fn detail(
    state: &State,
    info: &SandboxInfo,
    e: &Entry,
    st: E2bState,
    with_secrets: bool,
) -> SandboxDetail {
    let b = SandboxView::of(info);
    let max = ChronoDuration::seconds(state.cfg.max_timeout.as_secs() as i64);
    SandboxDetail {
        template_id: b.template.clone(),
        alias: None,
        sandbox_id: e.id.clone(),
        client_id: state.cfg.client_id.clone(),
        started_at: b.started_at,
        end_at: b.end_at.unwrap_or(b.started_at + max),
        cpu_count: b.cpu,
        memory_mb: b.memory_mb,
        disk_size_mb: b.disk_mb,
        metadata: b.metadata.clone(),
        state: st,
        envd_version: state.cfg.envd_version.clone(),
        envd_access_token: with_secrets.then(|| e.token.clone()),
        domain: with_secrets.then(|| state.cfg.domain.clone()).flatten(),
        lifecycle: with_secrets.then(|| Lifecycle {
            auto_resume: false,
            on_timeout: if b.auto_pause { "pause" } else { "kill" }.to_string(),
        }),
    }
}

/// Move a sandbox's deadline (best effort: it may have stopped meanwhile).
pub(super) fn set_deadline(state: &State, caller: &Caller, id: &str, end_at: DateTime<Utc>) {
    if let Err(err) = state.control.set_expiry(caller, id, Some(end_at)) {
        tracing::warn!(sandbox = %id, error = %err, "e2b: cannot move the deadline");
    }
}

async fn create(AxState(state): S, headers: HeaderMap, body: Bytes) -> Response {
    let caller = tri!(caller(&state, &headers));
    let hops: u32 = headers
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if hops > MAX_HOPS {
        return api_error_status(
            StatusCode::LOOP_DETECTED,
            &format!(
                "this create passed through {hops} godel E2B servers: an e2b runtime probably points back at its own server"
            ),
        );
    }
    let req: NewSandbox = tri!(parse_body(&body));
    if let Some(msg) = unsupported_create_field(&body) {
        return api_error_status(StatusCode::BAD_REQUEST, &msg);
    }
    let template = if req.template_id.is_empty() {
        DEFAULT_TEMPLATE.to_string()
    } else {
        req.template_id.clone()
    };
    let mut spec = SpawnSpec {
        team: caller.team_filter().map(String::from),
        ttl_secs: Some(clamp_timeout(&state, req.timeout).num_seconds() as u64),
        on_timeout: if req.auto_pause == Some(true) {
            OnTimeout::Pause
        } else {
            OnTimeout::Kill
        },
        hops,
        ..Default::default()
    };
    spec.env = req.env_vars.clone().unwrap_or_default();
    for (k, v) in req.metadata.clone().unwrap_or_default() {
        spec.labels.insert(format!("{META_PREFIX}{k}"), v);
    }
    tri!(super::network::apply_create(&body, &mut spec));
    tri!(super::volumes::apply_create(
        &state, &caller, &body, &mut spec
    ));
    if template != DEFAULT_TEMPLATE {
        if let Some(snap) = trb!(super::snapshots::resolve(&state, &caller, &template)) {
            return from_snapshot(&state, &caller, &snap.id, spec, &req).await;
        }
        spec.template = Some(template);
    }
    let server = super::templates::builtin(spec.template.as_deref().unwrap_or_default());
    if let Some(t) = &server {
        trb!(super::templates::installed(t));
    }
    trb!(spec.validate());
    let info = trb!(state.control.spawn(&caller, spec).await);
    if let Some(t) = &server
        && let Err(err) = super::templates::start(&state, &caller, &info.id, t).await
    {
        let _ = state.control.terminate(&caller, &info.id).await;
        return api_error(&err);
    }
    let e = state.registry.learn(&info, &state.cfg.token_secret);
    (
        StatusCode::CREATED,
        axum::Json(sandbox_response(&state, &info, &e)),
    )
        .into_response()
}

/// A create whose template is a snapshot: restore it with the request's
/// time to live, metadata and env added.
async fn from_snapshot(
    state: &State,
    caller: &Caller,
    snap: &str,
    spec: SpawnSpec,
    req: &NewSandbox,
) -> Response {
    let id = godel_core::new_sandbox_id();
    let info = trb!(
        state
            .control
            .restore_with(caller, snap, id, |s| {
                s.ttl_secs = spec.ttl_secs;
                s.on_timeout = spec.on_timeout;
                s.env.extend(spec.env.clone());
                s.labels.retain(|k, _| !k.starts_with(META_PREFIX));
                s.labels.extend(spec.labels.clone());
            })
            .await
    );
    if let Err(err) = super::templates::restart_after_restore(state, caller, &info).await {
        let _ = state.control.terminate(caller, &info.id).await;
        return api_error(&err);
    }
    if let Some(t) = req.timeout {
        set_deadline(
            state,
            caller,
            &info.id,
            Utc::now() + clamp_timeout(state, Some(t)),
        );
    }
    let e = state.registry.learn(&info, &state.cfg.token_secret);
    (
        StatusCode::CREATED,
        axum::Json(sandbox_response(state, &info, &e)),
    )
        .into_response()
}

/// `DELETE /templates/{id}`: a snapshot of the caller's team (the SDK's
/// `delete_snapshot`) or a template.
async fn delete_template(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = tri!(caller(&state, &headers));
    if let Some(r) = super::snapshots::delete(&state, &caller, &id).await {
        return r;
    }
    api_error_status(StatusCode::NOT_FOUND, &format!("template {id} not found"))
}

/// A create field the SDKs may send that godel cannot honour, set to
/// something other than its "off" value: refused by name rather than
/// silently dropped. Absent, `null`, `false` and empty values pass (some
/// SDK versions send them on every create).
fn unsupported_create_field(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let set = |k: &str| match v.get(k) {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => {
            !o.is_empty() && o.get("enabled") != Some(&serde_json::Value::Bool(false))
        }
        Some(_) => true,
    };
    let why = [
        (
            "autoResume",
            "a paused sandbox is resumed only by connect, not by traffic",
        ),
        ("mcp", "godel runs no MCP gateway in sandboxes"),
        ("iam", "godel issues no IAM tokens to sandboxes"),
    ];
    why.iter()
        .find(|(k, _)| set(k))
        .map(|(k, reason)| format!("{k} is not supported by godel: {reason}; create without it"))
}

/// Query parameters of the list endpoints, read by hand: `state` may come
/// comma-separated or repeated.
#[derive(Default)]
struct ListQuery {
    metadata: BTreeMap<String, String>,
    states: Vec<E2bState>,
    template: Option<String>,
    ascending: bool,
    limit: usize,
    offset: usize,
    started_after: Option<DateTime<Utc>>,
}

fn parse_list_query(raw: Option<&str>, default_states: &[E2bState]) -> ListQuery {
    let mut q = ListQuery {
        limit: 100,
        ..Default::default()
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            // `k=v&…`, each key and value percent-quoted once more by the SDKs.
            "metadata" => {
                for (mk, mv) in url::form_urlencoded::parse(v.as_bytes()) {
                    q.metadata.insert(unquote(&mk), unquote(&mv));
                }
            }
            "state" => {
                for s in v.split(',') {
                    match s.trim() {
                        "running" => q.states.push(E2bState::Running),
                        "paused" => q.states.push(E2bState::Paused),
                        _ => {}
                    }
                }
            }
            "template" => q.template = Some(v.into_owned()),
            "order" => q.ascending = v == "asc",
            "limit" => q.limit = v.parse().unwrap_or(100).clamp(1, 100),
            "nextToken" => q.offset = v.parse().unwrap_or(0),
            "startedAfter" => {
                q.started_after = DateTime::parse_from_rfc3339(&v)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            }
            _ => {}
        }
    }
    if q.states.is_empty() {
        q.states = default_states.to_vec();
    }
    q
}

fn unquote(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

async fn list_entries(
    state: &State,
    caller: &Caller,
    q: &ListQuery,
) -> godel_core::Result<Vec<SandboxDetail>> {
    let infos = state.control.list(caller, true)?;
    let mut out = Vec::new();
    for info in infos.into_iter().filter_map(present) {
        let Some(st) = e2b_state(info.state) else {
            continue;
        };
        if !q.states.contains(&st) {
            continue;
        }
        let e = state.registry.learn(&info, &state.cfg.token_secret);
        let d = detail(state, &info, &e, st, false);
        if q.metadata.iter().any(|(k, v)| d.metadata.get(k) != Some(v)) {
            continue;
        }
        if q.template.as_ref().is_some_and(|t| *t != d.template_id) {
            continue;
        }
        if q.started_after.is_some_and(|t| d.started_at < t) {
            continue;
        }
        out.push(d);
    }
    out.sort_by(|a, b| (a.started_at, &a.sandbox_id).cmp(&(b.started_at, &b.sandbox_id)));
    if !q.ascending {
        out.reverse();
    }
    Ok(out)
}

async fn list_v1(AxState(state): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let caller = tri!(caller(&state, &headers));
    let q = parse_list_query(raw.as_deref(), &[E2bState::Running]);
    let all = trb!(list_entries(&state, &caller, &q).await);
    axum::Json(all).into_response()
}

async fn list_v2(AxState(state): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let caller = tri!(caller(&state, &headers));
    let q = parse_list_query(raw.as_deref(), &[E2bState::Running, E2bState::Paused]);
    let all = trb!(list_entries(&state, &caller, &q).await);
    let running = all.iter().filter(|d| d.state == E2bState::Running).count();
    let end = (q.offset + q.limit).min(all.len());
    let page: Vec<SandboxDetail> = all.get(q.offset.min(end)..end).unwrap_or(&[]).to_vec();
    let mut resp = axum::Json(page).into_response();
    let h = resp.headers_mut();
    if end < all.len()
        && let Ok(v) = HeaderValue::from_str(&end.to_string())
    {
        h.insert("x-next-token", v);
    }
    h.insert("x-total-running", HeaderValue::from(running as u64));
    resp
}

/// The record of `id` as E2B sees it (running with fresh usage, or paused),
/// with its entry in the registry.
async fn lookup(
    state: &State,
    caller: &Caller,
    id: &str,
) -> godel_core::Result<(SandboxInfo, Arc<Entry>)> {
    let mut info = state.record(caller, id)?;
    if info.state == SandboxState::Running {
        info = present(state.control.status(caller, id).await?)
            .ok_or_else(|| Error::not_found(format!("sandbox {id} not found")))?;
    }
    if e2b_state(info.state).is_none() {
        return Err(Error::not_found(format!("sandbox {id} not found")));
    }
    let e = state.registry.learn(&info, &state.cfg.token_secret);
    Ok((info, e))
}

async fn info(AxState(state): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = tri!(caller(&state, &headers));
    let (info, e) = trb!(lookup(&state, &caller, &id).await);
    let st = e2b_state(info.state).unwrap_or(E2bState::Running);
    axum::Json(detail(&state, &info, &e, st, true)).into_response()
}

async fn kill(AxState(state): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = tri!(caller(&state, &headers));
    let (_, e) = trb!(lookup(&state, &caller, &id).await);
    // End attached command streams first, as envd's end when its VM goes.
    e.clear_live();
    trb!(state.control.terminate(&caller, &id).await);
    state.registry.forget(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_timeout(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = tri!(caller(&state, &headers));
    let req: TimeoutRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error_status(StatusCode::BAD_REQUEST, &format!("invalid body: {e}"));
        }
    };
    let (info, _) = trb!(lookup(&state, &caller, &id).await);
    if info.state != SandboxState::Running {
        return api_error_status(
            StatusCode::NOT_FOUND,
            &format!("sandbox {id} is not running"),
        );
    }
    let end_at = Utc::now() + clamp_timeout(&state, Some(req.timeout));
    set_deadline(&state, &caller, &id, end_at);
    StatusCode::NO_CONTENT.into_response()
}

async fn refresh(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = tri!(caller(&state, &headers));
    let req: RefreshRequest = tri!(parse_body(&body));
    let (info, _) = trb!(lookup(&state, &caller, &id).await);
    if info.state != SandboxState::Running {
        return api_error_status(
            StatusCode::NOT_FOUND,
            &format!("sandbox {id} is not running"),
        );
    }
    let want = Utc::now() + clamp_timeout(&state, Some(req.duration.unwrap_or(60).min(3600)));
    if info.expires_at.is_none_or(|t| t < want) {
        set_deadline(&state, &caller, &id, want);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn pause(AxState(state): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = tri!(caller(&state, &headers));
    let (info, e) = trb!(lookup(&state, &caller, &id).await);
    if info.state == SandboxState::Paused {
        return api_error_status(
            StatusCode::CONFLICT,
            &format!("sandbox {id} is already paused"),
        );
    }
    e.clear_live();
    let req = SnapshotRequest {
        name: None,
        description: Some("E2B pause".into()),
        labels: BTreeMap::from([("e2b.pause".to_string(), "true".to_string())]),
    };
    trb!(
        state
            .control
            .park(&caller, &id, ParkReason::Paused, req)
            .await
    );
    StatusCode::NO_CONTENT.into_response()
}

/// Resume a paused sandbox or extend a running one. `resumed_only` is the
/// deprecated `/resume` (409 when already running).
async fn connect_inner(
    state: &State,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
    resumed_only: bool,
) -> Response {
    let caller = tri!(caller(state, headers));
    let req: ConnectSandbox = tri!(parse_body(body));
    let (info, e) = match lookup(state, &caller, id).await {
        Ok(v) => v,
        Err(err) if err.code == ErrorCode::NotFound => {
            return api_error_status(
                StatusCode::NOT_FOUND,
                &format!("Paused sandbox {id} not found"),
            );
        }
        Err(err) => return api_error(&err),
    };
    let want = Utc::now() + clamp_timeout(state, req.timeout);
    match info.state {
        SandboxState::Running if resumed_only => api_error_status(
            StatusCode::CONFLICT,
            &format!("sandbox {id} is already running"),
        ),
        SandboxState::Running => {
            // Connecting never shortens a running sandbox's life.
            if info.expires_at.is_some_and(|t| t < want) {
                set_deadline(state, &caller, id, want);
            }
            (
                StatusCode::OK,
                axum::Json(sandbox_response(state, &info, &e)),
            )
                .into_response()
        }
        _ => {
            let info = trb!(state.control.resume(&caller, id).await);
            // A paused sandbox comes back with its files, not its processes:
            // a template's server is started again.
            trb!(super::templates::restart_after_restore(state, &caller, &info).await);
            let e = state.registry.learn(&info, &state.cfg.token_secret);
            set_deadline(state, &caller, id, want);
            (
                StatusCode::CREATED,
                axum::Json(sandbox_response(state, &info, &e)),
            )
                .into_response()
        }
    }
}

async fn connect(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    connect_inner(&state, &headers, &id, &body, false).await
}

async fn resume(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    connect_inner(&state, &headers, &id, &body, true).await
}

/// One point, taken now: godel keeps no metric history. A `start`/`end`
/// window (unix seconds) that excludes now, or ends before the sandbox
/// started, returns no points.
async fn metrics(
    AxState(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = tri!(caller(&state, &headers));
    let (info, _) = trb!(lookup(&state, &caller, &id).await);
    let b = SandboxView::of(&info);
    let now = Utc::now();
    let (mut start, mut end) = (None::<i64>, None::<i64>);
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "start" => start = v.parse().ok(),
            "end" => end = v.parse().ok(),
            _ => {}
        }
    }
    let slack = 5;
    if end.is_some_and(|e| e + slack < now.timestamp() || e < b.started_at.timestamp())
        || start.is_some_and(|s| s > now.timestamp() + slack)
    {
        return axum::Json(Vec::<SandboxMetric>::new()).into_response();
    }
    let usage = info.usage.unwrap_or_default();
    let elapsed = (now - b.started_at).num_milliseconds().max(1) as f64 / 1000.0;
    let cpu_pct = (usage.cpu_seconds / elapsed / b.cpu.max(1) as f64 * 100.0).clamp(0.0, 100.0);
    let point = SandboxMetric {
        timestamp: now,
        timestamp_unix: now.timestamp(),
        cpu_count: b.cpu,
        cpu_used_pct: cpu_pct,
        mem_used: usage.memory_bytes as i64,
        mem_total: b.memory_mb << 20,
        mem_cache: 0,
        disk_used: usage.disk_bytes as i64,
        disk_total: b.disk_mb << 20,
    };
    axum::Json(vec![point]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_decodes_the_sdk_form() {
        // Captured from e2b 2.63 for metadata {"user id": "a&b"}.
        let q = parse_list_query(
            Some(
                "metadata=user%252520id%3Da%252526b&state=running%2Cpaused&order=asc&limit=10&nextToken=20",
            ),
            &[],
        );
        assert_eq!(q.metadata.get("user id").map(String::as_str), Some("a&b"));
        assert_eq!(q.states, vec![E2bState::Running, E2bState::Paused]);
        assert!(q.ascending);
        assert_eq!((q.limit, q.offset), (10, 20));
        let d = parse_list_query(None, &[E2bState::Running]);
        assert_eq!(d.states, vec![E2bState::Running]);
        assert_eq!(d.limit, 100);
    }
}
