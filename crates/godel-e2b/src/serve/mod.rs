//! The E2B-compatible server: the control-plane REST API and the envd surface
//! (Connect RPC + `/files` + `/health`) on one address, so the official SDKs
//! work with only `E2B_API_URL`, `E2B_SANDBOX_URL` and `E2B_API_KEY` set.
//!
//! How a request flows:
//! 1. REST (`/sandboxes…`, `/v2/sandboxes…`): `X-API-Key` → [`E2bBackend::authenticate`]
//!    → team; the handler calls the backend in godel terms ([`rest`]).
//! 2. envd (`/process.Process/*`, `/filesystem.Filesystem/*`, `/files`,
//!    `/health`): the sandbox comes from the `E2b-Sandbox-Id` header or a
//!    `49983-{id}.{domain}` Host; `X-Access-Token` (or a signed URL on
//!    `/files`) is checked against the sandbox's token ([`envd`]). A paused or
//!    killed sandbox answers 502 "The sandbox was not found", as E2B's proxy does.
//! 3. Processes live in a per-sandbox table so background commands, `Connect`,
//!    `List`, stdin and signals work ([`process`]).
//! 4. A reaper kills (or, with auto-pause, pauses) sandboxes whose time ran out.

// Handlers return a finished `Response` as their early-exit error; boxing it
// would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

pub mod backend;
mod book;
mod envd;
mod files;
pub(crate) mod filesystem;
pub(crate) mod process;
mod rest;

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use godel_core::{Error, RuntimeState};

pub use backend::E2bBackend;
use book::Registry;
pub use book::labels;
pub use files::signature;

use crate::wire::{ApiError, ENVD_VERSION};

/// How the E2B surface behaves. `Debug` leaves the token secret out.
#[derive(Clone)]
pub struct ServeConfig {
    /// Sandbox domain returned in create/connect responses and accepted in
    /// `49983-{id}.{domain}` Host headers. `None` returns `domain: null`
    /// (clients then use `E2B_SANDBOX_URL` or their own `E2B_DOMAIN`).
    pub domain: Option<String>,
    /// The advertised envd version (≥ 0.6.4 unlocks every SDK feature).
    pub envd_version: String,
    /// `clientID` in responses (deprecated by E2B, still required by the SDK).
    pub client_id: String,
    /// Secret the per-sandbox envd access tokens derive from. Keep it stable
    /// across restarts (the daemon stores one) or tokens change.
    pub token_secret: Vec<u8>,
    /// Lifetime of a sandbox created without `timeout`.
    pub default_timeout: Duration,
    /// Longest lifetime a client may ask for.
    pub max_timeout: Duration,
    /// How often the reaper looks for expired sandboxes.
    pub reaper_interval: Duration,
    /// How often directory watchers poll.
    pub watch_interval: Duration,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("domain", &self.domain)
            .field("envd_version", &self.envd_version)
            .field("client_id", &self.client_id)
            .field("token_secret", &"<redacted>")
            .field("default_timeout", &self.default_timeout)
            .field("max_timeout", &self.max_timeout)
            .field("reaper_interval", &self.reaper_interval)
            .field("watch_interval", &self.watch_interval)
            .finish()
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            domain: None,
            envd_version: ENVD_VERSION.to_string(),
            client_id: "godel".to_string(),
            token_secret: uuid::Uuid::new_v4().as_bytes().to_vec(),
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            reaper_interval: Duration::from_secs(1),
            watch_interval: Duration::from_millis(200),
        }
    }
}

/// Shared server state.
pub(crate) struct State {
    pub backend: Arc<dyn E2bBackend>,
    pub cfg: ServeConfig,
    pub registry: Registry,
}

/// The E2B-compatible server. Cheap to clone.
#[derive(Clone)]
pub struct E2bServer {
    state: Arc<State>,
}

