//! Port URLs on the E2B listener, over real HTTP on loopback with the real
//! control plane: `<port>-<id>.<domain>` reaches a server a sandbox runs
//! (here godel-testkit's `FakeRuntime`, whose sandbox ports are loopback
//! ports), bodies stream both ways, a WebSocket-style upgrade is joined byte
//! for byte, a closed port is 502, an unknown sandbox 404, a private
//! sandbox needs its `e2b-traffic-access-token`, and bad network settings
//! are refused naming the field.

mod common;

use common::TestServer;
use common::client::*;
use godel_api::e2b::ServeConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cfg() -> ServeConfig {
    ServeConfig {
        domain: Some("localhost".into()),
        ..Default::default()
    }
}

/// A tiny HTTP/1.1 server on loopback: echoes the request line, the Host
/// it saw and the body; answers an `Upgrade` with 101 and then echoes bytes.
async fn upstream() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let lower = head.to_ascii_lowercase();
                if lower.contains("\r\nupgrade: websocket") {
                    s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                        .await
                        .unwrap();
                    let mut rest = buf[head_end..].to_vec();
                    loop {
                        if !rest.is_empty() {
                            s.write_all(&rest).await.unwrap();
                        }
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        rest = chunk[..n].to_vec();
                    }
                }
                let len: usize = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                let mut body = buf[head_end..].to_vec();
                while body.len() < len {
                    let n = s.read(&mut chunk).await.unwrap();
                    body.extend_from_slice(&chunk[..n]);
                }
                let line = head.lines().next().unwrap_or("").to_string();
                let host = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("host:")
                            .map(|h| h.trim().to_string())
                    })
                    .unwrap_or_default();
                let token = lower.contains("e2b-traffic-access-token");
                let out = format!(
                    "{line}|{host}|{}|token-forwarded={token}",
                    String::from_utf8_lossy(&body)
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: yes\r\n\r\n{out}",
                    out.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            });
        }
    });
    port
}

fn port_url(s: &TestServer) -> String {
    s.url.clone()
}

