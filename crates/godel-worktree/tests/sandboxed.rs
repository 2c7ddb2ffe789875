//! The worktree runtime with the real namespace sandbox: processes see the
//! workspace at /home/user, files written on either side are usable by the
//! other, timeouts kill the group inside, snapshots work. Runs when the
//! `godel-sandbox-init` binary has been built (a workspace-wide
//! `cargo test` builds it; otherwise `cargo build -p godel-sandbox`), and
//! says so when it skips.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use godel_core::{ExecRequest, Isolation, RuntimeProvider, WorkspaceMode};
use godel_sandbox::{InitProgram, NamespaceIsolator, NamespaceOptions};
use godel_worktree::{WorktreeConfig, WorktreeProvider};

fn sandboxed(e: &Env) -> Option<WorktreeProvider> {
    let init = InitProgram::discover();
    godel_testkit::require!(else None; godel_testkit::Need::Other {
        key: "sandbox-init",
        met: init.is_some(),
        what: "the godel-sandbox-init binary",
        how: "cargo build -p godel-sandbox; a workspace-wide cargo test builds it",
    });
    let init = init?;
    let iso = NamespaceIsolator::new(NamespaceOptions {
        init: Some(init),
        run_dir: e.tmp.path().join("run"),
        ..Default::default()
    });
    let cfg = WorktreeConfig::new(e.home.join("sb")).with_sandbox(Arc::new(iso));
    Some(WorktreeProvider::new(cfg).unwrap())
}

#[tokio::test]
async fn sandboxed_workspace_end_to_end() {
    let e = Env::new();
    let Some(p) = sandboxed(&e) else { return };
    assert_eq!(p.capabilities().isolation, "process");
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-sb{i}");
        let mut spec = e.spec(mode);
        spec.isolation = Isolation::Sandbox;
        p.spawn(&id, &spec).await.unwrap();
        let out = sh(
            &p,
            &id,
            "pwd; cat README.md; ./src/run.sh; echo from-agent > agent.txt",
        )
        .await;
        assert_eq!(out.exit_code, 0, "{out:?}");
        assert_eq!(out.stdout, "/home/user\ntwo\nrun\n");
        assert_eq!(
            &p.read_file(&id, "agent.txt").await.unwrap()[..],
            b"from-agent\n"
        );
        // A file the provider writes can be changed by the agent.
        p.write_file(&id, "dir/host.txt", Bytes::from_static(b"host\n"))
            .await
            .unwrap();
        let out = sh(
            &p,
            &id,
            "echo more >> dir/host.txt && touch dir/new && cat dir/host.txt",
        )
        .await;
        assert_eq!(out.stdout, "host\nmore\n", "{out:?}");
        if mode == WorkspaceMode::Cow {
            // git works inside: the checkout carries its own objects.
            let out = sh(&p, &id, "git status --porcelain; git log --format=%s -1").await;
            assert_eq!(out.stdout, "?? agent.txt\n?? dir/\ntwo\n", "{out:?}");
        }
        let mut req = ExecRequest::new(["pwd"]);
        req.cwd = Some("/home/user/src".into());
        assert_eq!(
            p.exec_collect(&id, req).await.unwrap().stdout,
            "/home/user/src\n"
        );

        // Timeout inside the sandbox kills the whole group.
        let mut req = ExecRequest::new(["sh", "-c", "sleep 100 & sleep 100"]);
        req.timeout_ms = Some(300);
        let err = p.exec_collect(&id, req).await.unwrap_err();
        assert_eq!(err.code, godel_core::ErrorCode::Timeout);
        let count = "cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$'";
        let out = sh(&p, &id, count).await;
        assert_eq!(
            out.stdout.trim(),
            "0",
            "sleeps survived the timeout: {out:?}"
        );
        // The same check does see a sleep that is alive.
        let out = sh(
            &p,
            &id,
            &format!("sleep 5 & while ! grep -qx sleep /proc/$!/comm; do :; done; {count}"),
        )
        .await;
        assert_eq!(out.stdout.trim(), "1", "{out:?}");

        p.terminate(&id).await.unwrap();
        assert!(!p.list().await.unwrap().contains(&id));
    }

    // Snapshot and restore of a sandboxed workspace; git still works inside.
    let mut spec = e.spec(WorkspaceMode::Cow);
    spec.isolation = Isolation::Sandbox;
    p.spawn("rt-snap", &spec).await.unwrap();
    let out = sh(&p, "rt-snap", "echo kept > kept.txt && git add kept.txt && git -c user.name=a -c user.email=a@a commit -qm agent").await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let dir = e.tmp.path().join("snap");
    let target = godel_core::SnapshotTarget {
        snapshot_id: "snap-sb".into(),
        dir: dir.clone(),
    };
    let art = p
        .snapshot("rt-snap", &Default::default(), &target)
        .await
        .unwrap();
    let info = godel_core::SnapshotInfo {
        id: "snap-sb".into(),
        runtime_id: "rt-snap".into(),
        runtime: "worktree".into(),
        team: "t".into(),
        created_at: chrono::Utc::now(),
        size_bytes: art.size_bytes,
        kind: art.kind,
        name: None,
        description: None,
        labels: Default::default(),
        dir,
        data: art.data,
    };
    p.restore("rt-back", &info, &spec).await.unwrap();
    let out = sh(
        &p,
        "rt-back",
        "cat kept.txt; git status --porcelain; git log --format=%s -1",
    )
    .await;
    assert_eq!(out.stdout, "kept\nagent\n", "{out:?}");
    p.terminate("rt-back").await.unwrap();
    p.terminate("rt-snap").await.unwrap();
}

#[tokio::test]
async fn volumes_are_mounted_read_write_and_refused_where_they_cannot_be() {
    let e = Env::new();
    let Some(p) = sandboxed(&e) else { return };
    let vol = e.tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mut spec = e.spec(WorkspaceMode::Cow);
    spec.isolation = Isolation::Sandbox;
    spec.volumes = vec![godel_core::VolumeMount {
        name: "data".into(),
        source: vol.display().to_string(),
        destination: "/mnt/data".into(),
        read_only: false,
    }];
    p.spawn("rt-vol", &spec).await.unwrap();
    let out = sh(
        &p,
        "rt-vol",
        "echo kept > /mnt/data/f.txt && cat /mnt/data/f.txt",
    )
    .await;
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (0, "kept\n"),
        "{out:?}"
    );
    p.terminate("rt-vol").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(vol.join("f.txt")).unwrap(),
        "kept\n"
    );
    // Refused, naming the volume: isolation none, read-only, a target over
    // the workspace, a missing source.
    let mut cases = Vec::new();
    let mut s = spec.clone();
    s.isolation = Isolation::None;
    cases.push(s);
    let mut s = spec.clone();
    s.volumes[0].read_only = true;
    cases.push(s);
    let mut s = spec.clone();
    s.volumes[0].destination = "/home/user/data".into();
    cases.push(s);
    let mut s = spec.clone();
    s.volumes[0].source = e.tmp.path().join("nope").display().to_string();
    cases.push(s);
    for (i, s) in cases.into_iter().enumerate() {
        let err = p.spawn(&format!("rt-badvol{i}"), &s).await.unwrap_err();
        assert!(err.message.contains("\"data\""), "case {i}: {err}");
    }
}