/// Build the E2B router and start its reaper (when called inside a Tokio
/// runtime). This is what `godel serve --e2b-listen ADDR` mounts.
pub fn router(backend: Arc<dyn E2bBackend>, cfg: ServeConfig) -> Router {
    let server = E2bServer::new(backend, cfg);
    if tokio::runtime::Handle::try_current().is_ok() {
        server.spawn_reaper();
    }
    server.router()
}

impl E2bServer {
    pub fn new(backend: Arc<dyn E2bBackend>, cfg: ServeConfig) -> Self {
        E2bServer {
            state: Arc::new(State {
                backend,
                cfg,
                registry: Registry::default(),
            }),
        }
    }

    /// The axum router serving REST and envd routes.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(rest::routes())
            .route("/process.Process/{method}", post(envd::process_rpc))
            .route(
                "/filesystem.Filesystem/{method}",
                post(envd::filesystem_rpc),
            )
            .route("/files", get(files::download).post(files::upload))
            .route("/health", get(envd::health))
            .fallback(envd::fallback)
            // Bounds the JSON bodies of the REST routes (read before auth);
            // envd routes stream their bodies and apply their own limits.
            .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
            .with_state(self.state.clone())
    }

    /// Start the reaper task. It stops when every clone of the server is dropped.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<State> = Arc::downgrade(&self.state);
        let interval = self.state.cfg.reaper_interval;
        tokio::spawn(async move {
            if let Some(state) = weak.upgrade() {
                adopt_all(&state).await;
            }
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                reap(&state, Utc::now()).await;
            }
        })
    }

    /// Kill or pause every sandbox whose deadline is at or before `now`.
    /// Returns the ids acted on. The reaper calls this every tick.
    pub async fn reap_expired(&self, now: DateTime<Utc>) -> Vec<String> {
        reap(&self.state, now).await
    }

    /// The envd access token of a sandbox.
    pub fn access_token(&self, id: &str) -> String {
        book::access_token(&self.state.cfg.token_secret, id)
    }
}

/// Learn every live runtime so deadlines set before a restart are enforced.
async fn adopt_all(state: &State) {
    match state.backend.list_all().await {
        Ok(all) => {
            for info in all {
                if matches!(info.state, RuntimeState::Running | RuntimeState::Paused) {
                    state.registry.learn(&info, &state.cfg.token_secret);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "e2b: cannot list runtimes at start"),
    }
}

async fn reap(state: &State, now: DateTime<Utc>) -> Vec<String> {
    let mut acted = Vec::new();
    for e in state.registry.all() {
        let b = e.book();
        let expired = b.state == RuntimeState::Running && b.end_at.is_some_and(|t| t <= now);
        if !expired {
            continue;
        }
        let res = if b.auto_pause {
            e.clear_live();
            let r = state.backend.pause(&e.team, &e.id).await;
            if r.is_ok() {
                e.update(|b| b.state = RuntimeState::Paused);
            }
            r
        } else {
            e.clear_live();
            let r = state.backend.kill(&e.team, &e.id).await;
            if r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.code == godel_core::ErrorCode::NotFound)
            {
                state.registry.forget(&e.id);
                Ok(())
            } else {
                r
            }
        };
        match res {
            Ok(()) => {
                tracing::info!(sandbox = %e.id, pause = b.auto_pause, "e2b: sandbox timed out");
                acted.push(e.id.clone());
            }
            Err(err) => tracing::warn!(sandbox = %e.id, error = %err, "e2b: reaping failed"),
        }
    }
    acted
}

/// A REST error: `{"code":<status>,"message":…}` with godel's status mapping.
pub(crate) fn api_error(err: &Error) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    api_error_status(status, &err.message)
}

pub(crate) fn api_error_status(status: StatusCode, message: &str) -> Response {
    let body = ApiError {
        code: i32::from(status.as_u16()),
        message: message.to_string(),
    };
    (status, axum::Json(body)).into_response()
}

/// What E2B's proxy answers for a sandbox that is not running.
pub(crate) fn sandbox_not_found(id: &str) -> Response {
    let body = serde_json::json!({
        "sandboxId": id,
        "message": "The sandbox was not found",
        "code": 502,
    });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}
