//! Time to live and parking over the real control plane (SQLite store,
//! snapshot store) and godel-testkit's `FakeRuntime`: deadlines from
//! `ttl_secs`, the reaper killing or parking, `resume` bringing a parked
//! sandbox back under its id with its files, and what is refused.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, Utc};
use godel_control::{Caller, Control, Settings, event_channel};
use godel_core::{ErrorCode, OnTimeout, ParkReason, SandboxState, SpawnSpec};
use godel_testkit::FakeRuntime;

async fn control() -> (Arc<Control>, Arc<FakeRuntime>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = Control::with_store(
        dir.path(),
        godel_control::Store::open_scratch().unwrap(),
        Settings::default(),
    )
    .unwrap();
    let (_sink, rx) = event_channel();
    c.attach_event_receiver(rx);
    let fake = Arc::new(FakeRuntime::new("worktree"));
    c.register(fake.clone());
    (c, fake, dir)
}

fn spec(ttl: Option<u64>, on_timeout: OnTimeout) -> SpawnSpec {
    SpawnSpec {
        runtime: Some("worktree".into()),
        ttl_secs: ttl,
        on_timeout,
        ..Default::default()
    }
}

fn kinds(c: &Control, kind: &str) -> usize {
    c.events_since(&Caller::Admin, 0, 10_000)
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

#[tokio::test]
async fn the_reaper_kills_or_parks_what_ran_out_of_time() {
    let (c, fake, _d) = control().await;
    let admin = Caller::Admin;
    let kill = c
        .spawn(&admin, spec(Some(30), OnTimeout::Kill))
        .await
        .unwrap();
    let park = c
        .spawn(&admin, spec(Some(30), OnTimeout::Pause))
        .await
        .unwrap();
    let forever = c.spawn(&admin, spec(None, OnTimeout::Kill)).await.unwrap();
    let t = kill.expires_at.expect("a deadline from ttl_secs");
    assert!(t > Utc::now() + Duration::seconds(25) && t <= Utc::now() + Duration::seconds(30));
    assert_eq!(forever.expires_at, None);
    c.write_file(&admin, &park.id, "keep.txt", Bytes::from_static(b"kept"))
        .await
        .unwrap();

    assert!(c.reap_expired(Utc::now()).await.is_empty());
    let mut acted = c.reap_expired(Utc::now() + Duration::seconds(60)).await;
    acted.sort();
    let mut want = vec![kill.id.clone(), park.id.clone()];
    want.sort();
    assert_eq!(acted, want);
    assert_eq!(kinds(&c, "expired"), 2);

    let k = c.visible_sandbox(&admin, &kill.id).unwrap();
    assert_eq!((k.state, k.parked), (SandboxState::Terminated, None));
    let p = c.visible_sandbox(&admin, &park.id).unwrap();
    assert_eq!(p.state, SandboxState::Terminated);
    let parked = p.parked.expect("parked");
    assert_eq!(parked.reason, ParkReason::Paused);
    c.get_snapshot(&admin, &parked.snapshot_id).unwrap();
    assert_eq!(
        fake.live(),
        vec![forever.id.clone()],
        "parking released the runtime"
    );
    assert_eq!(
        c.store().team_usage("default").unwrap().agents,
        1,
        "parked holds no quota"
    );

    // Resume: same id, same files, the snapshot is gone, a fresh deadline.
    let back = c.resume(&admin, &park.id).await.unwrap();
    assert_eq!(
        (back.id.as_str(), back.state),
        (park.id.as_str(), SandboxState::Running)
    );
    assert_eq!(back.parked, None);
    assert!(back.expires_at.unwrap() > Utc::now() + Duration::seconds(25));
    let data = c.read_file(&admin, &park.id, "keep.txt").await.unwrap();
    assert_eq!(&data[..], b"kept");
    assert_eq!(
        c.get_snapshot(&admin, &parked.snapshot_id)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert!(
        c.reap_expired(Utc::now()).await.is_empty(),
        "reaped only once"
    );
}

#[tokio::test]
async fn deadlines_move_and_parked_sandboxes_can_be_discarded() {
    let (c, _fake, _d) = control().await;
    let alpha = Caller::Team("alpha".into());
    let r = c.spawn(&alpha, spec(None, OnTimeout::Pause)).await.unwrap();
    assert!(
        c.reap_expired(Utc::now() + Duration::days(365))
            .await
            .is_empty()
    );
    let at = Utc::now() + Duration::seconds(5);
    let moved = c.set_expiry(&alpha, &r.id, Some(at)).unwrap();
    assert_eq!(
        moved.expires_at.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    // Another team sees nothing.
    let beta = Caller::Team("beta".into());
    assert_eq!(
        c.set_expiry(&beta, &r.id, None).unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(c.reap_expired(at).await, vec![r.id.clone()]);
    let snap = c
        .visible_sandbox(&alpha, &r.id)
        .unwrap()
        .parked
        .unwrap()
        .snapshot_id;
    // A stopped sandbox's deadline cannot change.
    assert_eq!(
        c.set_expiry(&alpha, &r.id, None).unwrap_err().code,
        ErrorCode::Conflict
    );
    // Terminating a parked sandbox deletes its snapshot; it stays stopped.
    let done = c.terminate(&alpha, &r.id).await.unwrap();
    assert_eq!((done.state, done.parked), (SandboxState::Terminated, None));
    assert_eq!(
        c.get_snapshot(&alpha, &snap).unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.resume(&alpha, &r.id).await.unwrap_err().code,
        ErrorCode::Conflict
    );
}

/// `rm` of a sandbox that died releases what its runtime still holds (its
/// workspace, jail or VM files); the record keeps its `error` state.
#[tokio::test]
async fn removing_a_failed_sandbox_releases_the_runtime() {
    let (c, fake, _d) = control().await;
    let admin = Caller::Admin;
    let rec = c.spawn(&admin, spec(None, OnTimeout::Kill)).await.unwrap();
    c.mark_dead(&rec.id, "died in a test").unwrap();
    assert_eq!(
        fake.live(),
        vec![rec.id.clone()],
        "death alone keeps the files"
    );
    let after = c.terminate(&admin, &rec.id).await.unwrap();
    assert_eq!(after.state, SandboxState::Error);
    assert!(
        fake.live().is_empty(),
        "the runtime still holds {:?}",
        fake.live()
    );
    // Again: nothing left to release, no error.
    c.terminate(&admin, &rec.id).await.unwrap();
}
