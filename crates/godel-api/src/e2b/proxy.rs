//! Port URLs: a request whose Host is `<port>-<sandbox-id>.<domain>` (E2B's
//! `get_host(port)` form; any port but envd's 49983) is proxied to that
//! port on the sandbox's own loopback, before any route of the listener is
//! looked at. How it flows:
//! 1. the sandbox record decides: unknown (or stopped) is 404, paused 409;
//! 2. a sandbox created with `allowPublicTraffic: false` needs the
//!    `e2b-traffic-access-token` header (403 without it or with a wrong one);
//! 3. `Control::connect_port` returns a stream connected from inside the
//!    sandbox (worktree: its network namespace; no host port is opened); a
//!    closed port is 502 with a body saying so;
//! 4. the request goes over that stream as HTTP/1.1 with its body streamed,
//!    and the response streams back; a `101 Switching Protocols` answer
//!    (WebSocket) joins the two upgraded connections byte for byte.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use godel_control::Caller;
use godel_core::{ErrorCode, SandboxState};
use godel_e2b::wire::ENVD_PORT;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use super::registry::constant_time_eq;
use super::{State, api_error};

/// Header carrying a private sandbox's traffic token (as E2B names it).
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";
/// Label of a sandbox whose port URLs need the traffic token.
pub const PRIVATE_TRAFFIC_LABEL: &str = "e2b.allow_public_traffic";

/// The traffic token of a sandbox, derived like its envd token.
pub fn traffic_token(secret: &[u8], id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"godel-e2b-traffic\0");
    h.update(secret);
    h.update([0]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

/// The traffic token a create or connect answer shows: only for sandboxes
/// whose URLs are private.
pub(crate) fn traffic_token_of(state: &State, info: &godel_core::SandboxInfo) -> Option<String> {
    (info
        .spec
        .labels
        .get(PRIVATE_TRAFFIC_LABEL)
        .map(String::as_str)
        == Some("false"))
    .then(|| traffic_token(&state.cfg.token_secret, &info.id))
}

/// `(port, sandbox id)` of a `<port>-<id>.<domain>` Host for a port other
/// than envd's; `None` for every other request.
pub(crate) fn port_host(domain: Option<&str>, headers: &HeaderMap) -> Option<(u16, String)> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let (label, rest) = host.split_once('.')?;
    if let Some(d) = domain
        && !rest.eq_ignore_ascii_case(d)
    {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    if port == 0 || port == ENVD_PORT || id.is_empty() {
        return None;
    }
    Some((port, id.to_string()))
}

/// Middleware in front of every route of the E2B listener.
pub(crate) async fn layer(
    AxState(state): AxState<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    match port_host(state.cfg.domain.as_deref(), req.headers()) {
        Some((port, id)) => proxy(&state, &id, port, req).await,
        None => next.run(req).await,
    }
}

fn answer(status: StatusCode, id: &str, port: u16, message: &str) -> Response {
    let body = serde_json::json!({
        "sandboxId": id,
        "port": port,
        "message": message,
        "code": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

async fn proxy(state: &Arc<State>, id: &str, port: u16, mut req: Request) -> Response {
    let rec = match state.control.visible_sandbox(&Caller::Admin, id) {
        Ok(r) => r,
        Err(_) => return answer(StatusCode::NOT_FOUND, id, port, "The sandbox was not found"),
    };
    if rec.state == SandboxState::Paused || (rec.state.is_terminal() && rec.parked.is_some()) {
        return answer(
            StatusCode::CONFLICT,
            id,
            port,
            "The sandbox is paused; resume it (connect) to reach its ports",
        );
    }
    if rec.state.is_terminal() {
        return answer(StatusCode::NOT_FOUND, id, port, "The sandbox was not found");
    }
    if rec
        .spec
        .labels
        .get(PRIVATE_TRAFFIC_LABEL)
        .map(String::as_str)
        == Some("false")
    {
        let want = traffic_token(&state.cfg.token_secret, id);
        let got = req
            .headers()
            .get(TRAFFIC_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        match got {
            Some(t) if constant_time_eq(t.trim().as_bytes(), want.as_bytes()) => {}
            Some(_) => {
                return answer(
                    StatusCode::FORBIDDEN,
                    id,
                    port,
                    "Invalid traffic access token",
                );
            }
            None => {
                return answer(
                    StatusCode::FORBIDDEN,
                    id,
                    port,
                    "Missing traffic access token: this sandbox's URLs are private (send the e2b-traffic-access-token header)",
                );
            }
        }
    }
    let stream = match state.control.connect_port_of(&rec, port).await {
        Ok(s) => s,
        Err(e) if e.code == ErrorCode::Unavailable => {
            return answer(
                StatusCode::BAD_GATEWAY,
                id,
                port,
                &format!(
                    "The sandbox is running but port is not open: {port} ({})",
                    e.message
                ),
            );
        }
        Err(e) if e.code == ErrorCode::NotFound => {
            return answer(StatusCode::NOT_FOUND, id, port, "The sandbox was not found");
        }
        Err(e) => return api_error(&e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            return answer(
                StatusCode::BAD_GATEWAY,
                id,
                port,
                &format!("cannot talk HTTP to port {port}: {e}"),
            );
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_headers(req.headers_mut(), upgrade);
    req.headers_mut().remove(TRAFFIC_TOKEN_HEADER);
    if let Some(mask) = rec.spec.labels.get(super::network::MASK_HOST_LABEL)
        && let Ok(v) = HeaderValue::from_str(&mask.replace("${PORT}", &port.to_string()))
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    let mut resp = match sender
        .send_request(axum::http::Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_GATEWAY,
                id,
                port,
                &format!("port {port} closed the connection without an HTTP answer: {e}"),
            );
        }
    };
    if crate::forward::splice_upgrade(&mut client_upgrade, &mut resp) {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_headers(&mut parts.headers, false);
    Response::from_parts(parts, Body::new(body))
}

/// Drop the hop-by-hop headers (RFC 9110 §7.6.1), keeping `Connection:
/// upgrade` and `Upgrade` when the request asks for one.
fn strip_hop_headers(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty() && s != "upgrade")
        .collect();
    for n in named {
        h.remove(n.as_str());
    }
    for n in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        h.remove(n);
    }
    h.remove(header::CONNECTION);
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn port_hosts_parse_and_envd_is_left_alone() {
        assert_eq!(
            port_host(Some("localhost"), &host("8000-rt-ab12.localhost:3000")),
            Some((8000, "rt-ab12".into()))
        );
        assert_eq!(
            port_host(Some("localhost"), &host("8000-rt-ab12.localhost")),
            Some((8000, "rt-ab12".into()))
        );
        assert_eq!(
            port_host(Some("localhost"), &host("49983-rt-ab12.localhost")),
            None
        );
        assert_eq!(
            port_host(Some("localhost"), &host("8000-rt-ab12.other.dev")),
            None
        );
        assert_eq!(port_host(Some("localhost"), &host("127.0.0.1:3000")), None);
        assert_eq!(
            port_host(None, &host("80-rt-x.e2b.example")),
            Some((80, "rt-x".into()))
        );
        assert_eq!(port_host(None, &host("api.example.com")), None);
    }

    #[test]
    fn hop_headers_go_but_upgrade_stays_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, X-Hop"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        strip_hop_headers(&mut h, true);
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        strip_hop_headers(&mut h, false);
        assert!(h.get(header::UPGRADE).is_none() && h.get(header::CONNECTION).is_none());
    }
}
