//! Spawn, adopt and terminate in both workspace modes, against real repos.

mod common;

use std::sync::Arc;

use common::*;
use godel_core::{ErrorCode, Isolation, RuntimeProvider, SandboxState, Spawned, WorkspaceMode};

#[tokio::test]
async fn spawn_both_modes_shows_the_commit() {
    let e = Env::new();
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-spawn{i}");
        let sp = e.p.spawn(&id, &e.spec(mode)).await.unwrap();
        assert!(sp.handle.contains_key("workspace"));
        let ws = e.ws(&id);
        assert_eq!(
            std::fs::read_to_string(ws.join("README.md")).unwrap(),
            "two\n"
        );
        let out = sh(
            &e.p,
            &id,
            "cat README.md; ./src/run.sh; readlink readme-link; pwd",
        )
        .await;
        assert_eq!(out.exit_code, 0, "{out:?}");
        assert_eq!(
            out.stdout,
            format!("two\nrun\nREADME.md\n{}\n", ws.display())
        );
        // git works inside the workspace and sees a clean tree at the commit.
        let out = sh(&e.p, &id, "git status --porcelain; git rev-parse HEAD").await;
        assert_eq!(
            out.stdout.trim(),
            git(&e.repo, &["rev-parse", "main"]),
            "{out:?}"
        );
        assert_eq!(mounted(&ws), mode == WorkspaceMode::Cow);
        let st = e.p.status(&id).await.unwrap();
        assert_eq!(st.state, SandboxState::Running);
        assert_eq!(st.details["mode"], serde_json::json!(mode));
    }
    assert_eq!(e.p.list().await.unwrap(), vec!["rt-spawn0", "rt-spawn1"]);
}

#[tokio::test]
async fn refs_resolve_and_bad_input_is_refused() {
    let e = Env::new();
    let mut spec = e.spec(WorkspaceMode::Cow);
    spec.git_ref = Some("v1".into());
    e.p.spawn("rt-v1", &spec).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(e.ws("rt-v1").join("README.md")).unwrap(),
        "one\n"
    );

    spec.git_ref = Some("no-such-branch".into());
    let err = e.p.spawn("rt-bad", &spec).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("no-such-branch"), "{err}");
    assert!(!e.ws("rt-bad").exists());

    let mut spec = e.spec(WorkspaceMode::Cow);
    spec.repo = Some(e.tmp.path().join("missing").to_string_lossy().into_owned());
    assert_eq!(
        e.p.spawn("rt-x", &spec).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    spec.repo = Some(format!("file://{}", e.repo.display()));
    e.p.spawn("rt-url", &spec).await.unwrap();

    // Jail isolation without a sandbox isolator: a clear UNAVAILABLE.
    let mut spec = e.spec(WorkspaceMode::Cow);
    spec.isolation = Isolation::Sandbox;
    let err = e.p.spawn("rt-sb", &spec).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(!e.ws("rt-sb").exists());

    // Same id twice is a conflict; bad ids are refused.
    let err =
        e.p.spawn("rt-v1", &e.spec(WorkspaceMode::Cow))
            .await
            .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    let err =
        e.p.spawn("../evil", &e.spec(WorkspaceMode::Cow))
            .await
            .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn empty_workspace_is_a_git_tree() {
    let e = Env::new();
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-empty{i}");
        let mut spec = empty_spec();
        spec.workspace = mode;
        e.p.spawn(&id, &spec).await.unwrap();
        let out = sh(
            &e.p,
            &id,
            "ls -A | grep -v '^.git$' | wc -l; git rev-parse --is-inside-work-tree",
        )
        .await;
        assert_eq!(out.stdout, "0\ntrue\n", "{out:?}");
    }
}

