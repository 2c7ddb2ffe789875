//! `GET /v1/runtimes/{id}/ports/{port}`: a port inside a sandbox, natively.
//! Plain, it connects once and answers `PortInfo` (`open: true`), or the
//! error (`UNAVAILABLE` for a closed port). With `Connection: upgrade` and
//! `Upgrade: tcp` it answers `101 Switching Protocols` and the connection
//! becomes a raw byte tunnel to the port (what `godel forward` uses). The
//! stream comes from `Control::connect_port`, like the E2B port URLs.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use godel_control::{Caller, Control};
use godel_core::port::validate_port;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::error::ApiResult;

/// The protocol name of a raw tunnel (`Upgrade: tcp`).
pub const TUNNEL_PROTOCOL: &str = "tcp";

/// A port that answered.
#[derive(Debug, Serialize)]
pub struct PortInfo {
    pub runtime_id: String,
    pub port: u16,
    pub open: bool,
}

fn wants_tunnel(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_PROTOCOL))
}

pub async fn port(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path((id, port)): Path<(String, u32)>,
    mut req: Request,
) -> ApiResult<Response> {
    let port = validate_port(port)?;
    let stream = c.connect_port(&caller, &id, port).await?;
    if !wants_tunnel(&req) {
        drop(stream);
        return Ok(Json(PortInfo {
            runtime_id: id,
            port,
            open: true,
        })
        .into_response());
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let mut stream = stream;
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(up), &mut stream).await;
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_PROTOCOL));
    Ok(resp)
}
