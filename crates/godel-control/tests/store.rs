//! The store: quota reservations hold under concurrency, the state machine
//! is enforced, tokens are hashed and revocable, events are ordered.

use std::collections::BTreeMap;
use std::sync::Arc;

use godel_control::store::{Quota, Reservation};
use godel_control::{Store, TeamRecord};
use godel_core::{ErrorCode, Event, SandboxInfo, SandboxState, SpawnSpec};

fn info(id: &str, team: &str) -> SandboxInfo {
    SandboxInfo {
        id: id.into(),
        runtime: "worktree".into(),
        team: team.into(),
        state: SandboxState::Creating,
        spec: SpawnSpec::default(),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        reason: None,
        restored_from: None,
        handle: BTreeMap::new(),
        usage: None,
        pid: None,
        expires_at: None,
        parked: None,
        owner: None,
    }
}

#[test]
fn concurrent_spawns_never_overshoot_the_quota() {
    let store = Arc::new(Store::open_scratch().unwrap());
    let quota = Quota {
        max_agents: Some(5),
        max_memory_bytes: Some(6 << 30),
        ..Default::default()
    };
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let r = Reservation {
                    memory_bytes: 1 << 30,
                    ..Default::default()
                };
                store.insert_sandbox(&info(&format!("rt-{i}"), "alpha"), r, quota)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "exactly the quota's worth of spawns may succeed");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code, ErrorCode::ResourceExhausted);
        assert!(
            r.message.contains("team alpha quota exceeded for agents"),
            "{}",
            r.message
        );
    }
    assert_eq!(store.team_usage("alpha").unwrap().agents, 5);
    // Releasing one (terminal state) frees room for exactly one more.
    let live = store.list_sandboxes(Some("alpha"), false).unwrap();
    store
        .transition(&live[0].id, SandboxState::Error, Some("test"))
        .unwrap();
    let r = Reservation {
        memory_bytes: 1 << 30,
        ..Default::default()
    };
    store
        .insert_sandbox(&info("rt-new", "alpha"), r, quota)
        .unwrap();
    assert!(
        store
            .insert_sandbox(&info("rt-new2", "alpha"), r, quota)
            .is_err()
    );
    // Memory quota is checked too.
    let big = Reservation {
        memory_bytes: 7 << 30,
        ..Default::default()
    };
    let e = store
        .insert_sandbox(
            &info("rt-big", "beta"),
            big,
            Quota {
                max_memory_bytes: Some(6 << 30),
                ..Default::default()
            },
        )
        .unwrap_err();
    // It names the full quota with its numbers.
    assert!(
        e.message
            .contains("memory: 0 in use + 7Gi requested > 6Gi allowed"),
        "{}",
        e.message
    );
    // Another team is unaffected.
    store
        .insert_sandbox(&info("rt-other", "gamma"), r, quota)
        .unwrap();
}

