//! `Status` objects, the way the real API server reports failures
//! (`kind: Status`, `status: Failure`, a reason and an HTTP code), and the
//! exec status frames the kubelet sends on channel 3.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed request, rendered as a `Status` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub kind: Option<String>,
    pub name: Option<String>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            kind: None,
            name: None,
        }
    }
    pub fn not_found(plural: &str, name: &str) -> Self {
        ApiError {
            name: Some(name.into()),
            kind: Some(plural.into()),
            ..ApiError::new(404, "NotFound", format!("{plural} \"{name}\" not found"))
        }
    }
    pub fn namespace_not_found(ns: &str) -> Self {
        ApiError {
            name: Some(ns.into()),
            kind: Some("namespaces".into()),
            ..ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
        }
    }
    pub fn already_exists(plural: &str, name: &str) -> Self {
        ApiError {
            name: Some(name.into()),
            kind: Some(plural.into()),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{plural} \"{name}\" already exists"),
            )
        }
    }
    pub fn forbidden(plural: &str, name: &str, why: &str) -> Self {
        ApiError {
            name: Some(name.into()),
            kind: Some(plural.into()),
            ..ApiError::new(
                403,
                "Forbidden",
                format!("{plural} \"{name}\" is forbidden: {why}"),
            )
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn invalid(plural: &str, name: &str, why: &str) -> Self {
        ApiError {
            name: Some(name.into()),
            kind: Some(plural.into()),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{plural} \"{name}\" is invalid: {why}"),
            )
        }
    }

    pub fn to_json(&self) -> Value {
        let mut details = json!({});
        if let Some(n) = &self.name {
            details["name"] = json!(n);
        }
        if let Some(k) = &self.kind {
            details["kind"] = json!(k);
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.to_json())
    }
}

/// A JSON response with the given status.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The kubelet's exit status frame body for an exit code.
pub(crate) fn exit_status(code: i32, argv: &[String]) -> Value {
    if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    }
}
