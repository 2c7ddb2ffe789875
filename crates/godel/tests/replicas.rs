//! Three replicas over one PostgreSQL store, the kata runtime against the
//! in-repo fake Kubernetes API server: a sandbox spawned through replica A
//! answers exec through replica B (forwarded to its owner); after A is
//! killed with SIGKILL a surviving replica takes A's sandboxes over within
//! two lease periods and they answer exec again; nothing is lost or
//! duplicated; A's host-bound (worktree) sandbox is reported lost with the
//! reason; A restarted owns nothing and sees everything.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Daemon, stderr, stdout};
use godel_fake_kube::{FakeApiServer, FakeOptions};
use godel_testkit::{Need, require};

const LEASE_SECS: f64 = 3.0;

fn replica(id: &str, db: &str, kubeconfig: &str) -> Daemon {
    let lease = LEASE_SECS.to_string();
    Daemon::start_tcp_env(
        &["--database", db, "--replica-id", id, "--lease-secs", &lease],
        &[("KUBECONFIG", kubeconfig)],
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn status(d: &Daemon, token: &str, id: &str) -> serde_json::Value {
    let out = d
        .tcp_cmd(token)
        .args(["--json", "status", id])
        .output()
        .unwrap();
    serde_json::from_str(&ok(out, "status")).unwrap()
}

fn exec_echo(d: &Daemon, token: &str, id: &str, word: &str) -> Output {
    d.tcp_cmd(token)
        .args(["exec", id, "--", "echo", word])
        .output()
        .unwrap()
}

/// The status line and headers of a plain `GET` on the native TCP API.
fn raw_get(d: &Daemon, token: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.tcp.as_deref().unwrap()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_hands_its_kata_sandboxes_to_a_survivor() {
    require!(Need::Postgres);
    let base = godel_testkit::postgres_url().unwrap();
    let db = godel_testkit::postgres_schema_url(&base, "replicas");
    let fake = FakeApiServer::start(FakeOptions::default()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kc = common::kubeconfig(tmp.path(), &fake.url());
    let kc = kc.to_str().unwrap().to_string();

    let mut a = replica("replica-a", &db, &kc);
    let b = replica("replica-b", &db, &kc);
    let c = replica("replica-c", &db, &kc);
    let token = a.last_line(&["token", "create", "--team", "alpha"]);

    // Spawn through A: A owns them.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = a
            .tcp_cmd(&token)
            .args(["spawn", "--runtime", "kata"])
            .output()
            .unwrap();
        ids.push(
            ok(out, "spawn kata through A")
                .trim()
                .lines()
                .last()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        assert_eq!(status(&b, &token, id)["owner"], "replica-a");
    }
    // Through B, A answers: B forwards (the answer names the replica that gave it).
    let head = raw_get(&b, &token, &format!("/v1/runtimes/{}", ids[0]));
    assert!(head.contains("x-godel-replica: replica-a"), "{head}");
    let head = raw_get(&a, &token, &format!("/v1/runtimes/{}", ids[0]));
    assert!(
        !head.contains("x-godel-replica"),
        "A answers itself: {head}"
    );
    let out = exec_echo(&b, &token, &ids[0], "through-b");
    assert_eq!(ok(out, "exec through B").trim(), "through-b");
    // File bodies stream through the forwarder both ways (1 MiB).
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let out = {
        use std::io::Write;
        let mut child = b
            .tcp_cmd(&token)
            .args(["write", &ids[0], "/home/user/big.bin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&body).unwrap();
        child.wait_with_output().unwrap()
    };
    ok(out, "write through B");
    let out = c
        .tcp_cmd(&token)
        .args(["read", &ids[0], "/home/user/big.bin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "read through C: {}", stderr(&out));
    assert!(out.stdout == body, "the file read back through C differs");
    // A host-bound sandbox on A (worktree runs on A's machine only).
    let repo = common::make_repo(tmp.path());
    let out = a
        .tcp_cmd(&token)
        .args([
            "spawn",
            "--runtime",
            "worktree",
            "--repo",
            repo.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let local = ok(out, "spawn worktree through A")
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();

    a.kill9();
    let killed = Instant::now();
    let deadline = Duration::from_secs_f64(2.0 * LEASE_SECS);
    let mut taken = None;
    while killed.elapsed() < deadline + Duration::from_secs(30) {
        // While A's lease runs, reads are answered from the store.
        let owners: Vec<String> = ids
            .iter()
            .map(|id| {
                status(&c, &token, id)["owner"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if owners.iter().all(|o| o == "replica-b" || o == "replica-c") {
            taken = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let taken = taken.expect("no surviving replica took A's sandboxes");
    eprintln!(
        "take-over after SIGKILL: {:.2} s (lease {LEASE_SECS} s)",
        taken.as_secs_f64()
    );
    assert!(
        taken <= deadline,
        "take-over took {:.2} s, more than two lease periods ({:.1} s)",
        taken.as_secs_f64(),
        deadline.as_secs_f64()
    );
    // They answer exec, through C and through B (one of them forwards).
    for id in &ids {
        let rec = status(&c, &token, id);
        assert_eq!(rec["state"], "running", "{rec}");
        assert_eq!(
            ok(exec_echo(&c, &token, id, "after"), "exec through C").trim(),
            "after"
        );
        assert_eq!(
            ok(exec_echo(&b, &token, id, "again"), "exec through B").trim(),
            "again"
        );
    }
    // The host-bound sandbox is lost, with the reason.
    let rec = status(&c, &token, &local);
    assert_eq!(rec["state"], "error", "{rec}");
    let reason = rec["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("replica-a lost its lease"), "{reason}");

    // Nothing lost or duplicated: each sandbox listed once by every survivor,
    // one pod each in the cluster, one take-over event.
    for d in [&b, &c] {
        let out = d.tcp_cmd(&token).args(["--json", "ls"]).output().unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_str(&ok(out, "ls")).unwrap();
        let live: Vec<&str> = list
            .iter()
            .filter(|r| r["state"] == "running")
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut got = live.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "every sandbox exactly once");
    }
    let pods: usize = fake
        .names("pods", None)
        .iter()
        .filter(|n| ids.iter().any(|id| n.contains(id.as_str())))
        .count();
    assert_eq!(
        pods,
        ids.len(),
        "one pod per sandbox: {:?}",
        fake.names("pods", None)
    );
    let events = b.ok(&["--json", "events", "--kind", "replica_takeover"]);
    let takeovers: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    assert_eq!(takeovers.len(), 1, "{takeovers:?}");
    assert_eq!(takeovers[0]["data"]["from"], "replica-a");

    // A comes back: it was taken over, so it owns nothing and adopts nothing,
    // and still answers for everything (forwarding to the new owners).
    a.spawn_serve();
    for id in &ids {
        assert_ne!(status(&a, &token, id)["owner"], "replica-a");
        assert_eq!(
            ok(exec_echo(&a, &token, id, "back"), "exec through A").trim(),
            "back"
        );
    }
    // Its lost worktree sandbox stayed its own, and it released it.
    assert_eq!(status(&a, &token, &local)["owner"], "replica-a");
    assert!(
        a.log().contains("released sandboxes reported lost"),
        "A releases the jail of its lost sandbox:\n{}",
        a.log()
    );
    assert!(
        !a.log().contains("re-adoption failed"),
        "A must not touch sandboxes it no longer owns:\n{}",
        a.log()
    );
    for id in &ids {
        ok(c.tcp_cmd(&token).args(["rm", id]).output().unwrap(), "rm");
    }
}
