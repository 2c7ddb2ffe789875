//! Who is calling. Connections on the Unix socket (mode 0600, so only its
//! owner can connect) act as admin. TCP connections must present
//! `Authorization: Bearer <token>`; the token maps to a team or admin.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use godel_control::{Caller, Control};
use godel_core::Error;

use crate::error::ApiError;

/// Middleware for the Unix-socket listener: every caller is admin.
pub async fn socket_owner(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Caller::Admin);
    next.run(req).await
}

/// Extract a bearer token (or an `X-API-Key`, for clients that send that).
pub fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_string());
        }
    }
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// Middleware for TCP listeners: a valid token is required on every route.
pub async fn bearer(State(control): State<Arc<Control>>, mut req: Request, next: Next) -> Response {
    let Some(token) = presented_token(&req) else {
        return ApiError(Error::unauthenticated(
            "missing token: send Authorization: Bearer <token> (create one with `godel token create --team T`)",
        ))
        .into_response();
    };
    match control.authenticate(&token) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}
