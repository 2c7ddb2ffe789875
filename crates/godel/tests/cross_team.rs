//! Every route of the API (read from the checked-in OpenAPI document, so a
//! new route cannot dodge this test) called with another team's token on
//! team alpha's runtime, snapshot, team and token: nothing of alpha's is
//! visible or touched.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, make_repo};

fn call(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > 65536 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, text)
}

#[test]
fn another_teams_token_reaches_nothing_on_any_route() {
    let d = Daemon::start_tcp(&[]);
    let addr = d.tcp.clone().unwrap();
    let repo = make_repo(d.home());
    let alpha_tok = d.last_line(&["token", "create", "--team", "alpha"]);
    let beta_tok = d.last_line(&["token", "create", "--team", "beta"]);
    let alpha_tok_id = {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&d.ok(&["token", "ls", "--json"])).unwrap();
        list.iter().find(|t| t["team"] == "alpha").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let rt = d.last_line(&["spawn", "--repo", repo.to_str().unwrap(), "--team", "alpha"]);
    d.ok(&["exec", &rt, "--", "sh", "-c", "echo s3cr3t-marker > x"]);
    let snap = d.last_line(&["snapshot", "create", &rt]);

    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let migrate_alpha = format!(r#"{{"agents":["{rt}"],"to":"worktree"}}"#);
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, _) in ops.as_object().unwrap() {
            let m = method.to_uppercase();
            let concrete = path
                .replace("/v1/runtimes/{id}", &format!("/v1/runtimes/{rt}"))
                .replace("/v1/snapshots/{id}", &format!("/v1/snapshots/{snap}"))
                .replace("{name}", "alpha")
                .replace("{team}", "alpha")
                .replace("{action}", "pause")
                .replace("{port}", "8080")
                .replace("/v1/tokens/{id}", &format!("/v1/tokens/{alpha_tok_id}"));
            let query = match path.rsplit('/').next().unwrap() {
                "files" | "ls" | "stat" | "mkdir" | "tar" => "?path=x",
                "rename" => "?from=x&to=y",
                "wait" => "?state=running&timeout_ms=10",
                "events" => "?since=0",
                "templates" if m == "POST" => "?name=x&team=alpha",
                _ => "",
            };
            let body = match (m.as_str(), path.as_str()) {
                ("POST", "/v1/runtimes") => r#"{"team":"alpha"}"#,
                ("POST", p) if p.ends_with("/exec") || p.ends_with("/exec/stream") => {
                    r#"{"cmd":["rm","-rf","x"]}"#
                }
                ("POST", p) if p.ends_with("/fork") => r#"{"count":1}"#,
                ("POST", p) if p.ends_with("/ttl") => r#"{"ttl_secs":1}"#,
                ("POST", "/v1/teams") => r#"{"name":"alpha"}"#,
                ("POST", "/v1/migrations") => migrate_alpha.as_str(),
                ("POST", "/v1/budgets") => r#"{"team":"alpha","limit_usd":1}"#,
                ("POST", "/v1/rollouts") => {
                    r#"{"team":"alpha","to":"worktree","steps":"1,100","interval":"1m","max_error_rate":"2%"}"#
                }
                ("POST", "/v1/tokens") => r#"{"team":"alpha"}"#,
                ("POST", p) if p.ends_with("/snapshots") => "{}",
                ("PUT", _) => "overwrite",
                _ => "",
            };
            let (status, text) = call(&addr, &m, &format!("{concrete}{query}"), &beta_tok, body);
            let leaks = text.contains(&rt)
                || text.contains(&snap)
                || text.contains(&alpha_tok_id)
                || text.contains("s3cr3t-marker");
            let ok = match (m.as_str(), path.as_str()) {
                // Resources of alpha: invisible.
                (_, p)
                    if p.starts_with("/v1/runtimes/{id}")
                        || p.starts_with("/v1/snapshots/{id}") =>
                {
                    status == 404
                }
                // Moving alpha's agent: it does not exist for beta.
                ("POST", "/v1/migrations") => status == 404,
                // Acting for alpha or as admin: refused.
                ("POST", "/v1/runtimes")
                | ("POST", "/v1/teams")
                | ("POST", "/v1/tokens")
                | ("POST", "/v1/budgets")
                | ("POST", "/v1/rollouts") => status == 403,
                // Building a template for alpha: refused before the
                // context is looked at.
                ("POST", "/v1/templates") => status == 403 && !leaks,
                // Templates are per team: beta has none named alpha.
                (_, "/v1/templates/{name}") => status == 404 && !leaks,
                // Alpha's rollout: as invisible as a missing one.
                ("POST", "/v1/rollouts/{team}/{action}") => status == 404,
                ("DELETE", "/v1/teams/{name}")
                | ("DELETE", "/v1/budgets/{team}")
                | ("DELETE", "/v1/tokens/{id}")
                | ("GET", "/v1/replicas")
                | ("GET", "/metrics") => status == 403,
                // Listings and the rest: allowed, but nothing of alpha's in them.
                _ => (200..300).contains(&status) && !leaks,
            };
            assert!(
                ok,
                "{m} {path}: status {status}, leaks {leaks}:\n{}",
                &text[..text.len().min(600)]
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} routes checked");

    // Alpha's things are untouched.
    assert_eq!(d.ok(&["read", &rt, "x"]), "s3cr3t-marker\n");
    assert!(d.ok(&["snapshot", "ls"]).contains(&snap));
    let o = d
        .cmd()
        .env("GODEL_URL", format!("http://{addr}"))
        .env("GODEL_TOKEN", &alpha_tok)
        .args(["ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&rt));
}
