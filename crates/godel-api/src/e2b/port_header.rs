//! SDKs pointed at one address (`E2B_SANDBOX_URL`) name the sandbox and the
//! port in headers (`E2b-Sandbox-Id`, `E2b-Sandbox-Port`) instead of the
//! `<port>-<id>.<domain>` host; the `e2b-code-interpreter` SDKs do so for
//! port 49999. For a port other than envd's, this layer rewrites such a
//! request's Host into the port-URL form, so the port proxy serves it like
//! any port URL (same checks, same errors).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use godel_e2b::wire::{ENVD_PORT, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER};

/// The rewritten Host of a header-addressed request to a non-envd port.
pub(crate) fn port_host_of(
    headers: &axum::http::HeaderMap,
    domain: Option<&str>,
) -> Option<String> {
    let port: u16 = headers
        .get(SANDBOX_PORT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if port == ENVD_PORT {
        return None;
    }
    let id = headers.get(SANDBOX_ID_HEADER)?.to_str().ok()?.trim();
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| format!("{port}-{id}.{}", domain.unwrap_or("localhost")))
}

pub(crate) async fn layer(
    axum::extract::State(domain): axum::extract::State<Option<String>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(host) = port_host_of(req.headers(), domain.as_deref())
        && let Ok(v) = HeaderValue::from_str(&host)
    {
        req.headers_mut().insert(header::HOST, v);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_envd_ports_with_an_id_are_rewritten() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(SANDBOX_ID_HEADER, HeaderValue::from_static("rt-abc"));
        assert_eq!(port_host_of(&h, None), None);
        h.insert(SANDBOX_PORT_HEADER, HeaderValue::from_static("49983"));
        assert_eq!(port_host_of(&h, None), None);
        h.insert(SANDBOX_PORT_HEADER, HeaderValue::from_static("49999"));
        assert_eq!(
            port_host_of(&h, None).as_deref(),
            Some("49999-rt-abc.localhost")
        );
        assert_eq!(
            port_host_of(&h, Some("godel.test")).as_deref(),
            Some("49999-rt-abc.godel.test")
        );
        h.insert(SANDBOX_ID_HEADER, HeaderValue::from_static("a/b"));
        assert_eq!(port_host_of(&h, None), None);
    }
}
