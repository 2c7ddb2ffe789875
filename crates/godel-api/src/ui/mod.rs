//! The web dashboard at `/ui`: plain HTML, CSS and JavaScript compiled into
//! the binary (`include_str!`), no build step and nothing fetched from the
//! internet. The pages are a client of the same `/v1` API scripts use
//! (`/v1/overview`, `/v1/events`, `/v1/runtimes/{id}/activity`, `/v1/usage`,
//! `/v1/budgets`, `/v1/benchmarks` ...), sending the token the user typed at
//! the login form as `Authorization: Bearer`.
//!
//! Auth: these routes are outside `/v1` and outside the bearer layer on
//! purpose. They serve only the fixed assets below, identical for every
//! caller and holding no data, so the browser can load the login form
//! before it has a token. Every piece of data comes from `/v1` with the
//! token, which the page keeps in `sessionStorage` (gone when the tab
//! closes) and never puts in a cookie, so another site cannot make the
//! browser send it (no CSRF). A strict Content-Security-Policy allows only
//! this origin's scripts, styles and connections, and no framing.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
    Asset {
        path: "/ui/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/api.js"),
    },
    Asset {
        path: "/ui/charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/charts.js"),
    },
    Asset {
        path: "/ui/pages.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/pages.js"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
];

/// What the browser may load and connect to: this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn serve(a: &'static Asset) -> Response {
    let mut r = (StatusCode::OK, a.body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// The dashboard's routes (no auth layer: see the module header).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new().route("/ui", get(|| async { Redirect::permanent("/ui/") }));
    for a in ASSETS {
        r = r.route(a.path, get(move || async move { serve(a) }));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_and_style_the_page_names_is_served() {
        let index = ASSETS[0].body;
        for a in &ASSETS[1..] {
            let name = a.path.trim_start_matches("/ui/");
            assert!(index.contains(name), "index.html does not load {name}");
        }
        assert!(!index.contains("http://") && !index.contains("https://"));
    }
}