async fn through(
    s: &TestServer,
    host: &str,
    method: reqwest::Method,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", port_url(s)))
        .header("host", host)
        .body(body.to_string());
    if let Some(t) = token {
        r = r.header("e2b-traffic-access-token", t);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let h = r.headers().clone();
    (st, r.text().await.unwrap(), h)
}

#[tokio::test]
async fn a_port_url_reaches_the_server_in_the_sandbox() {
    let s = TestServer::start(cfg()).await;
    let sbx = create(&s, json!({"templateID":"base"})).await;
    let port = upstream().await;
    let host = format!("{port}-{}.localhost", sbx.id);
    // Any path, even one the E2B listener serves itself, goes to the sandbox.
    for path in ["/", "/files?path=x", "/sandboxes"] {
        let (st, body, h) = through(&s, &host, reqwest::Method::GET, path, "", None).await;
        assert_eq!(st, 200, "{path}: {body}");
        assert_eq!(h["x-upstream"], "yes");
        assert!(
            body.starts_with(&format!("GET {path} HTTP/1.1|{host}|")),
            "{body}"
        );
    }
    // A body goes through (4 MiB: more than the listener's JSON limit).
    let big = "x".repeat(4 << 20);
    let (st, body, _) = through(&s, &host, reqwest::Method::POST, "/up", &big, None).await;
    assert_eq!(st, 200);
    assert!(body.contains(&big), "body did not come back whole");
    // The host's port in the Host header is allowed.
    let (st, _, _) = through(
        &s,
        &format!("{host}:8080"),
        reqwest::Method::GET,
        "/",
        "",
        None,
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn an_upgrade_is_joined_byte_for_byte() {
    let s = TestServer::start(cfg()).await;
    let sbx = create(&s, json!({"templateID":"base"})).await;
    let port = upstream().await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {port}-{}.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        sbx.id
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"ping"[..], b"\x81\x05hello", &[0u8; 3000]] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test]
async fn closed_ports_are_502_and_unknown_sandboxes_404() {
    let s = TestServer::start(cfg()).await;
    let sbx = create(&s, json!({"templateID":"base"})).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (st, body, _) = through(
        &s,
        &format!("{closed}-{}.localhost", sbx.id),
        reqwest::Method::GET,
        "/",
        "",
        None,
    )
    .await;
    assert_eq!(st, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["port"], closed);
    assert_eq!(v["sandboxId"], sbx.id.as_str());
    assert!(
        v["message"].as_str().unwrap().contains("port is not open"),
        "{v}"
    );
    let (st, body, _) = through(
        &s,
        "8000-rt-nosuchsandbox.localhost",
        reqwest::Method::GET,
        "/",
        "",
        None,
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("The sandbox was not found"));
    // A killed sandbox is unknown too.
    let port = upstream().await;
    let host = format!("{port}-{}.localhost", sbx.id);
    assert_eq!(
        through(&s, &host, reqwest::Method::GET, "/", "", None)
            .await
            .0,
        200
    );
    let r = reqwest::Client::new()
        .delete(format!("{}/sandboxes/{}", s.url, sbx.id))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        through(&s, &host, reqwest::Method::GET, "/", "", None)
            .await
            .0,
        404
    );
    // Another domain is not a port URL: the listener's own 404/routes answer.
    let (st, _, h) = through(
        &s,
        &format!("{port}-{}.example.org", sbx.id),
        reqwest::Method::GET,
        "/",
        "",
        None,
    )
    .await;
    assert!(h.get("x-upstream").is_none() && st != 200);
}

#[tokio::test]
async fn private_sandboxes_need_their_traffic_token() {
    let s = TestServer::start(cfg()).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v2/sandboxes", s.url))
        .header("x-api-key", &s.key)
        .json(&json!({"templateID":"base","network":{"allowPublicTraffic":false,"maskRequestHost":"${PORT}-app.internal"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let token = v["trafficAccessToken"]
        .as_str()
        .expect("a traffic token")
        .to_string();
    let port = upstream().await;
    let host = format!("{port}-{id}.localhost");
    let (st, body, _) = through(&s, &host, reqwest::Method::GET, "/", "", None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("traffic access token"), "{body}");
    let (st, _, _) = through(&s, &host, reqwest::Method::GET, "/", "", Some("nope")).await;
    assert_eq!(st, 403);
    let (st, body, _) = through(&s, &host, reqwest::Method::GET, "/", "", Some(&token)).await;
    assert_eq!(st, 200, "{body}");
    // The token is not passed on; the Host is masked as asked.
    assert!(body.contains("token-forwarded=false"), "{body}");
    assert!(body.contains(&format!("|{port}-app.internal|")), "{body}");
    // A public sandbox has no token and needs none.
    let pub_sbx = create(&s, json!({"templateID":"base"})).await;
    let (st, _, _) = through(
        &s,
        &format!("{port}-{}.localhost", pub_sbx.id),
        reqwest::Method::GET,
        "/",
        "",
        None,
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn bad_network_settings_are_refused_naming_the_field() {
    let s = TestServer::start(cfg()).await;
    for (body, field) in [
        (
            json!({"templateID":"base","network":{"denyOut":["10.0.0.0/99"]}}),
            "network.denyOut[0]",
        ),
        (
            json!({"templateID":"base","network":{"allowOut":["example.com"],"denyOut":["0.0.0.0/0"]}}),
            "network.allowOut[0]",
        ),
        (
            json!({"templateID":"base","network":{"egressProxy":{"address":"p:1080"}}}),
            "network.egressProxy",
        ),
        (
            json!({"templateID":"base","autoPauseMemory":false,"autoPause":true}),
            "autoPauseMemory",
        ),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}/v2/sandboxes", s.url))
            .header("x-api-key", &s.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    assert_eq!(s.live(), 0, "a refused create leaves nothing behind");
    // Rules on a runtime that cannot enforce them are refused, not ignored.
    let r = reqwest::Client::new()
        .post(format!("{}/v2/sandboxes", s.url))
        .header("x-api-key", &s.key)
        .json(&json!({"templateID":"base","network":{"denyOut":["10.0.0.0/8"]}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error() || r.status().is_server_error());
    assert_eq!(s.live(), 0);
    // Live updates: an unknown sandbox is 404, a bad rule 400.
    let r = reqwest::Client::new()
        .put(format!("{}/sandboxes/rt-nope/network", s.url))
        .header("x-api-key", &s.key)
        .json(&json!({"denyOut":["1.2.3.4"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let sbx = create(&s, json!({"templateID":"base"})).await;
    let r = reqwest::Client::new()
        .put(format!("{}/sandboxes/{}/network", s.url, sbx.id))
        .header("x-api-key", &s.key)
        .json(&json!({"denyOut":["1.2.3"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("network.denyOut[0]"),
        "{v}"
    );
}

#[tokio::test]
async fn a_paused_sandbox_answers_409_until_it_is_resumed() {
    let s = TestServer::start(cfg()).await;
    let sbx = create(&s, json!({"templateID":"base"})).await;
    let port = upstream().await;
    let host = format!("{port}-{}.localhost", sbx.id);
    let r = reqwest::Client::new()
        .post(format!("{}/sandboxes/{}/pause", s.url, sbx.id))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, body, _) = through(&s, &host, reqwest::Method::GET, "/", "", None).await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("paused"), "{body}");
    let r = reqwest::Client::new()
        .post(format!("{}/sandboxes/{}/connect", s.url, sbx.id))
        .header("x-api-key", &s.key)
        .json(&json!({"timeout": 60}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (st, _, _) = through(&s, &host, reqwest::Method::GET, "/", "", None).await;
    assert_eq!(st, 200);
}
