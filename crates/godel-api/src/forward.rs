//! Forwarding between replicas: any replica answers any request. A request
//! for a sandbox that another live replica owns is sent, as it came
//! (method, path, headers, streamed body, WebSocket upgrades), to the
//! address that replica advertises, and its answer is streamed back.
//!
//! The sandbox is named by the native path (`/v1/runtimes/{id}/…`), the
//! E2B path (`/sandboxes/{id}/…`), an E2B sandbox Host
//! (`<port>-<id>.<domain>`) or the `E2b-Sandbox-Id` header. A forwarded
//! request carries [`FORWARDED_BY`] and is never forwarded again, so two
//! replicas that disagree about an owner cannot bounce a request forever.
//! Requests on the Unix socket carry no token; they are forwarded with this
//! replica's own admin token (minted when it joined).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use godel_control::{Control, Owner, Route};
use godel_core::{Error, ErrorCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::error::ApiError;

/// Set on a forwarded request: the replica that forwarded it.
pub const FORWARDED_BY: &str = "x-godel-forwarded-by";
/// Set on every answer that another replica gave: the replica that did.
pub const ANSWERED_BY: &str = "x-godel-replica";

/// Which API a forwarder serves (the peer's matching address is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Native,
    E2b,
}

/// The forwarding layer's state.
#[derive(Clone)]
pub struct Forwarder {
    control: Arc<Control>,
    api: Api,
    client: Client<HttpConnector, Body>,
    /// Credentials for requests that arrived without any (the Unix socket).
    token: Option<String>,
}

impl Forwarder {
    pub fn new(control: Arc<Control>, api: Api, token: Option<String>) -> Forwarder {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Forwarder {
            control,
            api,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(std::time::Duration::from_secs(30))
                .build(http),
            token,
        }
    }
}

/// The sandbox a request is about, if any.
pub fn sandbox_of(api: Api, req: &Request) -> Option<String> {
    let path = req.uri().path();
    let from_path = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.split('/').next())
            .filter(|id| !id.is_empty())
            .map(String::from)
    };
    match api {
        Api::Native => from_path("/v1/runtimes/"),
        Api::E2b => from_path("/sandboxes/")
            .or_else(|| {
                req.headers()
                    .get(godel_e2b::wire::SANDBOX_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| host_sandbox(req.headers().get(header::HOST)?.to_str().ok()?)),
    }
}

/// `<port>-<id>.<domain>` → id.
fn host_sandbox(host: &str) -> Option<String> {
    let (label, _) = host.split_once('.')?;
    let (port, id) = label.split_once('-')?;
    (port.parse::<u16>().is_ok() && !id.is_empty()).then(|| id.to_string())
}

/// The middleware: forward to the owner, or serve here.
pub async fn layer(State(f): State<Forwarder>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(FORWARDED_BY) {
        return next.run(req).await;
    }
    let Some(id) = sandbox_of(f.api, &req) else {
        return next.run(req).await;
    };
    // One indexed read (two when another replica owns it), like every
    // handler's own record lookup.
    let route = match f.control.route(&id) {
        Ok(Route::Orphaned(_)) => f.control.route_after_takeover(&id).await,
        r => r,
    };
    let owner = match route {
        Ok(Route::Owner(o)) => o,
        Ok(_) => return next.run(req).await,
        Err(e) => return ApiError(e).into_response(),
    };
    // A record read needs only the shared store: while its owner does not
    // answer (killed, its lease not yet run out), answer it here.
    if is_record_read(f.api, &req) {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, 1 << 20).await {
            Ok(b) => b,
            Err(e) => {
                return ApiError(Error::invalid(format!("request body: {e}"))).into_response();
            }
        };
        let copy = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        match forward(&f, &id, &owner, copy).await {
            Ok(r) => return r,
            Err(e) if e.code == ErrorCode::Unavailable => {
                tracing::debug!(sandbox = %id, "owner unreachable; answering a record read from the store");
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            }
            Err(e) => return ApiError(e).into_response(),
        }
    }
    forward(&f, &id, &owner, req)
        .await
        .unwrap_or_else(|e| ApiError(e).into_response())
}

