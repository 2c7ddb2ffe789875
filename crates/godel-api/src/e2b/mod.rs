//! The E2B-compatible server: E2B's control-plane REST API and the envd
//! surface (Connect RPC + `/files` + `/health`) on one address, so the
//! official SDKs work with only `E2B_API_URL`, `E2B_SANDBOX_URL` and
//! `E2B_API_KEY` set. Like the native routes, every handler is a call on
//! [`Control`], scoped to the team of the API key; the wire types and the
//! Connect codec come from `godel_e2b`.
//!
//! How a request flows:
//! 1. REST (`/sandboxes…`, `/v2/sandboxes…`): `X-API-Key` (a godel team
//!    token) → team; the handler calls `Control` ([`rest`]). Deadlines
//!    (`timeout`), auto-pause and pause/connect are the control plane's time
//!    to live and parking: one reaper there serves both APIs.
//! 2. envd (`/process.Process/*`, `/filesystem.Filesystem/*`, `/files`,
//!    `/health`): the sandbox comes from the `E2b-Sandbox-Id` header or a
//!    `49983-{id}.{domain}` Host; `X-Access-Token` (or a signed URL on
//!    `/files`) is checked against the sandbox's token ([`envd`]). A paused or
//!    killed sandbox answers 502 "The sandbox was not found", as E2B's proxy does.
//! 3. Processes live in a per-sandbox table so background commands, `Connect`,
//!    `List`, stdin and signals work ([`process`]); the table is dropped when
//!    the control plane reports the sandbox stopped.

// Handlers return a finished `Response` as their early-exit error; boxing it
// would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

/// In a handler returning `Response`: the value, or return the error
/// response as it is.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

/// In a handler returning `Response`: the value, or return the godel error
/// as E2B's JSON error (`api_error` of the calling module's scope).
macro_rules! trb {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return api_error(&err),
        }
    };
}

mod envd;
mod files;
pub(crate) mod filesystem;
mod network;
mod port_header;
pub(crate) mod process;
pub(crate) mod proxy;
mod registry;
mod rest;
mod snapshots;
mod template_build;
mod templates;
mod volumes;

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use godel_control::{Caller, Control};
use godel_core::{Error, SandboxInfo, SandboxState};
use godel_e2b::wire::{ApiError, ENVD_VERSION};
use registry::Registry;

pub use files::signature;
pub use proxy::{PRIVATE_TRAFFIC_LABEL, TRAFFIC_TOKEN_HEADER, traffic_token};
pub use registry::{META_PREFIX, access_token};

/// How the E2B surface behaves. `Debug` leaves the token secret out.
#[derive(Clone)]
pub struct ServeConfig {
    /// Sandbox domain returned in create/connect responses and accepted in
    /// `{port}-{id}.{domain}` Host headers (envd on 49983, port URLs on the
    /// others). `None` returns `domain: null` (clients then use
    /// `E2B_SANDBOX_URL` or their own `E2B_DOMAIN`) and accepts any domain.
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
            watch_interval: Duration::from_millis(200),
        }
    }
}

/// Shared server state.
pub(crate) struct State {
    pub control: Arc<Control>,
    pub cfg: ServeConfig,
    pub registry: Registry,
}

impl State {
    /// A sandbox record as E2B sees it: live, or parked as paused (shown
    /// `paused`); anything else (stopped, failed, another team's) is `NOT_FOUND`.
    pub fn record(&self, caller: &Caller, id: &str) -> godel_core::Result<SandboxInfo> {
        let r = self.control.visible_sandbox(caller, id)?;
        present(r).ok_or_else(|| Error::not_found(format!("sandbox {id} not found")))
    }

    /// Whether a sandbox is running now.
    pub fn is_running(&self, id: &str) -> bool {
        self.control
            .visible_sandbox(&Caller::Admin, id)
            .is_ok_and(|r| r.state == SandboxState::Running)
    }
}

/// A parked sandbox is shown as `paused`; other stopped ones are not shown.
pub(crate) fn present(mut r: SandboxInfo) -> Option<SandboxInfo> {
    if !r.state.is_terminal() {
        return Some(r);
    }
    if r.parked.is_some() {
        r.state = SandboxState::Paused;
        return Some(r);
    }
    None
}

/// The E2B-compatible server. Cheap to clone.
#[derive(Clone)]
pub struct E2bServer {
    state: Arc<State>,
}

/// Build the E2B router over the control plane and, inside a Tokio runtime,
/// start dropping the live state of sandboxes that stop. This is what
/// `godel serve --e2b-listen ADDR` mounts. Deadlines are enforced by the
/// control plane's reaper ([`Control::start_reaper`]).
pub fn router(control: Arc<Control>, cfg: ServeConfig) -> Router {
    let server = E2bServer::new(control, cfg);
    if tokio::runtime::Handle::try_current().is_ok() {
        server.follow_events();
    }
    server.router()
}

impl E2bServer {
    pub fn new(control: Arc<Control>, cfg: ServeConfig) -> Self {
        E2bServer {
            state: Arc::new(State {
                control,
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
            // Port URLs (`<port>-<id>.<domain>`) go to the sandbox, whatever the path.
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                proxy::layer,
            ))
            // Header-addressed ports (`E2b-Sandbox-Port`) become port URLs first.
            .layer(axum::middleware::from_fn_with_state(
                self.state.cfg.domain.clone(),
                port_header::layer,
            ))
            // A sandbox another replica owns is served by that replica.
            .layer(axum::middleware::from_fn_with_state(
                crate::forward::Forwarder::new(
                    self.state.control.clone(),
                    crate::forward::Api::E2b,
                    None,
                ),
                crate::forward::layer,
            ))
            .with_state(self.state.clone())
    }

    /// End the command streams and watchers of sandboxes the control plane
    /// reports stopped (killed, timed out, parked, died), as envd's end
    /// when its VM goes. Stops when every clone of the server is dropped.
    pub fn follow_events(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<State> = Arc::downgrade(&self.state);
        let mut rx = self.state.control.subscribe();
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(state) = weak.upgrade() else { return };
                let stopped = ev.kind == godel_core::EventKind::StateChanged
                    && ev
                        .data
                        .get("state")
                        .and_then(|s| s.as_str())
                        .is_some_and(|s| matches!(s, "terminating" | "terminated" | "error"));
                if let (true, Some(id)) = (stopped, &ev.runtime_id) {
                    state.registry.forget(id);
                }
            }
        })
    }

    /// The envd access token of a sandbox.
    pub fn access_token(&self, id: &str) -> String {
        access_token(&self.state.cfg.token_secret, id)
    }
}

/// Serve the E2B-compatible API on a TCP listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(control, cfg))
        .with_graceful_shutdown(shutdown)
        .await
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
