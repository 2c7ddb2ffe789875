//! The Connect protocol (connectrpc.com/docs/protocol), shared by the server
//! (envd surface) and the client (the `e2b` runtime).
//!
//! 1. **Unary**: `POST /{package.Service}/{Method}` with `Content-Type:
//!    application/json` (proto3 JSON) or `application/proto` (binary). The
//!    response has the same content type; an error is an HTTP status plus
//!    `{"code":"not_found","message":"…"}`.
//! 2. **Streaming**: `application/connect+json` / `application/connect+proto`.
//!    Both directions are a sequence of envelopes: one flags byte (`0x01`
//!    compressed, `0x02` end of stream) and a 4-byte big-endian length, then
//!    the payload. The last response envelope carries the end-of-stream JSON
//!    `{}` or `{"error":{"code","message"},"metadata":{}}`; the HTTP status of
//!    a stream is always 200.
//! 3. `Connect-Timeout-Ms` bounds the whole call; when it passes the server
//!    answers `deadline_exceeded`.
//! 4. Error codes map to godel's stable codes in both directions
//!    ([`ConnectCode::from_godel`], [`ConnectCode::to_godel`]).

use std::io::Read;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use godel_core::{Error, ErrorCode, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Flag of a compressed envelope.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of the end-of-stream envelope.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Largest message accepted in one envelope (64 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The header carrying the call deadline.
pub const TIMEOUT_HEADER: &str = "connect-timeout-ms";

/// A message codec: proto3 JSON or binary protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    /// The codec of a unary request's `Content-Type`.
    pub fn from_unary_content_type(ct: &str) -> Option<Codec> {
        match base_type(ct) {
            "application/json" => Some(Codec::Json),
            "application/proto" | "application/protobuf" => Some(Codec::Proto),
            _ => None,
        }
    }

    /// The codec of a streaming request's `Content-Type`.
    pub fn from_stream_content_type(ct: &str) -> Option<Codec> {
        match base_type(ct) {
            "application/connect+json" => Some(Codec::Json),
            "application/connect+proto" => Some(Codec::Proto),
            _ => None,
        }
    }

    pub fn unary_content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }

    pub fn stream_content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/connect+json",
            Codec::Proto => "application/connect+proto",
        }
    }

    /// Encode one message.
    pub fn encode<M: prost::Message + Serialize>(self, msg: &M) -> Bytes {
        match self {
            Codec::Json => match serde_json::to_vec(msg) {
                Ok(v) => Bytes::from(v),
                // pbjson serializers only fail on writer errors, impossible for a Vec.
                Err(_) => Bytes::from_static(b"{}"),
            },
            Codec::Proto => Bytes::from(msg.encode_to_vec()),
        }
    }

    /// Decode one message. An empty JSON body is the empty message.
    pub fn decode<M: prost::Message + Default + DeserializeOwned>(self, buf: &[u8]) -> Result<M> {
        match self {
            Codec::Json => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(M::default());
                }
                serde_json::from_slice(buf)
                    .map_err(|e| Error::invalid(format!("invalid JSON message: {e}")))
            }
            Codec::Proto => {
                M::decode(buf).map_err(|e| Error::invalid(format!("invalid protobuf message: {e}")))
            }
        }
    }
}

fn base_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Frame one envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Bytes,
}

impl Envelope {
    pub fn is_end(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// The payload, gunzipped when the envelope is flagged compressed.
    pub fn data(&self) -> Result<Bytes> {
        if self.flags & FLAG_COMPRESSED == 0 {
            return Ok(self.payload.clone());
        }
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&self.payload[..])
            .take(MAX_MESSAGE as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::invalid(format!("bad gzip envelope: {e}")))?;
        if out.len() > MAX_MESSAGE {
            return Err(Error::exhausted("message too large"));
        }
        Ok(Bytes::from(out))
    }
}

/// Incremental envelope parser: push body chunks, pop whole envelopes.
#[derive(Debug, Default)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
}

impl EnvelopeDecoder {
    pub fn new() -> Self {
        EnvelopeDecoder::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete envelope, if one is buffered.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Error::exhausted(format!(
                "envelope of {len} bytes exceeds the {MAX_MESSAGE} byte limit"
            )));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let flags = self.buf[0];
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes buffered but not yet forming an envelope.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl ConnectCode {
    pub const ALL: [ConnectCode; 16] = [
        ConnectCode::Canceled,
        ConnectCode::Unknown,
        ConnectCode::InvalidArgument,
        ConnectCode::DeadlineExceeded,
        ConnectCode::NotFound,
        ConnectCode::AlreadyExists,
        ConnectCode::PermissionDenied,
        ConnectCode::ResourceExhausted,
        ConnectCode::FailedPrecondition,
        ConnectCode::Aborted,
        ConnectCode::OutOfRange,
        ConnectCode::Unimplemented,
        ConnectCode::Internal,
        ConnectCode::Unavailable,
        ConnectCode::DataLoss,
        ConnectCode::Unauthenticated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectCode::Canceled => "canceled",
            ConnectCode::Unknown => "unknown",
            ConnectCode::InvalidArgument => "invalid_argument",
            ConnectCode::DeadlineExceeded => "deadline_exceeded",
            ConnectCode::NotFound => "not_found",
            ConnectCode::AlreadyExists => "already_exists",
            ConnectCode::PermissionDenied => "permission_denied",
            ConnectCode::ResourceExhausted => "resource_exhausted",
            ConnectCode::FailedPrecondition => "failed_precondition",
            ConnectCode::Aborted => "aborted",
            ConnectCode::OutOfRange => "out_of_range",
            ConnectCode::Unimplemented => "unimplemented",
            ConnectCode::Internal => "internal",
            ConnectCode::Unavailable => "unavailable",
            ConnectCode::DataLoss => "data_loss",
            ConnectCode::Unauthenticated => "unauthenticated",
        }
    }

