//! The `e2b` runtime against the E2B-compatible server on loopback (a real
//! HTTP server over the real host backend): exec with streaming, stdin,
//! signals and timeouts; files and tar; pause/resume and snapshot/restore;
//! adopt; and the failure cases (wrong key, sandbox gone, server down).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use common::TestServer;
use futures::StreamExt;
use godel_api::e2b::ServeConfig;
use godel_core::{
    ErrorCode, Event, ExecEvent, ExecRequest, FileKind, RuntimeProvider, SandboxState,
    SnapshotInfo, SnapshotRequest, SnapshotTarget, SpawnSpec, null_sink,
};
use godel_e2b::provider::RetryPolicy;
use godel_e2b::{E2bConfig, E2bProvider};

fn config(url: &str, key: &str) -> E2bConfig {
    E2bConfig {
        api_key: Some(key.to_string()),
        api_url: Some(url.to_string()),
        sandbox_url: Some(url.to_string()),
        domain: Some("godel.test".into()),
        retry: RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(5),
        },
        ..E2bConfig::default()
    }
}

async fn setup() -> (TestServer, E2bProvider) {
    let s = TestServer::start(ServeConfig::default()).await;
    let p = E2bProvider::new(config(&s.url, &s.key), null_sink()).unwrap();
    (s, p)
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["/bin/sh", "-c", script])
}

#[tokio::test]
async fn spawn_exec_and_status() {
    let (s, p) = setup().await;
    assert!(p.available().await.available);
    let mut spec = SpawnSpec::default();
    spec.env.insert("FROM_SPEC".into(), "spec".into());
    spec.labels.insert("owner".into(), "tests".into());
    p.spawn("rt-a", &spec).await.unwrap();
    let mut req = sh("echo $FROM_SPEC $FROM_REQ; echo warn >&2; exit 7");
    req.env.insert("FROM_REQ".into(), "req".into());
    let out = p.exec_collect("rt-a", req).await.unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, "spec req\n");
    assert_eq!(out.stderr, "warn\n");
    // Output streams before the command ends.
    let mut h = p
        .exec("rt-a", sh("echo first; read x; echo after:$x"))
        .await
        .unwrap();
    let mut req = sh("cat; echo done");
    req.interactive = true;
    assert!(matches!(
        h.events.next().await,
        Some(ExecEvent::Started { .. })
    ));
    assert!(matches!(
        h.events.next().await,
        Some(ExecEvent::Stdout { .. })
    ));
    drop(h);
    let mut h = p.exec("rt-a", req).await.unwrap();
    let tx = h.stdin.take().unwrap();
    tx.send(Bytes::from_static(b"typed\n")).await.unwrap();
    drop(tx);
    let out = h.collect().await.unwrap();
    assert_eq!(out.stdout, "typed\ndone\n");
    let mut as_root = sh("echo $USER");
    as_root.user = Some("root".into());
    assert_eq!(
        p.exec_collect("rt-a", as_root).await.unwrap().stdout,
        "root\n"
    );
    assert_eq!(
        p.exec_collect("rt-a", sh("echo $USER"))
            .await
            .unwrap()
            .stdout,
        "user\n"
    );
    let st = p.status("rt-a").await.unwrap();
    assert_eq!(st.state, SandboxState::Running);
    assert!(st.usage.is_some());
    assert_eq!(p.list().await.unwrap(), vec!["rt-a".to_string()]);
    let sid = p.sandbox_id("rt-a").unwrap();
    assert!(s.workspace(&sid).is_dir());
}

#[tokio::test]
async fn signals_and_timeouts() {
    let (_s, p) = setup().await;
    p.spawn("rt-s", &SpawnSpec::default()).await.unwrap();
    let mut h = p.exec("rt-s", sh("echo up; sleep 60")).await.unwrap();
    let sig = h.signal.take().unwrap();
    let mut ended = None;
    while let Some(ev) = h.events.next().await {
        match ev {
            ExecEvent::Stdout { .. } => sig.send(9).await.unwrap(),
            ExecEvent::Exit(st) => ended = Some(st),
            _ => {}
        }
    }
    let st = ended.unwrap();
    assert_eq!((st.signal, st.code), (Some(9), 137));
    let mut req = sh("sleep 60");
    req.timeout_ms = Some(200);
    let err = p.exec_collect("rt-s", req).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);
}

