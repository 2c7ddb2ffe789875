//! The HTTP client of the `e2b` runtime: REST calls to the control plane
//! (`X-API-Key`), Connect calls and `/files` to a sandbox's envd
//! (`X-Access-Token`, `E2b-Sandbox-Id`), with retries and error mapping.
//!
//! Errors (documented and tested):
//! - a rejected API key (HTTP 401) is `UNAUTHENTICATED`, 403 is `PERMISSION_DENIED`;
//! - a sandbox that is gone (404, or envd's proxy answering 502 "sandbox
//!   was not found") is `NOT_FOUND`;
//! - an endpoint that does not answer (connection refused, reset) or answers
//!   429/502/503/504 is `UNAVAILABLE` (429: `RESOURCE_EXHAUSTED`) with
//!   `retryable = true`; a request timeout is `TIMEOUT`, retryable.
//!
//! Retries follow SPEC-002 §6.3: up to `max_retries` (3) more attempts with
//! exponential backoff (1 s, 2 s, 4 s), only for retryable errors. Creates
//! carry an `Idempotency-Key` so a retried create cannot make two sandboxes.

use std::time::Duration;

use godel_core::{Error, ErrorCode, Event, EventSink, Result};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connect::{Codec, ConnectError, envelope};
use crate::wire::{
    ACCESS_TOKEN_HEADER, API_KEY_HEADER, ENVD_PORT, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER,
};

/// Retry policy for retryable failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first (SPEC-002: 3).
    pub max_retries: u32,
    /// Delay before the first retry; doubled each time (SPEC-002: 1 s).
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
        }
    }
}

/// How to reach one sandbox's envd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvdTarget {
    pub sandbox_id: String,
    pub base_url: String,
    pub token: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Client {
    pub http: reqwest::Client,
    pub api_url: String,
    pub api_key: String,
    pub retry: RetryPolicy,
    pub events: EventSink,
    /// Bound on each non-streaming request (REST, unary RPC, file transfer).
    pub request_timeout: Duration,
}

/// A transport failure as a godel error.
pub(crate) fn transport_error(what: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::timeout(format!("{what}: request timed out: {e}"))
    } else {
        Error::unavailable(format!("{what}: endpoint unreachable: {e}")).retryable(true)
    }
}

/// An HTTP error answer as a godel error.
pub(crate) fn status_error(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let msg = format!("{what}: HTTP {}: {msg}", status.as_u16());
    match status.as_u16() {
        401 => Error::unauthenticated(msg),
        403 => Error::denied(msg),
        404 => Error::not_found(msg),
        409 => Error::conflict(msg),
        400 | 422 => Error::invalid(msg),
        508 => Error::invalid(msg),
        429 => Error::exhausted(msg),
        // The proxy's answer for a killed or paused sandbox.
        502 if msg.contains("was not found") => Error::not_found(msg),
        502..=504 => Error::unavailable(msg).retryable(true),
        _ => Error::internal(msg),
    }
}

impl Client {
    /// Run `attempt` until it succeeds, fails for good, or retries run out.
    pub async fn with_retries<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut n = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable && n < self.retry.max_retries => {
                    let delay = self.retry.base_delay * 2u32.pow(n);
                    n += 1;
                    (self.events)(Event::new(godel_core::EventKind::E2bRetry).data(
                        serde_json::json!({
                            "call": what,
                            "attempt": n,
                            "delay_ms": delay.as_millis() as u64,
                            "error": e.to_string(),
                        }),
                    ));
                    tracing::debug!(call = what, attempt = n, error = %e, "e2b: retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One REST call (no retry). `Ok(None)` for an empty 2xx body.
    pub async fn rest_once<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Option<T>)> {
        let url = format!("{}{}", self.api_url.trim_end_matches('/'), path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .timeout(self.request_timeout)
            .header(API_KEY_HEADER, &self.api_key);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("{method} {path}");
        let resp = req.send().await.map_err(|e| transport_error(&what, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport_error(&what, &e))?;
        if !status.is_success() {
            return Err(status_error(&what, status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, None));
        }
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("{what}: unexpected response: {e}")))?;
        Ok((status, Some(v)))
    }

    /// A REST call with retries.
    pub async fn rest<B: Serialize + ?Sized + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Option<T>)> {
        let what = format!("{method} {path}");
        self.with_retries(&what, || {
            self.rest_once(method.clone(), path, body, idempotency_key)
        })
        .await
    }

