//! Errors on the wire: `{code, message, retryable}` with the code's HTTP
//! status. Framework rejections (bad JSON, unknown fields, oversized bodies,
//! unknown routes) are rewritten into the same shape by [`normalize_errors`].

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse;
use godel_core::{Error, ErrorCode};

/// A godel error as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        error_response(&self.0)
    }
}

/// Build the JSON error response for an error.
pub fn error_response(e: &Error) -> axum::response::Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(e).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Map a framework rejection status to a godel code.
fn code_for_status(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
        StatusCode::FORBIDDEN => ErrorCode::PermissionDenied,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ErrorCode::Timeout,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

/// Middleware body: rewrite any non-JSON error response into godel's error shape.
pub async fn normalize_errors(resp: axum::response::Response) -> axum::response::Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let code = code_for_status(status);
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body too large: {text}"),
        StatusCode::NOT_FOUND if text.is_empty() => "no such route".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let err = Error::new(code, message);
    let mut out = error_response(&err);
    // Keep the framework's status where it is more precise (413, 405, 415, 422 → 400).
    if status != StatusCode::UNPROCESSABLE_ENTITY {
        *out.status_mut() = status;
    }
    out
}
