//! Bad input gets the documented code, a non-zero exit, and changes nothing.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::{Daemon, make_repo, stderr};

/// One raw HTTP/1.1 request over the daemon's socket; returns (status, body).
fn raw(d: &Daemon, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = UnixStream::connect(d.home().join("godel.sock")).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked bodies: take the JSON object between the first '{' and last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(serde_json::Value::Null),
        _ => serde_json::Value::Null,
    };
    (status, json)
}

fn count_runtimes(d: &Daemon) -> usize {
    serde_json::from_str::<Vec<serde_json::Value>>(&d.ok(&["ls", "--all", "--json"]))
        .unwrap()
        .len()
}

#[test]
fn bad_input_is_refused_with_stable_codes_and_changes_nothing() {
    let d = Daemon::start(&[]);
    let repo = make_repo(d.home());
    let id = d.last_line(&["spawn", "--repo", repo.to_str().unwrap()]);
    d.ok(&["write", &id, "keep.txt"]);
    let before = count_runtimes(&d);

    // Unknown id.
    for args in [
        vec!["status", "rt-0000000000000000"],
        vec!["exec", "rt-0000000000000000", "--", "true"],
        vec!["rm", "rt-0000000000000000"],
        vec!["restore", "snap-0000000000000000"],
    ] {
        let o = d.run(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("NOT_FOUND: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    // Malformed quantities (refused by the CLI and by the API).
    for q in ["lots", "512MB", "-1Gi"] {
        let flag = format!("--memory={q}");
        let o = d.run(&["spawn", "--repo", repo.to_str().unwrap(), &flag]);
        assert_eq!(o.status.code(), Some(2), "{q}");
        assert!(
            stderr(&o).starts_with("INVALID_ARGUMENT: malformed byte quantity"),
            "{}",
            stderr(&o)
        );
    }
    let o = d.run(&["spawn", "--repo", repo.to_str().unwrap(), "--cpu", "fast"]);
    assert!(
        stderr(&o).starts_with("INVALID_ARGUMENT: malformed CPU quantity"),
        "{}",
        stderr(&o)
    );
    let (status, body) = raw(
        &d,
        "POST",
        "/v1/runtimes",
        br#"{"repo":"/x","resources":{"memory":"12XB"}}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    assert!(body["message"].as_str().unwrap().contains("12XB"), "{body}");
    assert_eq!(body["retryable"], false);

    // Unknown JSON fields.
    let (status, body) = raw(
        &d,
        "POST",
        "/v1/runtimes",
        br#"{"repo":"/x","bogus_field":1}"#,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("bogus_field"),
        "{body}"
    );
    let (status, body) = raw(
        &d,
        "POST",
        &format!("/v1/runtimes/{id}/exec"),
        br#"{"cmd":["true"],"nope":true}"#,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{body}"
    );

    // Oversized body.
    let big = format!(r#"{{"repo":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let (status, body) = raw(&d, "POST", "/v1/runtimes", big.as_bytes());
    assert_eq!(status, 413);
    assert_eq!(body["code"], "INVALID_ARGUMENT");

    // Unknown ref / repo.
    let o = d.run(&[
        "spawn",
        "--repo",
        repo.to_str().unwrap(),
        "--ref",
        "no-such-ref",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-ref"), "{}", stderr(&o));
    let o = d.run(&["spawn", "--repo", "/nonexistent/repo"]);
    assert!(!o.status.success());

    // Traversal and escapes.
    for p in ["../../etc/passwd", "/etc/passwd", "a/../../x"] {
        let o = d.run(&["read", &id, p]);
        assert_eq!(o.status.code(), Some(2), "{p}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("INVALID_ARGUMENT: "),
            "{p}: {}",
            stderr(&o)
        );
        let o = d.run_stdin(&["write", &id, p], b"evil");
        assert!(!o.status.success(), "{p}");
    }
    d.ok(&["exec", &id, "--", "ln", "-s", "/etc", "etc-link"]);
    let o = d.run(&["read", &id, "etc-link/hostname"]);
    assert!(
        !o.status.success(),
        "a symlink out of the workspace must not be followed"
    );
    assert!(
        stderr(&o).starts_with("PERMISSION_DENIED") || stderr(&o).starts_with("INVALID_ARGUMENT"),
        "{}",
        stderr(&o)
    );
    let o = d.run_stdin(&["write", &id, "etc-link/evil"], b"x");
    assert!(!o.status.success());

    // Exec timeout kills the command and reports TIMEOUT.
    let o = d.run(&[
        "exec",
        &id,
        "--timeout",
        "0.3",
        "--",
        "sh",
        "-c",
        "sleep 30 & sleep 30",
    ]);
    assert_eq!(o.status.code(), Some(124));
    assert!(stderr(&o).starts_with("TIMEOUT: "), "{}", stderr(&o));
    let o = d.run(&[
        "exec",
        &id,
        "--json",
        "--timeout",
        "0.3",
        "--",
        "sleep",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(124));
    assert!(
        stderr(&o).contains("\"code\":\"TIMEOUT\""),
        "{}",
        stderr(&o)
    );

    // Nothing changed: same runtimes, the runtime still works, its file is intact.
    assert_eq!(count_runtimes(&d), before);
    assert_eq!(d.ok(&["exec", &id, "--", "cat", "keep.txt"]), "");
    assert!(d.ok(&["status", &id, "--json"]).contains("\"running\""));
}

#[test]
fn tcp_requires_a_token_and_scopes_teams() {
    let d = Daemon::start_tcp(&[]);
    let addr = d.tcp.clone().unwrap();
    let repo = make_repo(d.home());
    let alpha = d.last_line(&["token", "create", "--team", "alpha"]);
    let beta = d.last_line(&["token", "create", "--team", "beta", "--format", "gdl"]);
    // Team tokens are E2B-shaped API keys by default; godel's own shape on request.
    assert!(alpha.len() == 44 && alpha.starts_with("e2b_"), "{alpha}");
    assert!(beta.len() == 52 && beta.starts_with("gdl_"), "{beta}");
    let o = d
        .cmd()
        .args(["token", "create", "--team", "x", "--format", "hex"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let url = format!("http://{addr}");
    let as_team = |tok: &str, args: &[&str]| {
        d.cmd()
            .env("GODEL_URL", &url)
            .env("GODEL_TOKEN", tok)
            .args(args)
            .output()
            .unwrap()
    };
    // No token → UNAUTHENTICATED.
    let o = d
        .cmd()
        .env("GODEL_URL", &url)
        .args(["ls"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert!(stderr(&o).starts_with("UNAUTHENTICATED"), "{}", stderr(&o));
    let o = as_team("gdl_wrong", &["ls"]);
    assert!(stderr(&o).starts_with("UNAUTHENTICATED"), "{}", stderr(&o));

    let o = as_team(&alpha, &["spawn", "--repo", repo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    // beta cannot see, exec in, read, snapshot or remove alpha's runtime.
    for args in [
        vec!["status", id.as_str()],
        vec!["exec", id.as_str(), "--", "true"],
        vec!["read", id.as_str(), "x"],
        vec!["snapshot", "create", id.as_str()],
        vec!["rm", id.as_str()],
    ] {
        let o = as_team(&beta, &args);
        assert!(
            stderr(&o).starts_with("NOT_FOUND"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert!(!String::from_utf8_lossy(&as_team(&beta, &["ls"]).stdout).contains(&id));
    // a team token cannot act for another team or create tokens
    let o = as_team(
        &beta,
        &["spawn", "--repo", repo.to_str().unwrap(), "--team", "alpha"],
    );
    assert!(
        stderr(&o).starts_with("PERMISSION_DENIED"),
        "{}",
        stderr(&o)
    );
    let o = as_team(&beta, &["token", "create", "--team", "beta"]);
    assert!(
        stderr(&o).starts_with("PERMISSION_DENIED"),
        "{}",
        stderr(&o)
    );
    // alpha can
    assert!(
        as_team(&alpha, &["exec", &id, "--", "true"])
            .status
            .success()
    );
    // revoke
    d.ok(&["token", "revoke", &alpha]);
    let o = as_team(&alpha, &["ls"]);
    assert!(stderr(&o).starts_with("UNAUTHENTICATED"), "{}", stderr(&o));
    d.ok(&["rm", &id]);
}
