//! godel-api: every wire protocol godel speaks, over the control plane.
//! The native REST API: routes parse requests into `Control` calls
//! ([`routes`]); [`auth`] decides who the caller is; [`error`] renders every
//! failure as `{code, message, retryable}`. Served on the Unix socket (owner
//! = admin) and, when asked, on TCP where a bearer token is required.
//! The E2B-compatible API ([`e2b`]) makes the same `Control` calls.
//! [`daemon`] runs the whole daemon from start to stop.

pub mod auth;
pub mod daemon;
pub mod e2b;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod openapi;
pub mod replica;
pub mod routes;
pub mod ui;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use godel_control::Control;

/// The app served on the Unix socket: every caller is admin.
pub fn socket_app(control: Arc<Control>) -> Router {
    let fwd = forward::Forwarder::new(
        control.clone(),
        forward::Api::Native,
        control.forward_token(),
    );
    routes::router(control)
        .layer(from_fn_with_state(fwd, forward::layer))
        .layer(from_fn(auth::socket_owner))
        .layer(map_response(error::normalize_errors))
}

/// The app served on TCP: a bearer token is required on every route but
/// the dashboard's static assets under `/ui` (see [`ui`] for why).
pub fn tcp_app(control: Arc<Control>) -> Router {
    let fwd = forward::Forwarder::new(control.clone(), forward::Api::Native, None);
    routes::router(control.clone())
        .layer(from_fn_with_state(fwd, forward::layer))
        .layer(from_fn_with_state(control, auth::bearer))
        .merge(ui::router())
        .layer(map_response(error::normalize_errors))
}

/// Bind the Unix socket with mode 0600, replacing a stale socket file.
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another godel daemon is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Create the socket under a restrictive umask so it is never reachable by others.
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve on a Unix listener until `shutdown` resolves.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, socket_app(control))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serve on a TCP listener until `shutdown` resolves. Handlers see the
/// peer's address (`ConnectInfo`), which the failed-authentication limit keys on.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = tcp_app(control).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