    pub fn parse(s: &str) -> Option<ConnectCode> {
        ConnectCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status of a unary error (Connect spec table).
    pub fn http_status(self) -> u16 {
        match self {
            ConnectCode::Canceled => 499,
            ConnectCode::Unknown => 500,
            ConnectCode::InvalidArgument => 400,
            ConnectCode::DeadlineExceeded => 504,
            ConnectCode::NotFound => 404,
            ConnectCode::AlreadyExists => 409,
            ConnectCode::PermissionDenied => 403,
            ConnectCode::ResourceExhausted => 429,
            ConnectCode::FailedPrecondition => 400,
            ConnectCode::Aborted => 409,
            ConnectCode::OutOfRange => 400,
            ConnectCode::Unimplemented => 501,
            ConnectCode::Internal => 500,
            ConnectCode::Unavailable => 503,
            ConnectCode::DataLoss => 500,
            ConnectCode::Unauthenticated => 401,
        }
    }

    /// The code a client infers from an HTTP status without a Connect body.
    pub fn from_http_status(status: u16) -> ConnectCode {
        match status {
            400 => ConnectCode::Internal,
            401 => ConnectCode::Unauthenticated,
            403 => ConnectCode::PermissionDenied,
            404 => ConnectCode::Unimplemented,
            429 | 502..=504 => ConnectCode::Unavailable,
            _ => ConnectCode::Unknown,
        }
    }

    /// godel code → Connect code.
    pub fn from_godel(code: ErrorCode) -> ConnectCode {
        match code {
            ErrorCode::NotFound => ConnectCode::NotFound,
            ErrorCode::InvalidArgument => ConnectCode::InvalidArgument,
            ErrorCode::SpawnError | ErrorCode::ExecutionError | ErrorCode::Internal => {
                ConnectCode::Internal
            }
            ErrorCode::ResourceExhausted | ErrorCode::BudgetExceeded => {
                ConnectCode::ResourceExhausted
            }
            ErrorCode::Timeout => ConnectCode::DeadlineExceeded,
            ErrorCode::Unavailable => ConnectCode::Unavailable,
            ErrorCode::Conflict => ConnectCode::AlreadyExists,
            ErrorCode::PermissionDenied => ConnectCode::PermissionDenied,
            ErrorCode::Unauthenticated => ConnectCode::Unauthenticated,
        }
    }

    /// Connect code → godel code.
    pub fn to_godel(self) -> ErrorCode {
        match self {
            ConnectCode::NotFound => ErrorCode::NotFound,
            ConnectCode::InvalidArgument
            | ConnectCode::FailedPrecondition
            | ConnectCode::OutOfRange => ErrorCode::InvalidArgument,
            ConnectCode::AlreadyExists | ConnectCode::Aborted => ErrorCode::Conflict,
            ConnectCode::PermissionDenied => ErrorCode::PermissionDenied,
            ConnectCode::Unauthenticated => ErrorCode::Unauthenticated,
            ConnectCode::ResourceExhausted => ErrorCode::ResourceExhausted,
            ConnectCode::DeadlineExceeded => ErrorCode::Timeout,
            ConnectCode::Unavailable => ErrorCode::Unavailable,
            ConnectCode::Canceled
            | ConnectCode::Unknown
            | ConnectCode::Unimplemented
            | ConnectCode::Internal
            | ConnectCode::DataLoss => ErrorCode::Internal,
        }
    }
}

/// A Connect error: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: ConnectCode,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: ConnectCode, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub fn from_godel(err: &Error) -> Self {
        ConnectError::new(ConnectCode::from_godel(err.code), err.message.clone())
    }

    pub fn into_godel(self) -> Error {
        Error::new(self.code.to_godel(), self.message)
    }

    /// `{"code":"…","message":"…"}`, the body of a unary error.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }

    /// Parse a unary error body; falls back to the HTTP status when the body
    /// is not a Connect error (a proxy's page, an empty body).
    pub fn from_response(status: u16, body: &[u8]) -> ConnectError {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let code = v
                .get("code")
                .and_then(|c| c.as_str())
                .and_then(ConnectCode::parse);
            let message = v
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string();
            if let Some(code) = code {
                return ConnectError::new(code, message);
            }
            if !message.is_empty() {
                return ConnectError::new(ConnectCode::from_http_status(status), message);
            }
        }
        let text = String::from_utf8_lossy(body);
        ConnectError::new(
            ConnectCode::from_http_status(status),
            format!("HTTP {status}: {}", text.trim()),
        )
    }
}

