//! The envd surface's plumbing: routing a request to its sandbox (the
//! `E2b-Sandbox-Id` header or a `49983-{id}.{domain}` Host), checking the
//! access token, the Linux user (`Authorization: Basic <user>:`), and the
//! Connect helpers the process and filesystem services share (unary calls,
//! server streams, reading request envelopes).

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use godel_control::Caller;
use godel_core::{Error, SandboxState};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::registry::{Entry, constant_time_eq};
use super::{State, filesystem, process, sandbox_not_found};
use godel_e2b::connect::{
    Codec, ConnectCode, ConnectError, EnvelopeDecoder, FLAG_END_STREAM, MAX_MESSAGE,
    end_stream_payload, envelope, parse_timeout,
};
use godel_e2b::wire::{ACCESS_TOKEN_HEADER, ENVD_PORT, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER};

/// One authorised envd call: the sandbox and the caller's Linux user.
pub(crate) struct Ctx {
    pub state: Arc<State>,
    pub entry: Arc<Entry>,
    /// The user from `Authorization: Basic` / `username`, `None` for the default `user`.
    pub user: Option<String>,
}

impl Ctx {
    pub fn id(&self) -> &str {
        &self.entry.id
    }
}

/// The sandbox id and port a request is for.
pub(crate) fn target(state: &State, headers: &HeaderMap) -> Option<(String, u16)> {
    let port = headers
        .get(SANDBOX_PORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(ENVD_PORT);
    if let Some(id) = headers
        .get(SANDBOX_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        return Some((id.to_string(), port));
    }
    // `{port}-{id}.{domain}`
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host.split(':').next().unwrap_or(host);
    let (label, domain) = host.split_once('.')?;
    if let Some(d) = &state.cfg.domain
        && d != domain
    {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    Some((id.to_string(), port))
}

/// Resolve the sandbox of an envd request, or the proxy-style answer.
pub(crate) async fn sandbox(
    state: &Arc<State>,
    headers: &HeaderMap,
) -> Result<Arc<Entry>, Response> {
    let Some((id, port)) = target(state, headers) else {
        return Err(connect_error_response(&ConnectError::new(
            ConnectCode::InvalidArgument,
            "missing E2b-Sandbox-Id header (or a {port}-{sandboxID}.{domain} Host)",
        )));
    };
    // The record decides, not the registry: the sandbox may have been
    // stopped or paused through another surface.
    let info = match state.control.visible_sandbox(&Caller::Admin, &id) {
        Ok(info) if info.state == SandboxState::Running => info,
        _ => {
            state.registry.forget(&id);
            return Err(sandbox_not_found(&id));
        }
    };
    let entry = state.registry.learn(&info, &state.cfg.token_secret);
    if port != ENVD_PORT {
        let body = serde_json::json!({
            "sandboxId": id,
            "message": format!("The sandbox is running but port is not open: {port}"),
            "port": port,
            "code": 502,
        });
        return Err((StatusCode::BAD_GATEWAY, axum::Json(body)).into_response());
    }
    Ok(entry)
}

/// Whether the request carries the sandbox's access token.
pub(crate) fn token_ok(entry: &Entry, headers: &HeaderMap) -> bool {
    headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), entry.token.as_bytes()))
}

/// The user named by `Authorization: Basic base64(user:)`.
pub(crate) fn basic_user(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let user = s.split(':').next()?.to_string();
    normalize_user(Some(user))
}

/// `user` (the default) becomes `None`.
pub(crate) fn normalize_user(user: Option<String>) -> Option<String> {
    user.filter(|u| !u.is_empty() && u != "user")
}

/// Resolve the sandbox and check the token for an RPC.
async fn rpc_ctx(state: &Arc<State>, headers: &HeaderMap) -> Result<Ctx, Response> {
    let entry = sandbox(state, headers).await?;
    if !token_ok(&entry, headers) {
        return Err(connect_error_response(&ConnectError::new(
            ConnectCode::Unauthenticated,
            "missing or invalid X-Access-Token",
        )));
    }
    Ok(Ctx {
        state: state.clone(),
        entry,
        user: basic_user(headers),
    })
}