#[test]
fn transitions_follow_the_state_machine() {
    let s = Store::open_scratch().unwrap();
    s.insert_sandbox(&info("rt-a", "t"), Reservation::default(), Quota::default())
        .unwrap();
    assert_eq!(
        s.insert_sandbox(&info("rt-a", "t"), Reservation::default(), Quota::default())
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    s.transition("rt-a", SandboxState::Running, None).unwrap();
    assert_eq!(
        s.transition("rt-a", SandboxState::Creating, None)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    s.transition("rt-a", SandboxState::Paused, None).unwrap();
    s.transition("rt-a", SandboxState::Terminating, None)
        .unwrap();
    let r = s
        .transition("rt-a", SandboxState::Terminated, None)
        .unwrap();
    assert_eq!(r.state, SandboxState::Terminated);
    assert_eq!(
        s.transition("rt-a", SandboxState::Running, None)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        s.transition("rt-none", SandboxState::Running, None)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert!(s.list_sandboxes(None, false).unwrap().is_empty());
    assert_eq!(s.list_sandboxes(None, true).unwrap().len(), 1);
}

#[test]
fn tokens_are_hashed_scoped_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("godel.db");
    let s = Store::open(&path).unwrap();
    s.upsert_team(&TeamRecord {
        name: "alpha".into(),
        max_agents: Some(3),
        ..Default::default()
    })
    .unwrap();
    let (rec, token) = s.create_token(Some("alpha"), false).unwrap();
    assert!(token.starts_with("e2b_"), "team tokens are E2B-shaped keys");
    assert_eq!(
        s.find_token(&token).unwrap().unwrap().team.as_deref(),
        Some("alpha")
    );
    assert!(s.find_token("gdl_nope").unwrap().is_none());
    // The plaintext is nowhere in the database file.
    drop(s);
    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    assert!(!raw.windows(needle.len()).any(|w| w == needle));
    assert!(!wal.windows(needle.len()).any(|w| w == needle));
    let s = Store::open(&path).unwrap();
    s.revoke_token(&rec.id).unwrap();
    assert!(s.find_token(&token).unwrap().is_none());
    assert_eq!(
        s.revoke_token("tok_missing").unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(s.get_team("alpha").unwrap().unwrap().max_agents, Some(3));
}

#[test]
fn events_are_ordered_and_filtered() {
    let s = Store::open_scratch().unwrap();
    for i in 0..5 {
        let team = if i % 2 == 0 { "a" } else { "b" };
        s.append_event(
            &Event::new(godel_core::EventKind::Unknown)
                .team(team)
                .data(serde_json::json!({"i": i})),
        )
        .unwrap();
    }
    let all = s.list_events(0, None, None, 100).unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(s.list_events(0, Some("a"), None, 100).unwrap().len(), 3);
    assert_eq!(s.list_events(all[2].seq, None, None, 100).unwrap().len(), 2);
}

/// A database written by the previous schema opens, keeps every record and
/// token, and its system labels become fields.
#[test]
fn a_version_1_database_is_upgraded_in_place() {
    use godel_core::{OnTimeout, ParkReason, RestartPolicy};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("godel.db");
    let v1 = include_str!("fixtures/schema_v1.sql");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(v1)
        .unwrap();
    let store = Store::open(&path).unwrap();

    let tok = store
        .find_token("gdl_0123456789abcdef0123456789abcdef0123456789abcdef")
        .unwrap()
        .expect("the old token still authenticates");
    assert_eq!(tok.team.as_deref(), Some("alpha"));

    let e2b = store.get_sandbox("rt-e2b").unwrap().unwrap();
    assert_eq!(e2b.state, SandboxState::Running);
    assert_eq!(
        e2b.expires_at.unwrap().to_rfc3339(),
        "2026-11-01T00:05:00+00:00"
    );
    assert_eq!(e2b.spec.on_timeout, OnTimeout::Pause);
    assert_eq!(e2b.spec.template.as_deref(), Some("mytpl"));
    assert_eq!(e2b.spec.hops, 2);
    assert_eq!(
        e2b.spec.labels,
        BTreeMap::from([("e2b.meta.user".to_string(), "ann".to_string())]),
        "user metadata stays, system labels are gone"
    );

    let paused = store.get_sandbox("rt-paused").unwrap().unwrap();
    let p = paused.parked.expect("parked");
    assert_eq!(
        (p.snapshot_id.as_str(), p.reason),
        ("snap-1", ParkReason::Paused)
    );
    assert_eq!(
        paused.spec.template, None,
        "the base template is the default"
    );
    assert!(paused.spec.labels.is_empty());

    let kept = store.get_sandbox("rt-kept").unwrap().unwrap();
    let p = kept.parked.expect("parked");
    assert_eq!(
        (p.snapshot_id.as_str(), p.reason),
        ("snap-2", ParkReason::Preserved)
    );
    assert_eq!(kept.spec.restart, Some(RestartPolicy::OnFailure));
    assert_eq!(
        kept.spec.labels,
        BTreeMap::from([("owner".to_string(), "bob".to_string())])
    );
    drop(store);
    // Opening again changes nothing.
    let again = Store::open(&path).unwrap();
    assert_eq!(again.get_sandbox("rt-e2b").unwrap().unwrap(), e2b);
}
