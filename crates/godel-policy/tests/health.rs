//! The health monitor driving restarts of fault-injected runtimes, the way the
//! daemon will: probe = provider status (+ an exec probe), actions executed by
//! a handler task that reports back with `restart_finished`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use godel_core::{ExecRequest, RuntimeProvider, SandboxState, SnapshotInfo, SpawnSpec};
use godel_policy::{
    HealthAction, HealthEvent, HealthMonitor, HealthPolicy, Probe, RestartPolicy, RestartSource,
};
use godel_testkit::FakeRuntime;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn status_probe(p: FakeRuntime) -> godel_policy::health::ProbeFn {
    Arc::new(move |id: String| {
        let p = p.clone();
        async move {
            match p.status(&id).await {
                Ok(s) if !s.state.is_terminal() => Probe::healthy(),
                Ok(s) => Probe::dead(s.reason.unwrap_or_default()),
                Err(e) => Probe::dead(e.to_string()),
            }
        }
        .boxed()
    })
}

async fn next(rx: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an action in time")
        .expect("channel open")
}

/// Carry out actions like the daemon: restart = spawn again under the same id.
fn handler(
    p: FakeRuntime,
    mon: HealthMonitor,
    mut rx: mpsc::UnboundedReceiver<HealthEvent>,
) -> tokio::task::JoinHandle<Vec<(Instant, HealthAction)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(ev) = rx.recv().await {
            seen.push((Instant::now(), ev.action.clone()));
            match ev.action {
                HealthAction::Restart { source, .. } => {
                    p.terminate(&ev.id).await.ok();
                    let res = match source {
                        RestartSource::Recreate => p.spawn(&ev.id, &SpawnSpec::default()).await,
                        RestartSource::Snapshot { .. } => unreachable!("no snapshot in this test"),
                    };
                    mon.restart_finished(&ev.id, res.map(|_| ()).map_err(|e| e.to_string()));
                }
                HealthAction::GiveUp { .. } => return seen,
                _ => {}
            }
        }
        seen
    })
}

#[tokio::test(start_paused = true)]
async fn crashing_runtime_is_restarted_with_backoff_then_given_up() {
    let p = FakeRuntime::new("fault");
    // Every (re)spawned runtime dies 30 s after it starts.
    p.die_after_spawn(Some(Duration::from_secs(30)));
    p.spawn("rt-1", &SpawnSpec::default()).await.unwrap();
    let policy = HealthPolicy {
        interval: Duration::from_secs(10),
        restart: RestartPolicy::OnFailure,
        max_restarts: 3,
        backoff: Duration::from_secs(1),
        ..Default::default()
    };
    let (mon, rx) = HealthMonitor::new(policy, status_probe(p.clone()));
    let start = Instant::now();
    mon.watch("rt-1", None);
    let seen = handler(p.clone(), mon.clone(), rx).await.unwrap();
    let at = |t: Instant| (t - start).as_secs();
    let summary: Vec<(u64, String)> = seen
        .iter()
        .map(|(t, a)| {
            let what = match a {
                HealthAction::Died { restart_in_ms, .. } => format!("died {restart_in_ms:?}"),
                HealthAction::Restart { attempt, .. } => format!("restart {attempt}"),
                HealthAction::GiveUp { restarts, .. } => format!("give up {restarts}"),
                other => format!("{other:?}"),
            };
            (at(*t), what)
        })
        .collect();
    // Dies at 30 s, seen by the probe at 30 s; restart after 1 s (31 s). The
    // new life answers the probe at 41 s (announced as healthy again) and
    // dies at 61 s; probes run 10 s after the restart: 41, 51, 61.
    // Restart 2 after 2 s (63 s), dies at 93 s, seen at 93 s; restart 3 after
    // 4 s (97 s), dies at 127 s, seen at 127 s; then it gives up.
    assert_eq!(
        summary,
        [
            (30, "died Some(1000)".to_string()),
            (31, "restart 1".to_string()),
            (41, "Healthy".to_string()),
            (61, "died Some(2000)".to_string()),
            (63, "restart 2".to_string()),
            (73, "Healthy".to_string()),
            (93, "died Some(4000)".to_string()),
            (97, "restart 3".to_string()),
            (107, "Healthy".to_string()),
            (127, "died None".to_string()),
            (127, "give up 3".to_string()),
        ]
    );
    assert_eq!(p.count("spawn"), 4);
    assert_eq!(mon.health("rt-1"), Some(godel_policy::Health::Failed));
    mon.shutdown();
}

