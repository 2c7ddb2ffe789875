//! Templates that start a server when a sandbox is created from them. The
//! one built in is `code-interpreter-v1` (E2B's name, the default of the
//! `e2b-code-interpreter` SDKs): godel's own code-interpreter server
//! (`templates/code-interpreter/server.py`, Jupyter kernels through
//! `jupyter_client`), installed with its Python packages by
//! `scripts/setup.d/45-code-interpreter.sh` under
//! `/usr/local/lib/godel/code-interpreter`, a directory every worktree
//! sandbox sees read-only (its `/usr`). How a create flows:
//!
//! 1. the sandbox is spawned as any other;
//! 2. the server is started in it as a command that lives as long as the
//!    sandbox, its output kept for the error message;
//! 3. the create answers once the server accepts connections on its port
//!    inside the sandbox (checked from inside), or fails naming the
//!    template and the server's last output, the sandbox removed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use godel_control::Caller;
use godel_core::{Error, ExecEvent, ExecRequest, Result};
use parking_lot::Mutex;

use super::State;

/// E2B's name of the code-interpreter template.
pub const CODE_INTERPRETER: &str = "code-interpreter-v1";
/// The port its server answers on inside the sandbox.
pub const CODE_INTERPRETER_PORT: u16 = 49999;
/// Where the setup script installs it (seen at the same path inside).
pub const CODE_INTERPRETER_DIR: &str = "/usr/local/lib/godel/code-interpreter";

/// Longest wait for a template's server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The server lives as long as its sandbox.
const SERVER_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A template whose sandboxes run a server.
#[derive(Debug, Clone)]
pub struct ServerTemplate {
    pub name: &'static str,
    pub argv: Vec<String>,
    /// An interpreter inside the sandbox for the readiness check.
    pub python: String,
    pub port: u16,
}

/// The built-in template called `name`, if any.
pub fn builtin(name: &str) -> Option<ServerTemplate> {
    let dir = std::env::var("GODEL_CODE_INTERPRETER_DIR")
        .unwrap_or_else(|_| CODE_INTERPRETER_DIR.to_string());
    let python = format!("{dir}/venv/bin/python");
    (name == CODE_INTERPRETER).then(|| ServerTemplate {
        name: CODE_INTERPRETER,
        argv: vec![
            python.clone(),
            format!("{dir}/server.py"),
            "--port".into(),
            CODE_INTERPRETER_PORT.to_string(),
        ],
        python,
        port: CODE_INTERPRETER_PORT,
    })
}

/// Whether the template's server is installed on this host.
pub fn installed(t: &ServerTemplate) -> Result<()> {
    for p in [&t.python, &t.argv[1]] {
        if !std::path::Path::new(p).exists() {
            return Err(Error::unavailable(format!(
                "template {}: {p} is missing; run scripts/setup.d/45-code-interpreter.sh",
                t.name
            )));
        }
    }
    Ok(())
}

/// Start the template's server in sandbox `id` and wait until it answers.
pub async fn start(state: &State, caller: &Caller, id: &str, t: &ServerTemplate) -> Result<()> {
    installed(t)?;
    let mut req = ExecRequest::new(t.argv.clone());
    req.env
        .insert("HOME".into(), godel_core::WORKSPACE_MOUNT.into());
    req.timeout_ms = Some(SERVER_LIFETIME.as_millis() as u64);
    let handle = state.control.exec(caller, id, req).await?;
    let log: Arc<Mutex<(String, Option<i32>)>> = Arc::default();
    let out = log.clone();
    tokio::spawn(async move {
        let mut events = handle.events;
        // Keeping the handle alive keeps the server's pipes open.
        let _keep = (handle.stdin, handle.signal);
        while let Some(ev) = events.next().await {
            let mut o = out.lock();
            match ev {
                ExecEvent::Stdout { data } | ExecEvent::Stderr { data } => {
                    o.0.push_str(&String::from_utf8_lossy(&data));
                    if o.0.len() > 8192 {
                        let cut = o.0.len() - 4096;
                        let cut = (cut..o.0.len())
                            .find(|i| o.0.is_char_boundary(*i))
                            .unwrap_or(0);
                        o.0.drain(..cut);
                    }
                }
                ExecEvent::Exit(st) => o.1 = Some(st.code),
                ExecEvent::Error(e) => {
                    o.0.push_str(&e.message);
                    o.1 = Some(-1);
                }
                ExecEvent::Started { .. } => {}
            }
        }
    });
    let probe = format!(
        "import socket; socket.create_connection(('127.0.0.1', {}), 1).close()",
        t.port
    );
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(code) = log.lock().1 {
            return Err(Error::spawn(format!(
                "template {}: its server exited ({code}): {}",
                t.name,
                log.lock().0.trim()
            )));
        }
        let out = state
            .control
            .exec_collect(
                caller,
                id,
                ExecRequest::new([t.python.as_str(), "-c", probe.as_str()]),
            )
            .await?;
        if out.exit_code == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::timeout(format!(
                "template {}: its server did not answer on port {} within {} s: {}",
                t.name,
                t.port,
                READY_TIMEOUT.as_secs(),
                log.lock().0.trim()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// E2B's template build API: `Template.build()`'s routes are served by
/// [`super::template_build`]; the older ones (v1/v2 creates, build logs)
/// are refused with a message pointing at godel's own (`godel template
/// build`, `POST /v1/templates`), rather than answered with a bare "no such
/// route".
pub(super) fn routes() -> axum::Router<Arc<State>> {
    use super::template_build as tb;
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v3/templates", post(tb::create))
        .route("/v2/templates", post(build_refused))
        .route("/templates", post(build_refused))
        .route("/v2/templates/{id}/builds/{build}", post(tb::start))
        .route("/templates/{id}/builds/{build}", post(build_refused))
        .route("/templates/{id}/builds/{build}/status", get(tb::status))
        .route("/templates/{id}/builds/{build}/logs", get(build_refused))
        .route("/templates/aliases/{alias}", get(alias))
        .route(
            "/templates/{id}/files/{hash}",
            get(tb::file_link)
                .put(tb::file_upload)
                .layer(axum::extract::DefaultBodyLimit::max(1 << 30)),
        )
}

/// `GET /templates/aliases/{alias}` (`Template.exists`): the built-in
/// names are public, a template the caller's team built is its own; other
/// names are 404.
async fn alias(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(alias): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let caller = match super::rest::caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let public = godel_core::BUILTIN_TEMPLATES.contains(&alias.as_str());
    if !public && let Err(e) = state.control.get_template(&caller, None, &alias) {
        return super::api_error(&e);
    }
    axum::Json(serde_json::json!({"templateID": alias, "public": public})).into_response()
}

async fn build_refused() -> axum::response::Response {
    super::api_error_status(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "E2B's API for template builds is not supported by godel: build a template from a Dockerfile with `godel template build --name NAME DIR` (or POST /v1/templates), then create sandboxes with templateID NAME; or start from a snapshot (its snapshotID); the built-in template is code-interpreter-v1",
    )
}

/// Start the server of a sandbox's template again after a restore (resume,
/// fork, create from a snapshot): a restored worktree sandbox has its files
/// but none of its processes. Nothing for templates without a server.
pub async fn restart_after_restore(
    state: &State,
    caller: &Caller,
    info: &godel_core::SandboxInfo,
) -> Result<()> {
    match info.spec.template.as_deref().and_then(builtin) {
        Some(t) => start(state, caller, &info.id, &t).await,
        None => Ok(()),
    }
}
