//! Who is calling. Connections on the Unix socket (mode 0600, so only its
//! owner can connect) act as admin. TCP connections must present
//! `Authorization: Bearer <token>`; the token maps to a team or admin.
//! Failed authentications are limited per client address ([`AuthLimiter`]):
//! past [`AuthLimiter::MAX_FAILURES`] in [`AuthLimiter::WINDOW`], every
//! request from that address answers `RESOURCE_EXHAUSTED` (429, with
//! `Retry-After`) without looking at its token, so guessing tokens is slow
//! and a right guess cannot be told from a wrong one while blocked.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
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

/// Failed authentications per client address, in a sliding window.
#[derive(Debug, Default)]
pub struct AuthLimiter {
    failures: parking_lot::Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthLimiter {
    /// Failures allowed per address in [`AuthLimiter::WINDOW`].
    pub const MAX_FAILURES: usize = 20;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses tracked at most (the oldest are forgotten past this).
    const MAX_ADDRS: usize = 10_000;

    /// The process-wide limiter of the TCP listeners.
    pub fn global() -> &'static AuthLimiter {
        static L: OnceLock<AuthLimiter> = OnceLock::new();
        L.get_or_init(AuthLimiter::default)
    }

    /// `Some(wait)` while `ip` is blocked.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut m = self.failures.lock();
        let q = m.get_mut(&ip)?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
        {
            q.pop_front();
        }
        if q.is_empty() {
            m.remove(&ip);
            return None;
        }
        (q.len() >= Self::MAX_FAILURES).then(|| {
            Self::WINDOW.saturating_sub(now.duration_since(q[q.len() - Self::MAX_FAILURES]))
        })
    }

    /// Count one failed authentication from `ip`.
    pub fn fail(&self, ip: IpAddr, now: Instant) {
        let mut m = self.failures.lock();
        if m.len() >= Self::MAX_ADDRS && !m.contains_key(&ip) {
            m.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < Self::WINDOW)
            });
            if m.len() >= Self::MAX_ADDRS {
                m.clear();
            }
        }
        let q = m.entry(ip).or_default();
        q.push_back(now);
        while q.len() > Self::MAX_FAILURES {
            q.pop_front();
        }
    }
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = ApiError(Error::exhausted(format!(
        "too many failed authentications from this address: retry in {secs} s"
    )))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Middleware for TCP listeners: a valid token is required on every route.
pub async fn bearer(State(control): State<Arc<Control>>, mut req: Request, next: Next) -> Response {
    let (limiter, ip, now) = (AuthLimiter::global(), client_ip(&req), Instant::now());
    if let Some(wait) = limiter.blocked(ip, now) {
        return too_many(wait);
    }
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
        Err(e) => {
            limiter.fail(ip, now);
            ApiError(e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_per_address_until_the_window_passes() {
        let l = AuthLimiter::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..AuthLimiter::MAX_FAILURES - 1 {
            l.fail(a, t);
        }
        assert_eq!(l.blocked(a, t), None);
        l.fail(a, t);
        assert_eq!(l.blocked(a, t), Some(AuthLimiter::WINDOW));
        assert_eq!(l.blocked(b, t), None, "other addresses are not affected");
        assert_eq!(l.blocked(a, t + AuthLimiter::WINDOW), None);
    }
}
