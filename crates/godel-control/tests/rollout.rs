//! Migration between runtimes and canary rollouts over the real control
//! plane with `FakeRuntime` providers and a manual clock.

mod common;

use bytes::Bytes;
use common::*;
use godel_control::Caller;
use godel_control::control::{MigrateRequest, RolloutRequest, RolloutState};
use godel_core::{ErrorCode, SandboxState};
use godel_testkit::Op;

#[tokio::test]
async fn migration_moves_with_verified_content_and_a_failing_target_leaves_the_source() {
    let toml = "[retry]\nmax_attempts = 1\n[prices.microvm]\nvcpu_second = 0.00001\ngib_second = 0.000001\n";
    let e = env(toml, &["worktree", "microvm", "kata"]).await;
    let c = &e.c;
    let a = c
        .spawn(&ADMIN, spec(Some("worktree"), "alpha"))
        .await
        .unwrap();
    let b = c
        .spawn(&ADMIN, spec(Some("worktree"), "alpha"))
        .await
        .unwrap();
    for (id, text) in [(&a.id, "from a"), (&b.id, "from b")] {
        c.write_file(&ADMIN, id, "src/main.txt", Bytes::from(text.to_string()))
            .await
            .unwrap();
        c.write_file(&ADMIN, id, "README", Bytes::from_static(b"readme"))
            .await
            .unwrap();
    }

    // Dry run: the plan and its cost change, nothing moved.
    let dry = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                team: Some("alpha".into()),
                from: Some("worktree".into()),
                to: "microvm".into(),
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.moves.len(), 2);
    let per_agent = 3600.0 * (2.0 * 0.00001 + 4.0 * 0.000001) - 3600.0 * PER_SECOND;
    assert!(
        (dry.estimated_hourly_change_usd - 2.0 * per_agent).abs() < 1e-6,
        "{}",
        dry.estimated_hourly_change_usd
    );
    assert_eq!(
        c.visible_sandbox(&ADMIN, &a.id).unwrap().state,
        SandboxState::Running
    );

    // A target that fails to spawn, and one whose probe exec fails: the source stays.
    e.fakes["kata"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    let failed = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![a.id.clone()],
                to: "kata".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((failed.moved, failed.failed), (0, 1));
    assert!(failed.moves[0].new_id.is_none());
    e.fakes["microvm"].fail_always(Op::Exec, ErrorCode::ExecutionError);
    let failed = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![a.id.clone()],
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.failed, 1);
    assert!(
        e.fakes["microvm"].live().is_empty(),
        "the half-made target is gone"
    );
    assert_eq!(
        c.visible_sandbox(&ADMIN, &a.id).unwrap().state,
        SandboxState::Running
    );
    assert_eq!(
        &c.read_file(&ADMIN, &a.id, "src/main.txt").await.unwrap()[..],
        b"from a"
    );
    assert_eq!(events_of(c, "migration_failed").len(), 2);
    e.fakes["microvm"].succeed(Op::Exec);

    // The real move: both agents, content verified, sources terminated.
    let done = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![a.id.clone(), b.id.clone()],
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((done.moved, done.failed), (2, 0));
    for (m, text) in done.moves.iter().zip(["from a", "from b"]) {
        let new_id = m.new_id.clone().unwrap();
        let n = c.visible_sandbox(&ADMIN, &new_id).unwrap();
        assert_eq!(
            (n.runtime.as_str(), n.state, n.team.as_str()),
            ("microvm", SandboxState::Running, "alpha")
        );
        assert_eq!(
            &c.read_file(&ADMIN, &new_id, "src/main.txt").await.unwrap()[..],
            text.as_bytes()
        );
        assert_eq!(m.files, 2);
        assert_eq!(m.checksum.as_ref().map(|s| s.len()), Some(64));
        assert_eq!(
            c.visible_sandbox(&ADMIN, &m.id).unwrap().state,
            SandboxState::Terminated
        );
    }
    assert_eq!(events_of(c, "migrated").len(), 2);

    // Same runtime kind: snapshot → restore.
    let same = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![done.moves[0].new_id.clone().unwrap()],
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(same.moved, 1);
    let id = same.moves[0].new_id.clone().unwrap();
    assert_eq!(
        &c.read_file(&ADMIN, &id, "src/main.txt").await.unwrap()[..],
        b"from a"
    );

    // Bad input: unknown runtime, nothing named, another team's agent.
    let err = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![id.clone()],
                to: "nope".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.message.starts_with("to:"), "{}", err.message);
    let err = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    let err = c
        .migrate(
            &Caller::Team("beta".into()),
            MigrateRequest {
                agents: vec![id],
                to: "worktree".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn canary_routing_follows_the_steps_and_an_error_burst_rolls_back() {
    let toml = "[retry]\nmax_attempts = 1\n[defaults]\nfallback = [\"microvm\", \"worktree\"]\n";
    let e = env(toml, &["worktree", "microvm"]).await;
    let (c, clock) = (&e.c, &e.clock);
    let req = RolloutRequest {
        team: Some("alpha".into()),
        to: "microvm".into(),
        from: None,
        steps: "1,5,25,100".into(),
        interval: "10m".into(),
        max_error_rate: "2%".into(),
        min_samples: None,
    };
    let r = c.start_rollout(&ADMIN, req.clone()).unwrap();
    assert_eq!((r.from.as_str(), r.share()), ("worktree", 1));
    for want in [1u32, 5, 25, 100] {
        let mut on_target = 0;
        for _ in 0..1000 {
            let s = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
            if s.runtime == "microvm" {
                on_target += 1;
            }
            c.terminate(&ADMIN, &s.id).await.unwrap();
        }
        let share = on_target as f64 / 10.0;
        println!("canary step {want}%: {on_target} of 1000 spawns on microvm ({share}%)");
        assert!((share - want as f64).abs() <= 2.0, "step {want}: {share}%");
        clock.advance(secs(600));
    }
    let r = &c.rollouts(&ADMIN)[0];
    assert_eq!(r.state, RolloutState::Completed);
    assert_eq!(events_of(c, "rollout_step").len(), 3);

    // Again, with the target failing from the 25 % step on.
    let r = c.start_rollout(&ADMIN, req.clone()).unwrap();
    assert_eq!(r.state, RolloutState::Running);
    clock.advance(secs(1200));
    e.fakes["microvm"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    for _ in 0..100 {
        let s = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
        assert_eq!(
            s.runtime, "worktree",
            "the spawn falls back and still works"
        );
        c.terminate(&ADMIN, &s.id).await.unwrap();
    }
    let r = &c.rollouts(&ADMIN)[0];
    assert_eq!(r.state, RolloutState::RolledBack);
    let ev = events_of(c, "rollout_rolled_back");
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{:?}",
        ev[0].data
    );
    println!("rollback: {}", ev[0].data["reason"]);
    e.fakes["microvm"].succeed(Op::Spawn);
    let before = e.fakes["microvm"].count("spawn");
    for _ in 0..50 {
        let s = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
        assert_eq!(s.runtime, "worktree");
    }
    assert_eq!(
        e.fakes["microvm"].count("spawn"),
        before,
        "routing returned to worktree"
    );

    // pause / resume / rollback by hand, and bad plans refused by name.
    c.start_rollout(&ADMIN, req.clone()).unwrap();
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "pause").unwrap().state,
        RolloutState::Paused
    );
    clock.advance(secs(3600));
    assert_eq!(
        c.rollouts(&ADMIN)[0].step,
        0,
        "paused rollouts stay on their step"
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "resume").unwrap().state,
        RolloutState::Running
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "rollback")
            .unwrap()
            .state,
        RolloutState::RolledBack
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "pause")
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "dance")
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    for (steps, rate, key) in [("5,1", "2%", "steps"), ("1,5", "300%", "max_error_rate")] {
        let err = c
            .start_rollout(
                &ADMIN,
                RolloutRequest {
                    steps: steps.into(),
                    max_error_rate: rate.into(),
                    ..req.clone()
                },
            )
            .unwrap_err();
        assert!(err.message.starts_with(key), "{}", err.message);
    }
    let err = c
        .start_rollout(
            &ADMIN,
            RolloutRequest {
                to: "nope".into(),
                ..req
            },
        )
        .unwrap_err();
    assert!(err.message.starts_with("to:"), "{}", err.message);
}