pub(super) async fn process_rpc(
    AxState(state): AxState<Arc<State>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = match rpc_ctx(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    process::dispatch(ctx, &method, headers, body).await
}

pub(super) async fn filesystem_rpc(
    AxState(state): AxState<Arc<State>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = match rpc_ctx(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    filesystem::dispatch(ctx, &method, headers, body).await
}

/// `GET /health`: 204 while the sandbox runs, 502 otherwise.
pub(super) async fn health(AxState(state): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    match sandbox(&state, &headers).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

pub(super) async fn fallback() -> Response {
    super::api_error_status(StatusCode::NOT_FOUND, "no such route")
}

/// A unary Connect error response.
pub(crate) fn connect_error_response(err: &ConnectError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(err.to_json())).into_response()
}

/// Read a whole request body, gunzipping it when `Content-Encoding: gzip`.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Error> {
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map_err(|e| Error::invalid(format!("cannot read request body: {e}")))?;
    let gz = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gz {
        return Ok(bytes);
    }
    super::files::gunzip(&bytes).map(Bytes::from)
}

/// Serve one unary call: decode, run `f` under `Connect-Timeout-Ms`, encode.
pub(crate) async fn unary<Req, Resp, F, Fut>(headers: &HeaderMap, body: Body, f: F) -> Response
where
    Req: prost::Message + Default + DeserializeOwned,
    Resp: prost::Message + Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = godel_core::Result<Resp>>,
{
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let Some(codec) = Codec::from_unary_content_type(ct) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {ct:?} for a unary call"),
        )
            .into_response();
    };
    let bytes = match read_body(headers, body).await {
        Ok(b) => b,
        Err(e) => return connect_error_response(&ConnectError::from_godel(&e)),
    };
    let req: Req = match codec.decode(&bytes) {
        Ok(r) => r,
        Err(e) => return connect_error_response(&ConnectError::from_godel(&e)),
    };
    let fut = f(req);
    let res = match parse_timeout(headers) {
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .unwrap_or_else(|_| Err(Error::timeout("the call's deadline passed"))),
        None => fut.await,
    };
    match res {
        Ok(resp) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, codec.unary_content_type())],
            codec.encode(&resp),
        )
            .into_response(),
        Err(e) => connect_error_response(&ConnectError::from_godel(&e)),
    }
}

/// The codec of a streaming call, or the 415 answer.
pub(crate) fn stream_codec(headers: &HeaderMap) -> Result<Codec, Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Codec::from_stream_content_type(ct).ok_or_else(|| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {ct:?} for a streaming call"),
        )
            .into_response()
    })
}

/// The sending half of a server stream.
pub(crate) struct StreamOut {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    codec: Codec,
}

impl StreamOut {
    /// Send one message; `false` once the client has gone.
    pub async fn send<M: prost::Message + Serialize>(&self, msg: &M) -> bool {
        let payload = self.codec.encode(msg);
        self.tx.send(Ok(envelope(0, &payload))).await.is_ok()
    }

    /// End the stream, with an error or cleanly.
    pub async fn end(self, err: Option<ConnectError>) {
        let payload = end_stream_payload(err.as_ref());
        let _ = self.tx.send(Ok(envelope(FLAG_END_STREAM, &payload))).await;
    }

    /// Drop the connection mid-stream, with no end-of-stream message, as
    /// E2B's proxy does when a sandbox is killed under a running call. The
    /// SDKs take a transport failure, probe `/health` (502 once the sandbox
    /// is gone) and report the sandbox killed; a Connect error here would
    /// read as a timeout instead.
    pub async fn sever(self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other("the sandbox stopped")))
            .await;
    }

    /// End the stream with a godel error.
    pub async fn fail(self, err: &Error) {
        self.end(Some(ConnectError::from_godel(err))).await;
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A streaming response and the handle that feeds it.
pub(crate) fn stream_response(codec: Codec) -> (StreamOut, Response) {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(64);
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, codec.stream_content_type())
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    (StreamOut { tx, codec }, resp)
}

/// Reads request envelopes of a streaming call one by one.
pub(crate) struct StreamIn {
    body: axum::body::BodyDataStream,
    dec: EnvelopeDecoder,
    codec: Codec,
}

impl StreamIn {
    pub fn new(codec: Codec, body: Body) -> Self {
        StreamIn {
            body: body.into_data_stream(),
            dec: EnvelopeDecoder::new(),
            codec,
        }
    }

    /// The next message; `Ok(None)` at the end of the request.
    pub async fn next<M: prost::Message + Default + DeserializeOwned>(
        &mut self,
    ) -> godel_core::Result<Option<M>> {
        loop {
            if let Some(env) = self.dec.next_envelope()? {
                if env.is_end() {
                    return Ok(None);
                }
                return self.codec.decode(&env.data()?).map(Some);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.dec.push(&chunk),
                Some(Err(e)) => {
                    return Err(Error::invalid(format!("cannot read request stream: {e}")));
                }
                None if self.dec.pending() == 0 => return Ok(None),
                None => return Err(Error::invalid("request stream ended inside an envelope")),
            }
        }
    }

    /// The single request message of a server-streaming call.
    pub async fn one<M: prost::Message + Default + DeserializeOwned>(
        &mut self,
    ) -> godel_core::Result<M> {
        Ok(self.next().await?.unwrap_or_default())
    }
}

/// Unknown RPC method.
pub(crate) fn unimplemented(service: &str, method: &str) -> Response {
    connect_error_response(&ConnectError::new(
        ConnectCode::Unimplemented,
        format!("{service}/{method} is not implemented"),
    ))
}