/// The end-of-stream payload: `{}` or `{"error":{…},"metadata":{}}`.
pub fn end_stream_payload(err: Option<&ConnectError>) -> Bytes {
    let v = match err {
        None => serde_json::json!({}),
        Some(e) => serde_json::json!({ "error": e.to_json(), "metadata": {} }),
    };
    Bytes::from(v.to_string())
}

/// Parse an end-of-stream payload: `Ok(None)` for a clean end.
pub fn parse_end_stream(payload: &[u8]) -> Result<Option<ConnectError>> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Error::internal(format!("bad end-of-stream message: {e}")))?;
    let Some(err) = v.get("error").filter(|e| !e.is_null()) else {
        return Ok(None);
    };
    let code = err
        .get("code")
        .and_then(|c| c.as_str())
        .and_then(ConnectCode::parse)
        .unwrap_or(ConnectCode::Unknown);
    let message = err
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    Ok(Some(ConnectError::new(code, message)))
}

/// The `Connect-Timeout-Ms` value of a request, if any and valid.
pub fn parse_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(TIMEOUT_HEADER)?.to_str().ok()?;
    let ms: u64 = v.trim().parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::process::{ListRequest, SendInputRequest};

    #[test]
    fn envelopes_round_trip_in_pieces() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&envelope(0, b"{\"a\":1}"));
        wire.extend_from_slice(&envelope(FLAG_END_STREAM, b"{}"));
        let mut dec = EnvelopeDecoder::new();
        let mut got = Vec::new();
        for byte in wire {
            dec.push(&[byte]);
            while let Some(env) = dec.next_envelope().unwrap() {
                got.push(env);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].payload[..], b"{\"a\":1}");
        assert!(!got[0].is_end());
        assert!(got[1].is_end());
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn compressed_envelopes_are_inflated() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"x\":2}").unwrap();
        let env = Envelope {
            flags: FLAG_COMPRESSED,
            payload: Bytes::from(gz.finish().unwrap()),
        };
        assert_eq!(&env.data().unwrap()[..], b"{\"x\":2}");
    }

    #[test]
    fn oversized_envelopes_are_refused() {
        let mut dec = EnvelopeDecoder::new();
        dec.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            dec.next_envelope().unwrap_err().code,
            ErrorCode::ResourceExhausted
        );
    }

    #[test]
    fn codes_map_both_ways() {
        for c in ConnectCode::ALL {
            assert_eq!(ConnectCode::parse(c.as_str()), Some(c));
        }
        for g in ErrorCode::ALL {
            let back = ConnectCode::from_godel(g).to_godel();
            // Lossy only where Connect has no finer code.
            if !matches!(
                g,
                ErrorCode::SpawnError | ErrorCode::ExecutionError | ErrorCode::BudgetExceeded
            ) {
                assert_eq!(back, g, "{g}");
            }
        }
        assert_eq!(ConnectCode::NotFound.http_status(), 404);
    }

    #[test]
    fn end_stream_and_error_bodies() {
        let e = ConnectError::new(ConnectCode::NotFound, "process 7 not found");
        let p = end_stream_payload(Some(&e));
        assert_eq!(parse_end_stream(&p).unwrap(), Some(e.clone()));
        assert_eq!(parse_end_stream(b"{}").unwrap(), None);
        assert_eq!(
            ConnectError::from_response(404, e.to_json().to_string().as_bytes()),
            e
        );
        let proxy = br#"{"sandboxId":"x","message":"The sandbox was not found","code":502}"#;
        let pe = ConnectError::from_response(502, proxy);
        assert_eq!(pe.code, ConnectCode::Unavailable);
        assert!(pe.message.contains("was not found"));
    }

    #[test]
    fn both_codecs_decode() {
        let msg = SendInputRequest::default();
        for codec in [Codec::Json, Codec::Proto] {
            let b = codec.encode(&msg);
            assert_eq!(codec.decode::<SendInputRequest>(&b).unwrap(), msg);
        }
        assert_eq!(
            Codec::Json.decode::<ListRequest>(b"").unwrap(),
            ListRequest {}
        );
        assert_eq!(
            Codec::from_stream_content_type("application/connect+json; charset=utf-8"),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::from_unary_content_type("application/proto"),
            Some(Codec::Proto)
        );
        let mut h = http::HeaderMap::new();
        h.insert(TIMEOUT_HEADER, "1500".parse().unwrap());
        assert_eq!(parse_timeout(&h), Some(Duration::from_millis(1500)));
    }
}