    /// `POST /sandboxes` with an idempotency key and the loop-guard hop count.
    pub async fn create<B: Serialize + Sync>(
        &self,
        body: &B,
        idempotency_key: &str,
        hops: u32,
    ) -> Result<(StatusCode, Option<crate::wire::Sandbox>)> {
        let url = format!("{}/sandboxes", self.api_url.trim_end_matches('/'));
        self.with_retries("POST /sandboxes", || async {
            let resp = self
                .http
                .post(&url)
                .timeout(self.request_timeout)
                .header(API_KEY_HEADER, &self.api_key)
                .header("idempotency-key", idempotency_key)
                .header(crate::wire::HOPS_HEADER, hops.to_string())
                .json(body)
                .send()
                .await
                .map_err(|e| transport_error("POST /sandboxes", &e))?;
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| transport_error("POST /sandboxes", &e))?;
            if !status.is_success() {
                return Err(status_error("POST /sandboxes", status, &bytes));
            }
            let sb = serde_json::from_slice(&bytes).map_err(|e| {
                Error::internal(format!("POST /sandboxes: unexpected response: {e}"))
            })?;
            Ok((status, Some(sb)))
        })
        .await
    }

    fn envd_request(&self, t: &EnvdTarget, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{}", t.base_url.trim_end_matches('/'), path);
        let mut req = self
            .http
            .request(method, url)
            .header(SANDBOX_ID_HEADER, &t.sandbox_id)
            .header(SANDBOX_PORT_HEADER, ENVD_PORT.to_string());
        if let Some(tok) = &t.token {
            req = req.header(ACCESS_TOKEN_HEADER, tok);
        }
        req
    }

    /// One unary Connect call with the JSON codec, with retries.
    pub async fn unary<Req, Resp>(&self, t: &EnvdTarget, rpc: &str, req: &Req) -> Result<Resp>
    where
        Req: prost::Message + Serialize + Sync,
        Resp: prost::Message + Default + DeserializeOwned,
    {
        let body = Codec::Json.encode(req);
        self.with_retries(rpc, || async {
            let resp = self
                .envd_request(t, Method::POST, &format!("/{rpc}"))
                .timeout(self.request_timeout)
                .header("content-type", "application/json")
                .header("connect-protocol-version", "1")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| transport_error(rpc, &e))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| transport_error(rpc, &e))?;
            if status.is_success() {
                return Codec::Json.decode(&bytes);
            }
            Err(connect_failure(rpc, status, &bytes))
        })
        .await
    }

    /// Open a server-streaming Connect call; returns the response to read envelopes from.
    pub async fn open_stream<Req>(
        &self,
        t: &EnvdTarget,
        rpc: &str,
        req: &Req,
        timeout: Option<Duration>,
        user: Option<&str>,
    ) -> Result<reqwest::Response>
    where
        Req: prost::Message + Serialize + Sync,
    {
        let body = envelope(0, &Codec::Json.encode(req));
        self.with_retries(rpc, || async {
            let mut r = self
                .envd_request(t, Method::POST, &format!("/{rpc}"))
                .header("content-type", "application/connect+json")
                .header("connect-protocol-version", "1")
                .header("keepalive-ping-interval", "50")
                .body(body.clone());
            if let Some(d) = timeout {
                r = r.header("connect-timeout-ms", d.as_millis().to_string());
            }
            // envd picks the Linux user from `Authorization: Basic <user>:`.
            if let Some(u) = user {
                r = r.basic_auth(u, None::<&str>);
            }
            let resp = r.send().await.map_err(|e| transport_error(rpc, &e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            Err(connect_failure(rpc, status, &bytes))
        })
        .await
    }

    /// `GET /files?path=`.
    pub async fn download(&self, t: &EnvdTarget, path: &str) -> Result<bytes::Bytes> {
        let what = format!("download {path}");
        self.with_retries(&what, || async {
            let resp = self
                .envd_request(t, Method::GET, "/files")
                .timeout(self.request_timeout)
                .query(&[("path", path)])
                .send()
                .await
                .map_err(|e| transport_error(&what, &e))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| transport_error(&what, &e))?;
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(status_error(&what, status, &bytes))
            }
        })
        .await
    }

    /// `POST /files?path=` with a raw body (envd ≥ 0.5.7) or multipart.
    pub async fn upload(
        &self,
        t: &EnvdTarget,
        path: &str,
        data: bytes::Bytes,
        octet_stream: bool,
    ) -> Result<()> {
        let what = format!("upload {path}");
        self.with_retries(&what, || async {
            let mut req = self
                .envd_request(t, Method::POST, "/files")
                .timeout(self.request_timeout)
                .query(&[("path", path)]);
            req = if octet_stream {
                req.header("content-type", "application/octet-stream")
                    .body(data.clone())
            } else {
                let part =
                    reqwest::multipart::Part::bytes(data.to_vec()).file_name(path.to_string());
                req.multipart(reqwest::multipart::Form::new().part("file", part))
            };
            let resp = req.send().await.map_err(|e| transport_error(&what, &e))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| transport_error(&what, &e))?;
            if status.is_success() {
                Ok(())
            } else {
                Err(status_error(&what, status, &bytes))
            }
        })
        .await
    }
}

/// A failed Connect call as a godel error: Connect codes when the body has
/// one, the HTTP status otherwise (a proxy's 502 for a gone sandbox is `NOT_FOUND`).
pub(crate) fn connect_failure(rpc: &str, status: StatusCode, body: &[u8]) -> Error {
    let has_code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code").map(|c| c.is_string()))
        .unwrap_or(false);
    if !has_code {
        return status_error(rpc, status, body);
    }
    let ce = ConnectError::from_response(status.as_u16(), body);
    let mut e = ce.into_godel();
    e.message = format!("{rpc}: {}", e.message);
    if e.code == ErrorCode::Unavailable {
        e.retryable = true;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes() {
        let c = |s: u16, b: &str| status_error("x", StatusCode::from_u16(s).unwrap(), b.as_bytes());
        assert_eq!(
            c(401, r#"{"code":401,"message":"bad key"}"#).code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(c(404, "").code, ErrorCode::NotFound);
        let gone = c(
            502,
            r#"{"sandboxId":"i","message":"The sandbox was not found","code":502}"#,
        );
        assert_eq!(gone.code, ErrorCode::NotFound);
        let busy = c(503, "");
        assert_eq!(busy.code, ErrorCode::Unavailable);
        assert!(busy.retryable);
        let e = connect_failure(
            "p/Start",
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"nope"}"#,
        );
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("nope"));
    }
}
