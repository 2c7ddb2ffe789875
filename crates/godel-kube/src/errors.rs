//! Mapping of kube-rs errors to godel's stable codes: 403 with a quota
//! message → RESOURCE_EXHAUSTED, other 403 → PERMISSION_DENIED, 404 →
//! NOT_FOUND, 409 → CONFLICT, 400/422 → INVALID_ARGUMENT, 429/5xx and
//! transport failures (connection refused) → UNAVAILABLE (retryable).

use godel_core::{Error, ErrorCode};
use kube::client::UpgradeConnectionError;

/// Map an API status code and message to a godel error code.
pub fn code_for_status(code: u16, message: &str) -> ErrorCode {
    match code {
        403 if message.contains("exceeded quota") => ErrorCode::ResourceExhausted,
        403 => ErrorCode::PermissionDenied,
        401 => ErrorCode::Unauthenticated,
        404 => ErrorCode::NotFound,
        409 | 410 => ErrorCode::Conflict,
        400 | 422 => ErrorCode::InvalidArgument,
        408 | 504 => ErrorCode::Timeout,
        429 | 500..=599 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// A godel error for a failed Kubernetes call, `context` saying what godel was doing.
pub fn map_kube(context: &str, err: kube::Error) -> Error {
    match err {
        kube::Error::Api(status) => {
            let code = code_for_status(status.code, &status.message);
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", status.reason)
            };
            Error::new(code, format!("{context}: {}{reason}", status.message))
        }
        kube::Error::HyperError(e) => Error::unavailable(format!(
            "{context}: cannot reach the Kubernetes API server: {e}"
        )),
        kube::Error::Service(e) => Error::unavailable(format!(
            "{context}: cannot reach the Kubernetes API server: {}",
            chain(e.as_ref())
        )),
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(st)) => {
            let code = code_for_status(st.as_u16(), "");
            Error::new(
                code,
                format!("{context}: the API server refused the exec stream: HTTP {st}"),
            )
        }
        kube::Error::UpgradeConnection(e) => {
            Error::unavailable(format!("{context}: exec stream: {}", chain(&e)))
        }
        kube::Error::Auth(e) => Error::unauthenticated(format!("{context}: {}", chain(&e))),
        other => Error::internal(format!("{context}: {}", chain(&other))),
    }
}

/// An error and all its sources, `: `-separated.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let s_str = s.to_string();
        if !out.contains(&s_str) {
            out.push_str(": ");
            out.push_str(&s_str);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes() {
        assert_eq!(
            code_for_status(
                403,
                "pods \"x\" is forbidden: exceeded quota: q, requested: pods=1"
            ),
            ErrorCode::ResourceExhausted
        );
        assert_eq!(
            code_for_status(403, "forbidden"),
            ErrorCode::PermissionDenied
        );
        assert_eq!(code_for_status(404, ""), ErrorCode::NotFound);
        assert_eq!(code_for_status(409, ""), ErrorCode::Conflict);
        assert_eq!(code_for_status(503, ""), ErrorCode::Unavailable);
        assert_eq!(code_for_status(422, ""), ErrorCode::InvalidArgument);
    }
}
