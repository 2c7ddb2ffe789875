//! The control-plane invocations: teams, config check, metrics and events
//! over TCP with tokens, quotas through the CLI, `--preserve`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, make_repo, stderr};

/// A raw HTTP GET over TCP; returns (status, content-type, first bytes of the body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut buf = vec![0u8; 16384];
    let mut got = Vec::new();
    // Read until the headers and some body arrived (SSE streams never end).
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(i) = text.find("\r\n\r\n")
            && text.len() > i + 4
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let ctype = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .map(|l| l[13..].trim().to_string())
        .unwrap_or_default();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, ctype, body)
}

/// The whole `/metrics` text (read to the end of the response).
fn metrics(addr: &str, token: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

const CONFIG: &str = r#"
[defaults]
runtime = "worktree"
fallback = ["worktree"]

[teams.alpha]
runtime = "worktree"
[teams.alpha.quota]
max_agents = 2
"#;

#[test]
fn teams_quotas_metrics_events_and_config_check() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("godel.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let d = Daemon::start_tcp(&["--config", cfg.to_str().unwrap()]);
    let addr = d.tcp.clone().unwrap();
    let repo = make_repo(d.home());
    let repo = repo.to_str().unwrap();

    // config check: good file ok; a bad key is named, non-zero exit.
    assert!(
        d.ok(&["config", "check", "--config", cfg.to_str().unwrap()])
            .starts_with("ok")
    );
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[teams.beta.quota]\nmemory = \"lots\"\n").unwrap();
    let o = d.run(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("teams.beta.quota.memory"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&bad, "[defaults]\nruntme = \"worktree\"\n").unwrap();
    let o = d.run(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("runtme"), "{}", stderr(&o));
    // serve refuses to start on a bad config, naming the key.
    let o = d
        .cmd()
        .env("GODEL_HOME", tmp.path().join("h2"))
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("runtme"), "{}", stderr(&o));

    // Teams: create with a quota, list, and the quota holds.
    d.ok(&[
        "team",
        "create",
        "gamma",
        "--max-agents",
        "1",
        "--max-memory",
        "8Gi",
        "--runtime",
        "worktree",
    ]);
    let teams = d.ok(&["team", "ls"]);
    assert!(
        teams.contains("gamma") && teams.contains("alpha"),
        "{teams}"
    );
    let o = d.run(&["team", "create", "gamma"]);
    assert!(stderr(&o).starts_with("CONFLICT"), "{}", stderr(&o));
    let g = d.last_line(&["spawn", "--repo", repo, "--team", "gamma"]);
    let o = d.run(&["spawn", "--repo", repo, "--team", "gamma"]);
    assert_eq!(o.status.code(), Some(6));
    assert!(
        stderr(&o).starts_with("RESOURCE_EXHAUSTED: team gamma quota exceeded for agents"),
        "{}",
        stderr(&o)
    );
    // Config quota for alpha: 2 agents.
    let a1 = d.last_line(&["spawn", "--repo", repo, "--team", "alpha"]);
    let _a2 = d.last_line(&["spawn", "--repo", repo, "--team", "alpha"]);
    let o = d.run(&["spawn", "--repo", repo, "--team", "alpha"]);
    assert!(
        stderr(&o).starts_with("RESOURCE_EXHAUSTED"),
        "{}",
        stderr(&o)
    );
    // A waiting spawn gets in when a slot frees.
    let waiter = d
        .cmd()
        .args(["spawn", "--repo", repo, "--team", "alpha", "--wait", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Free the slot only once the spawn is seen waiting in alpha's queue.
    let admin = d.last_line(&["token", "create", "--admin"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !metrics(&addr, &admin).contains("godel_queue_depth{team=\"alpha\"} 1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the --wait spawn never showed in godel_queue_depth"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.ok(&["rm", &a1]);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
    let o = d.run(&["team", "rm", "gamma"]);
    assert!(
        stderr(&o).starts_with("CONFLICT"),
        "a team with live runtimes cannot be removed: {}",
        stderr(&o)
    );
    d.ok(&["rm", &g]);
    d.ok(&["team", "rm", "gamma"]);

    // /metrics and /v1/events on TCP need a token; metrics need an admin one.
    assert_eq!(get(&addr, "/metrics", None).0, 401);
    assert_eq!(get(&addr, "/v1/events", None).0, 401);
    let team = d.last_line(&["token", "create", "--team", "alpha"]);
    let (st, ct, body) = get(&addr, "/metrics", Some(&admin));
    assert_eq!(st, 200);
    assert!(
        ct.contains("openmetrics") || ct.contains("text/plain"),
        "{ct}"
    );
    for name in [
        "godel_runtimes",
        "godel_spawn_duration_seconds",
        "godel_quota_used",
    ] {
        assert!(body.contains(name), "metrics miss {name}");
    }
    assert_eq!(get(&addr, "/metrics", Some(&team)).0, 403);
    let (st, ct, body) = get(&addr, "/v1/events?since=0", Some(&team));
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    assert!(body.contains("state_changed"), "{body}");
    assert!(!body.contains("gamma"), "a team sees only its own events");
}

#[test]
fn preserve_snapshots_on_sigterm_and_restores_on_start() {
    let mut d = Daemon::start(&["--preserve"]);
    let repo = make_repo(d.home());
    let id = d.last_line(&["spawn", "--repo", repo.to_str().unwrap()]);
    d.ok(&["exec", &id, "--", "sh", "-c", "echo kept > state.txt"]);
    assert!(d.stop().success());
    d.spawn_serve();
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["status", &id, "--json"])).unwrap();
    assert_eq!(st["state"], "running", "{st}\n{}", d.log());
    assert_eq!(d.ok(&["read", &id, "state.txt"]), "kept\n");
    assert!(
        d.ok(&["snapshot", "ls"]).lines().count() <= 1,
        "the preservation snapshot is cleaned up"
    );
}
