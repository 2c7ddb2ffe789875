//! The `e2b` runtime of one godel driving sandboxes on a second, real godel
//! that serves the E2B API on loopback — and the failure cases.

mod common;

use common::{Daemon, stderr};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn e2b_runtime_against_a_second_godel() {
    // Upstream godel serving the E2B API.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut upstream = Daemon::start(&["--e2b-listen", &addr]);
    let key = upstream.last_line(&["token", "create", "--team", "remote"]);
    // Wait for the E2B listener.
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Downstream godel whose e2b runtime points at the upstream.
    let dir = tempfile::tempdir().unwrap();
    let write_cfg = |key: &str| {
        let cfg = dir
            .path()
            .join(format!("godel-{}.toml", &key[..6.min(key.len())]));
        std::fs::write(
            &cfg,
            format!(
                "[retry]\nmax_attempts = 1\n[e2b]\napi_key = \"{key}\"\napi_url = \"http://{addr}\"\nsandbox_url = \"http://{addr}\"\n"
            ),
        )
        .unwrap();
        cfg
    };
    let cfg = write_cfg(&key);
    let down = Daemon::start(&["--config", cfg.to_str().unwrap()]);
    let doctor = down.ok(&["doctor"]);
    assert!(
        doctor
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("e2b")),
        "{doctor}"
    );

    let id = down.last_line(&["spawn", "--runtime", "e2b"]);
    let o = down.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo remote $((6*7)); echo e >&2; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "remote 42\n");
    assert_eq!(stderr(&o), "e\n");
    let w = down.run_stdin(&["write", &id, "dir/a.bin"], b"\x00\x01binary");
    assert!(w.status.success(), "{}", stderr(&w));
    assert_eq!(
        down.run(&["read", &id, "dir/a.bin"]).stdout,
        b"\x00\x01binary"
    );
    // The sandbox really lives upstream, in the remote team.
    let up_list = upstream.ok(&["ls", "--json"]);
    assert!(up_list.contains("\"remote\""), "{up_list}");

    // Snapshot (pause) and restore (connect) keep the files.
    let snap = down.last_line(&["snapshot", "create", &id]);
    let restored = down.last_line(&["restore", &snap]);
    assert_eq!(
        down.run(&["read", &restored, "dir/a.bin"]).stdout,
        b"\x00\x01binary"
    );
    down.ok(&["rm", &restored]);

    // Sandbox gone upstream → NOT_FOUND downstream.
    let other = down.last_line(&["spawn", "--runtime", "e2b"]);
    let remote_ids: Vec<serde_json::Value> =
        serde_json::from_str(&upstream.ok(&["ls", "--json"])).unwrap();
    for r in &remote_ids {
        upstream.ok(&["rm", r["id"].as_str().unwrap()]);
    }
    let o = down.run(&["exec", &other, "--", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).starts_with("NOT_FOUND"), "{}", stderr(&o));

    // Wrong key → the spawn is refused as an auth failure.
    let bad_cfg = write_cfg("gdl_not_a_real_key");
    let bad = Daemon::start(&["--config", bad_cfg.to_str().unwrap()]);
    let o = bad.run(&["spawn", "--runtime", "e2b"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.starts_with("PERMISSION_DENIED") || e.starts_with("UNAUTHENTICATED"),
        "{e}"
    );

    // Upstream down → UNAVAILABLE (retryable).
    upstream.kill9();
    let o = down.run(&["spawn", "--runtime", "e2b", "--json", "--timeout", "60"]);
    assert!(!o.status.success());
    let err: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(err["code"], "UNAVAILABLE", "{err}");
    assert_eq!(err["retryable"], true, "{err}");
    upstream.spawn_serve();
}
