//! The CLI's HTTP client: HTTP/1.1 over the daemon's Unix socket, or TCP with
//! a bearer token. Errors come back as godel errors with their stable codes;
//! a daemon that cannot be reached is `UNAVAILABLE` with a hint.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use godel_core::{Error, Result};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the daemon is.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp { authority: String },
}

/// A client of the godel API.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    token: Option<String>,
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    /// From `--url`/`GODEL_URL` (TCP) or the socket under `$GODEL_HOME`.
    pub fn new(url: Option<&str>, token: Option<String>, socket: PathBuf) -> Result<Client> {
        let target = match url {
            Some(u) => {
                let rest = u.strip_prefix("http://").ok_or_else(|| {
                    Error::invalid(format!("GODEL_URL {u:?} must start with http://"))
                })?;
                let authority = rest.trim_end_matches('/').to_string();
                if authority.is_empty() || authority.contains('/') {
                    return Err(Error::invalid(format!(
                        "GODEL_URL {u:?} must look like http://HOST:PORT"
                    )));
                }
                Target::Tcp { authority }
            }
            None => Target::Unix(socket),
        };
        Ok(Client { target, token })
    }

    fn where_(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp { authority } => format!("http://{authority}"),
        }
    }

    /// Send one request; returns the raw response (status checked by callers).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<hyper::Response<Incoming>> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::unavailable(format!(
                "cannot reach the godel daemon at {}: {e} (is `godel serve` running?)",
                self.where_()
            ))
        };
        let host = match &self.target {
            Target::Unix(_) => "localhost".to_string(),
            Target::Tcp { authority } => authority.clone(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Error::invalid(format!("bad request: {e}")))?;
        macro_rules! go {
            ($stream:expr) => {{
                let io = TokioIo::new($stream);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| unreachable(&e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender.send_request(req).await.map_err(|e| unreachable(&e))
            }};
        }
        match &self.target {
            Target::Unix(p) => go!(tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| unreachable(&e))?),
            Target::Tcp { authority } => go!(tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|e| unreachable(&e))?),
        }
    }

    /// `GET path` with `Upgrade: tcp`: the connection becomes a raw byte
    /// tunnel (`godel forward`), or the daemon's error comes back.
    pub async fn tunnel(&self, path: &str) -> Result<hyper::upgrade::Upgraded> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::unavailable(format!(
                "cannot reach the godel daemon at {}: {e} (is `godel serve` running?)",
                self.where_()
            ))
        };
        let host = match &self.target {
            Target::Unix(_) => "localhost".to_string(),
            Target::Tcp { authority } => authority.clone(),
        };
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, host)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "tcp");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::invalid(format!("bad request: {e}")))?;
        macro_rules! go {
            ($stream:expr) => {{
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new($stream))
                        .await
                        .map_err(|e| unreachable(&e))?;
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| unreachable(&e))?
            }};
        }
        let resp = match &self.target {
            Target::Unix(p) => go!(tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| unreachable(&e))?),
            Target::Tcp { authority } => go!(tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|e| unreachable(&e))?),
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            Self::check(resp).await?;
            return Err(Error::internal(
                "the daemon answered a tunnel request without switching protocols",
            ));
        }
        hyper::upgrade::on(resp)
            .await
            .map_err(|e| Error::internal(format!("tunnel: {e}")))
    }

    /// Turn a non-success response into a godel error.
    async fn check(resp: hyper::Response<Incoming>) -> Result<hyper::Response<Incoming>> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(serde_json::from_slice::<Error>(&body).unwrap_or_else(|_| {
            let code = match status {
                StatusCode::NOT_FOUND => godel_core::ErrorCode::NotFound,
                StatusCode::UNAUTHORIZED => godel_core::ErrorCode::Unauthenticated,
                _ => godel_core::ErrorCode::Internal,
            };
            Error::new(
                code,
                format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            )
        }))
    }

    /// A request with an optional JSON body, returning raw bytes.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<Bytes> {
        let resp = Self::check(self.send(method, path, body, content_type).await?).await?;
        resp.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| Error::unavailable(format!("connection to the daemon broke: {e}")))
    }

    /// JSON in, JSON out.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = match body {
            Some(b) => {
                Bytes::from(serde_json::to_vec(b).map_err(|e| Error::invalid(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let out = self.call(method, path, bytes, "application/json").await?;
        let out = if out.is_empty() {
            Bytes::from_static(b"null")
        } else {
            out
        };
        serde_json::from_slice(&out)
            .map_err(|e| Error::internal(format!("unexpected response from the daemon: {e}")))
    }

    /// POST JSON, read a server-sent event stream: yields `(event, data)`.
    pub async fn sse(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<futures::stream::BoxStream<'static, Result<(String, String)>>> {
        let bytes = match body {
            Some(b) => {
                Bytes::from(serde_json::to_vec(b).map_err(|e| Error::invalid(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let resp = Self::check(self.send(method, path, bytes, "application/json").await?).await?;
        let body = resp.into_body().into_data_stream();
        Ok(sse_events(body).boxed())
    }
}

/// Parse an SSE byte stream into `(event, data)` pairs.
fn sse_events(
    body: impl Stream<Item = std::result::Result<Bytes, hyper::Error>> + Send + 'static,
) -> impl Stream<Item = Result<(String, String)>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut body = Box::pin(body);
        let mut buf: Vec<u8> = Vec::new();
        let mut event = String::new();
        let mut data = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx
                        .send(Err(Error::unavailable(format!("event stream broke: {e}"))))
                        .await;
                    return;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim_end_matches('\r')
                    .to_string();
                if line.is_empty() {
                    if !data.is_empty() || !event.is_empty() {
                        let item = (std::mem::take(&mut event), std::mem::take(&mut data));
                        if tx.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        assert!(Client::new(Some("https://x"), None, PathBuf::new()).is_err());
        assert!(Client::new(Some("http://127.0.0.1:1/x"), None, PathBuf::new()).is_err());
        assert!(Client::new(Some("http://127.0.0.1:7070"), None, PathBuf::new()).is_ok());
        assert_eq!(enc("a b/c&d"), "a%20b/c%26d");
    }
}