#[tokio::test]
async fn unresponsive_runtime_goes_unhealthy_then_is_restored_from_its_snapshot() {
    let p = FakeRuntime::new("fault");
    p.spawn("rt-2", &SpawnSpec::default()).await.unwrap();
    p.write_file("rt-2", "state.txt", bytes::Bytes::from_static(b"v1"))
        .await
        .unwrap();
    let snap_dir = tempfile::tempdir().unwrap();
    let target = godel_core::SnapshotTarget {
        snapshot_id: "snap-1".into(),
        dir: snap_dir.path().to_path_buf(),
    };
    p.snapshot("rt-2", &Default::default(), &target)
        .await
        .unwrap();
    let info = SnapshotInfo {
        id: "snap-1".into(),
        runtime_id: "rt-2".into(),
        runtime: "fault".into(),
        team: "alpha".into(),
        created_at: chrono::Utc::now(),
        size_bytes: 2,
        kind: "workspace".into(),
        name: None,
        description: None,
        labels: Default::default(),
        dir: snap_dir.path().to_path_buf(),
        data: Default::default(),
    };
    // Probe: alive from status, responsive from a real exec of `true`.
    let p2 = p.clone();
    let probe: godel_policy::health::ProbeFn = Arc::new(move |id: String| {
        let p = p2.clone();
        async move {
            match p.status(&id).await {
                Ok(s) if s.state == SandboxState::Running => {}
                Ok(s) => return Probe::dead(s.reason.unwrap_or_default()),
                Err(e) => return Probe::dead(e.to_string()),
            }
            let mut req = ExecRequest::new(["true"]);
            req.timeout_ms = Some(30);
            match p.exec_collect(&id, req).await {
                Ok(o) if o.exit_code == 0 => Probe::healthy(),
                Ok(o) => Probe::unresponsive(format!("probe exited {}", o.exit_code)),
                Err(e) => Probe::unresponsive(e.to_string()),
            }
        }
        .boxed()
    });
    let policy = HealthPolicy {
        interval: Duration::from_millis(100),
        unhealthy_after: 2,
        dead_after: 4,
        restart: RestartPolicy::OnFailure,
        backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let (mon, mut rx) = HealthMonitor::new(policy, probe);
    mon.watch("rt-2", None);
    mon.set_snapshot("rt-2", Some("snap-1".into()));
    // Healthy probes produce no actions.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(rx.try_recv().is_err());
    p.set_unresponsive("rt-2", true);
    let ev = next(&mut rx).await;
    assert!(
        matches!(ev.action, HealthAction::Unhealthy { failures: 2, .. }),
        "{ev:?}"
    );
    let ev = next(&mut rx).await;
    assert!(
        matches!(&ev.action, HealthAction::Died { restart_in_ms: Some(50), reason } if reason.starts_with("unresponsive for 4 probes")),
        "{ev:?}"
    );
    let ev = next(&mut rx).await;
    let HealthAction::Restart {
        source, attempt: 1, ..
    } = ev.action
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        source,
        RestartSource::Snapshot {
            snapshot_id: "snap-1".into()
        }
    );
    p.terminate("rt-2").await.unwrap();
    p.restore("rt-2", &info, &SpawnSpec::default())
        .await
        .unwrap();
    mon.restart_finished("rt-2", Ok(()));
    let ev = next(&mut rx).await;
    assert_eq!(ev.action, HealthAction::Healthy);
    let restored = p.read_file("rt-2", "state.txt").await.unwrap();
    assert_eq!(&restored[..], b"v1");
    mon.unwatch("rt-2");
    assert!(mon.watched().is_empty());
}