#[tokio::test]
async fn concurrent_spawns_share_one_checkout() {
    let e = Env::new();
    let p = Arc::new(e.reopen());
    let mut tasks = Vec::new();
    for i in 0..6 {
        let p = p.clone();
        let spec = e.spec(WorkspaceMode::Cow);
        tasks.push(tokio::spawn(async move {
            p.spawn(&format!("rt-c{i}"), &spec).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Exactly one shared checkout for the commit, and every workspace is independent.
    let lowers: Vec<_> = walk_depth2(&e.home.join("worktree/lowers"));
    assert_eq!(lowers.len(), 1, "{lowers:?}");
    std::fs::write(e.ws("rt-c0").join("README.md"), "changed\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(e.ws("rt-c1").join("README.md")).unwrap(),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("README.md")).unwrap(),
        "two\n"
    );
    assert!(
        std::fs::read_dir(e.home.join("worktree/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

fn walk_depth2(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for a in std::fs::read_dir(dir).unwrap() {
        for b in std::fs::read_dir(a.unwrap().path()).unwrap() {
            out.push(b.unwrap().path());
        }
    }
    out
}

#[tokio::test]
async fn terminate_cleans_up_and_is_idempotent() {
    let e = Env::new();
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-term{i}");
        e.p.spawn(&id, &e.spec(mode)).await.unwrap();
        std::fs::write(e.ws(&id).join("new.txt"), "x").unwrap();
        let ws = e.ws(&id);
        e.p.terminate(&id).await.unwrap();
        assert!(!ws.exists());
        assert!(!mounted(&ws));
        assert!(!e.home.join("worktree/overlays").join(&id).exists());
        assert!(!e.home.join("worktree/state").join(&id).exists());
        e.p.terminate(&id).await.unwrap();
        assert_eq!(e.p.status(&id).await.unwrap_err().code, ErrorCode::NotFound);
    }
    // The git worktree registration is gone from the store too.
    let stores: Vec<_> = std::fs::read_dir(e.home.join("worktree/stores"))
        .unwrap()
        .collect();
    for s in stores {
        assert!(!s.unwrap().path().join("worktrees/rt-term1").exists());
    }
}

#[tokio::test]
async fn adopt_after_restart_and_remount() {
    let e = Env::new();
    let mut handles: Vec<(String, Spawned)> = Vec::new();
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-adopt{i}");
        let sp = e.p.spawn(&id, &e.spec(mode)).await.unwrap();
        std::fs::write(e.ws(&id).join("state.txt"), format!("mine {i}")).unwrap();
        handles.push((id, sp));
    }
    // "Restart": a new provider that holds nothing.
    let p2 = e.reopen();
    assert!(p2.list().await.unwrap().is_empty());
    // Lose the cow mount as a reboot would; adopt must mount it again.
    let cow = e.ws("rt-adopt0");
    assert!(nix::mount::umount2(&cow, nix::mount::MntFlags::MNT_DETACH).is_ok());
    assert!(!mounted(&cow));
    for (i, (id, sp)) in handles.iter().enumerate() {
        let mode = MODES[i];
        let again = p2
            .adopt(id, &e.spec(mode), sp)
            .await
            .unwrap()
            .expect("alive");
        assert_eq!(again.handle["workspace"], sp.handle["workspace"]);
        let out = sh(&p2, id, "cat state.txt; cat README.md").await;
        assert_eq!(out.stdout, format!("mine {i}two\n"));
        assert_eq!(p2.status(id).await.unwrap().state, SandboxState::Running);
    }
    assert!(mounted(&cow));
    // A gone workspace adopts as None.
    p2.terminate("rt-adopt1").await.unwrap();
    let p3 = e.reopen();
    assert!(
        p3.adopt("rt-adopt1", &e.spec(MODES[1]), &handles[1].1)
            .await
            .unwrap()
            .is_none()
    );
    // A provider that never adopted can still terminate from the persisted handle.
    p3.terminate("rt-adopt0").await.unwrap();
    assert!(!cow.exists() && !mounted(&cow));
}

#[tokio::test]
async fn availability_and_capabilities() {
    let e = Env::new();
    let a = e.p.available().await;
    assert!(a.available, "{a:?}");
    assert_eq!(a.details["overlay"], "yes");
    let c = e.p.capabilities();
    assert!(c.workspace_snapshots && c.fork && c.streaming_exec && c.stdin);
    assert!(!c.memory_snapshots && c.survives_daemon_restart);
    assert_eq!(c.isolation, "none");
    assert_eq!(e.p.name(), "worktree");
}

#[tokio::test]
async fn prune_removes_only_unused_checkouts() {
    let e = Env::new();
    e.p.spawn("rt-main", &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    let mut v1 = e.spec(WorkspaceMode::Cow);
    v1.git_ref = Some("v1".into());
    e.p.spawn("rt-v1", &v1).await.unwrap();
    e.p.terminate("rt-v1").await.unwrap();
    assert_eq!(walk_depth2(&e.home.join("worktree/lowers")).len(), 2);
    assert_eq!(e.p.prune_checkouts().await.unwrap(), 1);
    let left = walk_depth2(&e.home.join("worktree/lowers"));
    assert_eq!(left.len(), 1);
    assert!(left[0].ends_with(git(&e.repo, &["rev-parse", "main"])));
    assert_eq!(sh(&e.p, "rt-main", "cat README.md").await.stdout, "two\n");
    // A restarted daemon that has not adopted rt-main yet must keep its checkout.
    let p2 = e.reopen();
    assert_eq!(p2.prune_checkouts().await.unwrap(), 0);
    p2.terminate("rt-main").await.unwrap();
    assert_eq!(p2.prune_checkouts().await.unwrap(), 1);
    assert!(walk_depth2(&e.home.join("worktree/lowers")).is_empty());
    // Spawning again rebuilds it.
    p2.spawn("rt-again", &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    assert_eq!(sh(&p2, "rt-again", "cat README.md").await.stdout, "two\n");
}