/// `GET` of a sandbox's record itself (native status, E2B info).
fn is_record_read(api: Api, req: &Request) -> bool {
    if req.method() != axum::http::Method::GET {
        return false;
    }
    let path = req.uri().path().trim_end_matches('/');
    let prefix = match api {
        Api::Native => "/v1/runtimes/",
        Api::E2b => "/sandboxes/",
    };
    path.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

async fn forward(
    f: &Forwarder,
    id: &str,
    owner: &Owner,
    mut req: Request,
) -> Result<Response, Error> {
    let base = match f.api {
        Api::Native => &owner.advertise,
        Api::E2b => &owner.advertise_e2b,
    };
    if base.is_empty() {
        return Err(Error::new(
            ErrorCode::Unavailable,
            format!(
                "sandbox {id} is held by replica {}, which advertises no {} address (start it with --advertise)",
                owner.replica,
                match f.api {
                    Api::Native => "native API",
                    Api::E2b => "E2B API",
                }
            ),
        ));
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let uri: axum::http::Uri = format!("{}{pq}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| Error::internal(format!("replica {} address {base:?}: {e}", owner.replica)))?;
    let me = f.control.replica_id().unwrap_or("").to_string();
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    if let Ok(v) = HeaderValue::from_str(&me) {
        parts.headers.insert(FORWARDED_BY, v);
    }
    if !parts.headers.contains_key(header::AUTHORIZATION)
        && let Some(t) = &f.token
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}"))
    {
        parts.headers.insert(header::AUTHORIZATION, v);
    }
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::new(
            ErrorCode::Unavailable,
            format!(
                "sandbox {id} is held by replica {} at {base}, which does not answer: {e}",
                owner.replica
            ),
        )
    };
    let mut resp = f
        .client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| unreachable(&e))?;
    if splice_upgrade(&mut client_upgrade, &mut resp) {
        let (mut parts, _) = resp.into_parts();
        stamp(&mut parts.headers, &owner.replica);
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    stamp(&mut parts.headers, &owner.replica);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// When `resp` switches protocols and the client asked to, join the
/// client's upgraded connection to the upstream's (in a task) and answer
/// `true`: the caller then returns the 101 with an empty body.
pub(crate) fn splice_upgrade(
    client: &mut Option<hyper::upgrade::OnUpgrade>,
    resp: &mut axum::http::Response<hyper::body::Incoming>,
) -> bool {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let Some(client) = client.take() else {
        return false;
    };
    let upstream = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
        }
    });
    true
}

fn stamp(h: &mut axum::http::HeaderMap, replica: &str) {
    if let Ok(v) = HeaderValue::from_str(replica) {
        h.insert(ANSWERED_BY, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, host: Option<&str>, header_id: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(path);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        if let Some(i) = header_id {
            b = b.header(godel_e2b::wire::SANDBOX_ID_HEADER, i);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_sandbox_is_found_wherever_a_request_names_it() {
        assert_eq!(
            sandbox_of(Api::Native, &req("/v1/runtimes/rt-1/exec", None, None)).as_deref(),
            Some("rt-1")
        );
        assert_eq!(
            sandbox_of(Api::Native, &req("/v1/runtimes", None, None)),
            None
        );
        assert_eq!(
            sandbox_of(Api::Native, &req("/v1/snapshots/s", None, None)),
            None
        );
        assert_eq!(
            sandbox_of(Api::E2b, &req("/sandboxes/ab12/timeout", None, None)).as_deref(),
            Some("ab12")
        );
        assert_eq!(
            sandbox_of(
                Api::E2b,
                &req("/files", Some("49983-ab12.localhost:3000"), None)
            )
            .as_deref(),
            Some("ab12")
        );
        assert_eq!(
            sandbox_of(
                Api::E2b,
                &req("/files", Some("127.0.0.1:3000"), Some("cd34"))
            )
            .as_deref(),
            Some("cd34")
        );
        assert_eq!(
            sandbox_of(Api::E2b, &req("/sandboxes", Some("localhost"), None)),
            None
        );
    }
}
