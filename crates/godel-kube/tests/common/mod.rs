//! Shared test helpers: a fake API server with a provider pointed at it,
//! an event recorder, and the end-to-end scenario both the fake suite and
//! the real-cluster suite run.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use godel_core::{
    Event, EventSink, ExecRequest, RuntimeProvider, SnapshotInfo, SnapshotRequest, SnapshotTarget,
    SpawnSpec,
};
use godel_fake_kube::{FakeApiServer, FakeOptions};
use godel_kube::{KubeConfig, KubeProvider};
use parking_lot::Mutex;

pub struct Env {
    pub fake: FakeApiServer,
    pub provider: KubeProvider,
    pub events: Arc<Mutex<Vec<Event>>>,
}

pub fn recorder() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let sink: EventSink = Arc::new(move |ev| e.lock().push(ev));
    (sink, events)
}

pub async fn env_with(opts: FakeOptions, cfg: KubeConfig) -> Env {
    let fake = FakeApiServer::start(opts)
        .await
        .expect("start fake apiserver");
    let (sink, events) = recorder();
    let provider = KubeProvider::with_client(fake.client().unwrap(), cfg, sink).unwrap();
    Env {
        fake,
        provider,
        events,
    }
}

pub async fn env() -> Env {
    env_with(FakeOptions::default(), KubeConfig::default()).await
}

pub fn spec(team: &str) -> SpawnSpec {
    SpawnSpec {
        runtime: Some("kata".into()),
        team: Some(team.into()),
        ..Default::default()
    }
}

/// Wait (up to a generous deadline) until an event matching `pred` was recorded.
pub async fn wait_event(
    events: &Arc<Mutex<Vec<Event>>>,
    pred: impl Fn(&Event) -> bool,
) -> Option<Event> {
    for _ in 0..500 {
        if let Some(e) = events.lock().iter().find(|e| pred(e)) {
            return Some(e.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

pub async fn sh(p: &dyn RuntimeProvider, id: &str, script: &str) -> godel_core::ExecOutput {
    p.exec_collect(id, ExecRequest::new(["sh", "-c", script]))
        .await
        .expect("exec")
}

/// Spawn, exec, files, snapshot → change → restore, terminate: the same on
/// the fake and on a real cluster.
pub async fn scenario(p: &dyn RuntimeProvider, team: &str, snap_dir: &std::path::Path) {
    let id = godel_core::new_sandbox_id();
    let mut s = spec(team);
    s.resources.cpu = Some(godel_core::Cpu(500));
    s.resources.memory = Some(godel_core::ByteQuantity(256 << 20));
    s.env.insert("GREETING".into(), "hello".into());
    p.spawn(&id, &s).await.expect("spawn");
    let out = sh(p, &id, "echo $GREETING; echo oops >&2; exit 3").await;
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");
    assert_eq!(out.exit_code, 3);
    p.write_file(&id, "notes/a.txt", Bytes::from_static(b"v1"))
        .await
        .unwrap();
    assert_eq!(
        &p.read_file(&id, "/home/user/notes/a.txt").await.unwrap()[..],
        b"v1"
    );
    let target = SnapshotTarget {
        snapshot_id: godel_core::new_snapshot_id(),
        dir: snap_dir.to_path_buf(),
    };
    let art = p
        .snapshot(&id, &SnapshotRequest::default(), &target)
        .await
        .expect("snapshot");
    assert_eq!(art.kind, "workspace");
    p.write_file(&id, "notes/a.txt", Bytes::from_static(b"v2"))
        .await
        .unwrap();
    let info = SnapshotInfo {
        id: target.snapshot_id.clone(),
        runtime_id: id.clone(),
        runtime: "kata".into(),
        team: team.into(),
        created_at: chrono::Utc::now(),
        size_bytes: art.size_bytes,
        kind: art.kind.clone(),
        name: None,
        description: None,
        labels: Default::default(),
        dir: snap_dir.to_path_buf(),
        data: art.data.clone(),
    };
    let restored = godel_core::new_sandbox_id();
    p.restore(&restored, &info, &spec(team))
        .await
        .expect("restore");
    assert_eq!(
        &p.read_file(&restored, "notes/a.txt").await.unwrap()[..],
        b"v1"
    );
    assert_eq!(&p.read_file(&id, "notes/a.txt").await.unwrap()[..], b"v2");
    p.terminate(&id).await.unwrap();
    p.terminate(&restored).await.unwrap();
    p.terminate(&id).await.expect("terminate is idempotent");
}

pub fn snapshot_info(
    id: &str,
    team: &str,
    dir: &std::path::Path,
    art: &godel_core::SnapshotArtifact,
) -> SnapshotInfo {
    SnapshotInfo {
        id: godel_core::new_snapshot_id(),
        runtime_id: id.into(),
        runtime: "kata".into(),
        team: team.into(),
        created_at: chrono::Utc::now(),
        size_bytes: art.size_bytes,
        kind: art.kind.clone(),
        name: None,
        description: None,
        labels: Default::default(),
        dir: dir.to_path_buf(),
        data: art.data.clone(),
    }
}