#[tokio::test]
async fn files_and_tar() {
    let (_s, p) = setup().await;
    p.spawn("rt-f", &SpawnSpec::default()).await.unwrap();
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    p.write_file("rt-f", "src/blob.bin", Bytes::from(blob.clone()))
        .await
        .unwrap();
    p.write_file("rt-f", "/home/user/src/a.txt", Bytes::from_static(b"a"))
        .await
        .unwrap();
    assert_eq!(
        &p.read_file("rt-f", "/home/user/src/blob.bin")
            .await
            .unwrap()[..],
        &blob[..]
    );
    let mut names: Vec<String> = p
        .list_dir("rt-f", "src")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    names.sort();
    assert_eq!(names, ["src/a.txt", "src/blob.bin"]);
    let st = p.stat("rt-f", "src/a.txt").await.unwrap();
    assert_eq!((st.kind, st.size), (FileKind::File, 1));
    p.make_dir("rt-f", "src/sub").await.unwrap();
    p.make_dir("rt-f", "src/sub").await.unwrap();
    p.rename("rt-f", "src/a.txt", "src/sub/b.txt")
        .await
        .unwrap();
    assert_eq!(
        p.stat("rt-f", "src/a.txt").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        p.read_file("rt-f", "nope").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        p.remove("rt-f", "src", false).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    let tar = p.download_tar("rt-f", "src").await.unwrap();
    p.upload_tar("rt-f", "copy", tar).await.unwrap();
    assert_eq!(
        &p.read_file("rt-f", "copy/sub/b.txt").await.unwrap()[..],
        b"a"
    );
    assert_eq!(
        &p.read_file("rt-f", "copy/blob.bin").await.unwrap()[..],
        &blob[..]
    );
    p.remove("rt-f", "src", true).await.unwrap();
    assert_eq!(
        p.stat("rt-f", "src").await.unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn pause_resume_snapshot_restore_and_adopt() {
    let (s, p) = setup().await;
    let spawned = p.spawn("rt-p", &SpawnSpec::default()).await.unwrap();
    p.write_file("rt-p", "keep.txt", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    p.pause("rt-p").await.unwrap();
    assert_eq!(p.status("rt-p").await.unwrap().state, SandboxState::Paused);
    p.resume("rt-p").await.unwrap();
    assert_eq!(&p.read_file("rt-p", "keep.txt").await.unwrap()[..], b"kept");

    // A second provider (a daemon restart) re-adopts from the handle.
    let p2 = E2bProvider::new(config(&s.url, &s.key), null_sink()).unwrap();
    let again = p2
        .adopt("rt-p", &SpawnSpec::default(), &spawned)
        .await
        .unwrap();
    assert!(again.is_some());
    assert_eq!(
        &p2.read_file("rt-p", "keep.txt").await.unwrap()[..],
        b"kept"
    );

    let dir = tempfile::tempdir().unwrap();
    let target = SnapshotTarget {
        snapshot_id: "snap-1".into(),
        dir: dir.path().to_path_buf(),
    };
    let art = p
        .snapshot("rt-p", &SnapshotRequest::default(), &target)
        .await
        .unwrap();
    assert!(dir.path().join("e2b-snapshot.json").is_file());
    assert_eq!(p.status("rt-p").await.unwrap().state, SandboxState::Paused);
    assert_eq!(
        p.exec("rt-p", sh("true")).await.err().unwrap().code,
        ErrorCode::Conflict
    );
    let info = SnapshotInfo {
        id: "snap-1".into(),
        runtime_id: "rt-p".into(),
        runtime: "e2b".into(),
        team: "alpha".into(),
        created_at: Utc::now(),
        size_bytes: art.size_bytes,
        kind: art.kind.clone(),
        name: None,
        description: None,
        labels: Default::default(),
        dir: dir.path().to_path_buf(),
        data: art.data.clone(),
    };
    p.restore("rt-q", &info, &SpawnSpec::default())
        .await
        .unwrap();
    assert_eq!(&p.read_file("rt-q", "keep.txt").await.unwrap()[..], b"kept");
    p.terminate("rt-p").await.unwrap();
    assert_eq!(
        p.exec_collect("rt-q", sh("cat keep.txt"))
            .await
            .unwrap()
            .stdout,
        "kept"
    );
    p.terminate("rt-q").await.unwrap();
    p.terminate("rt-q").await.unwrap();
    assert_eq!(
        p2.adopt("rt-p", &SpawnSpec::default(), &spawned)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.live(), 0);
}

#[tokio::test]
async fn wrong_key_is_unauthenticated() {
    let s = TestServer::start(ServeConfig::default()).await;
    let p = E2bProvider::new(config(&s.url, "not-a-key"), null_sink()).unwrap();
    let a = p.available().await;
    assert!(!a.available);
    assert!(a.reason.contains("rejected"), "{}", a.reason);
    let err = p.spawn("rt-x", &SpawnSpec::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(!err.retryable);
    let none = E2bProvider::new(
        E2bConfig {
            api_key: None,
            api_url: Some(s.url.clone()),
            ..E2bConfig::default()
        },
        null_sink(),
    )
    .unwrap();
    // Without E2B_API_KEY in the environment this runtime is unavailable.
    if std::env::var("E2B_API_KEY").is_err() {
        assert!(!none.available().await.available);
    }
}

#[tokio::test]
async fn sandbox_gone_is_not_found() {
    let (s, p) = setup().await;
    p.spawn("rt-g", &SpawnSpec::default()).await.unwrap();
    let sid = p.sandbox_id("rt-g").unwrap();
    // Killed behind the provider's back.
    reqwest::Client::new()
        .delete(format!("{}/sandboxes/{sid}", s.url))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    let err = p.exec("rt-g", sh("true")).await.err().unwrap();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    assert_eq!(
        p.read_file("rt-g", "x").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        p.status("rt-g").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    p.terminate("rt-g").await.unwrap();
    assert_eq!(
        p.exec("nope", sh("true")).await.err().unwrap().code,
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn server_down_is_unavailable_and_retried() {
    // A port that was just closed.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let sink = events.clone();
    let p = E2bProvider::new(
        config(&url, "e2b_no_server"),
        Arc::new(move |e| sink.lock().unwrap().push(e)),
    )
    .unwrap();
    let err = p.spawn("rt-d", &SpawnSpec::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.retryable);
    let retries = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == "e2b_retry")
        .count();
    assert_eq!(retries, 2);
    let a = p.available().await;
    assert!(!a.available);
    assert!(a.reason.contains("does not answer"), "{}", a.reason);
}

/// SDK-level calls through two hops: a server whose runtime is the `e2b`
/// provider, pointed at a second server with the host backend.
#[tokio::test]
async fn chained_through_a_second_server() {
    let upstream = TestServer::start(ServeConfig::default()).await;
    let inner = E2bProvider::new(config(&upstream.url, &upstream.key), null_sink()).unwrap();
    let front = TestServer::build(ServeConfig::default(), "e2b", move |_, _| Arc::new(inner)).await;
    let p = E2bProvider::new(config(&front.url, &front.key), null_sink()).unwrap();
    p.spawn("rt-chain", &SpawnSpec::default()).await.unwrap();
    let out = p
        .exec_collect("rt-chain", sh("echo via two hops"))
        .await
        .unwrap();
    assert_eq!(out.stdout, "via two hops\n");
    p.write_file("rt-chain", "c.txt", Bytes::from_static(b"c"))
        .await
        .unwrap();
    p.pause("rt-chain").await.unwrap();
    p.resume("rt-chain").await.unwrap();
    assert_eq!(&p.read_file("rt-chain", "c.txt").await.unwrap()[..], b"c");
    p.terminate("rt-chain").await.unwrap();
    assert_eq!(upstream.live(), 0);
}

#[tokio::test]
async fn keepalive_extends_the_remote_deadline() {
    let s = TestServer::start(ServeConfig::default()).await;
    let p = E2bProvider::new(
        E2bConfig {
            keepalive: Some(Duration::from_millis(20)),
            ..config(&s.url, &s.key)
        },
        null_sink(),
    )
    .unwrap();
    p.spawn("rt-k", &SpawnSpec::default()).await.unwrap();
    let sid = p.sandbox_id("rt-k").unwrap();
    let end_at = || async {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/sandboxes/{sid}", s.url))
            .header("x-api-key", &s.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["endAt"].as_str().unwrap().to_string()
    };
    let first = end_at().await;
    let mut moved = false;
    for _ in 0..500 {
        if end_at().await != first {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(moved, "the deadline was never extended");
    p.terminate("rt-k").await.unwrap();
}

/// A server whose `e2b` runtime points back at itself stops after a few hops.
#[tokio::test]
async fn a_loop_back_to_the_same_server_is_refused() {
    let s = TestServer::build(ServeConfig::default(), "e2b", |url, key| {
        Arc::new(E2bProvider::new(config(url, key), null_sink()).unwrap())
    })
    .await;
    let p = E2bProvider::new(config(&s.url, &s.key), null_sink()).unwrap();
    let err = p.spawn("rt-loop", &SpawnSpec::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert!(err.message.contains("points back"), "{err}");
}
