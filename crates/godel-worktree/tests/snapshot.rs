//! Snapshot → modify → restore, fork, and snapshot deletion, in both modes.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use godel_core::{
    ErrorCode, RuntimeProvider, SnapshotArtifact, SnapshotInfo, SnapshotRequest, SnapshotTarget,
    WorkspaceMode,
};

async fn take(e: &Env, id: &str, snap: &str) -> (SnapshotInfo, SnapshotArtifact) {
    let dir = e.tmp.path().join("snapshots").join(snap);
    std::fs::create_dir_all(&dir).unwrap();
    let target = SnapshotTarget {
        snapshot_id: snap.into(),
        dir: dir.clone(),
    };
    let art =
        e.p.snapshot(id, &SnapshotRequest::default(), &target)
            .await
            .unwrap();
    let info = SnapshotInfo {
        id: snap.into(),
        runtime_id: id.into(),
        runtime: "worktree".into(),
        team: "t".into(),
        created_at: chrono::Utc::now(),
        size_bytes: art.size_bytes,
        kind: art.kind.clone(),
        name: None,
        description: None,
        labels: BTreeMap::new(),
        dir,
        data: art.data.clone(),
    };
    (info, art)
}

/// Put the workspace into a state with every kind of thing a snapshot must keep.
fn dirty(ws: &Path) {
    std::fs::write(ws.join("README.md"), "modified\n").unwrap();
    std::fs::write(ws.join("untracked.txt"), "untracked\n").unwrap();
    std::fs::write(ws.join("build.log"), "ignored\n").unwrap();
    std::fs::create_dir_all(ws.join("deep/empty/dir")).unwrap();
    std::fs::create_dir_all(ws.join("node_modules/x")).unwrap();
    std::fs::write(ws.join("node_modules/x/i.js"), "1").unwrap();
    std::fs::write(ws.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(ws.join("tool.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("untracked.txt", ws.join("new-link")).unwrap();
    std::fs::remove_file(ws.join("src/run.sh")).unwrap();
    // Same size as before: only the content (and ctime) differ.
    std::fs::write(ws.join(".gitignore"), "*.LOG\n").unwrap();
}

fn check_dirty(ws: &Path) {
    let read = |p: &str| std::fs::read_to_string(ws.join(p)).unwrap();
    assert_eq!(read("README.md"), "modified\n");
    assert_eq!(read("untracked.txt"), "untracked\n");
    assert_eq!(read("build.log"), "ignored\n");
    assert_eq!(read("node_modules/x/i.js"), "1");
    assert!(ws.join("deep/empty/dir").is_dir());
    let mode = std::fs::metadata(ws.join("tool.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit lost");
    assert_eq!(
        std::fs::read_link(ws.join("new-link"))
            .unwrap()
            .to_string_lossy(),
        "untracked.txt"
    );
    assert!(!ws.join("src/run.sh").exists(), "deleted file came back");
    assert_eq!(read(".gitignore"), "*.LOG\n");
}

#[tokio::test]
async fn snapshot_modify_restore_both_modes() {
    let e = Env::new();
    for (i, mode) in MODES.into_iter().enumerate() {
        let id = format!("rt-s{i}");
        e.p.spawn(&id, &e.spec(mode)).await.unwrap();
        let ws = e.ws(&id);
        dirty(&ws);
        let (info, art) = take(&e, &id, &format!("snap-{i}")).await;
        assert_eq!(art.kind, "workspace");
        assert!(art.size_bytes > 0);
        assert!(info.dir.join("workspace.json").is_file());
        // Change everything after the snapshot.
        std::fs::write(ws.join("README.md"), "later\n").unwrap();
        std::fs::remove_file(ws.join("untracked.txt")).unwrap();
        std::fs::write(ws.join("after.txt"), "after").unwrap();

        let rid = format!("rt-r{i}");
        e.p.restore(&rid, &info, &e.spec(mode)).await.unwrap();
        let rws = e.ws(&rid);
        check_dirty(&rws);
        assert!(!rws.join("after.txt").exists());
        assert_eq!(
            e.p.status(&rid).await.unwrap().details["mode"],
            serde_json::json!(mode)
        );
        // HEAD is the original commit; the restored changes show up staged.
        let out = sh(
            &e.p,
            &rid,
            "git rev-parse HEAD; git status --porcelain untracked.txt",
        )
        .await;
        assert_eq!(
            out.stdout,
            format!(
                "{}\nA  untracked.txt\n",
                git(&e.repo, &["rev-parse", "main"])
            )
        );
        // The source workspace is untouched by the restore.
        assert_eq!(
            std::fs::read_to_string(ws.join("README.md")).unwrap(),
            "later\n"
        );
    }
}

#[tokio::test]
async fn fork_three_independent_copies() {
    let e = Env::new();
    e.p.spawn("rt-src", &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    std::fs::write(e.ws("rt-src").join("notes.txt"), "base").unwrap();
    let (info, _) = take(&e, "rt-src", "snap-fork").await;
    for i in 0..3 {
        e.p.restore(&format!("rt-k{i}"), &info, &e.spec(WorkspaceMode::Cow))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let id = format!("rt-k{i}");
        sh(&e.p, &id, &format!("echo child{i} >> notes.txt")).await;
    }
    for i in 0..3 {
        let got = std::fs::read_to_string(e.ws(&format!("rt-k{i}")).join("notes.txt")).unwrap();
        assert_eq!(got, format!("basechild{i}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(e.ws("rt-src").join("notes.txt")).unwrap(),
        "base"
    );
}

#[tokio::test]
async fn empty_workspace_and_agent_commits_round_trip() {
    let e = Env::new();
    e.p.spawn("rt-e", &empty_spec()).await.unwrap();
    let (info, _) = take(&e, "rt-e", "snap-empty").await;
    e.p.restore("rt-e2", &info, &empty_spec()).await.unwrap();
    let out = sh(&e.p, "rt-e2", "ls -A | grep -v '^.git$' | wc -l").await;
    assert_eq!(out.stdout, "0\n");

    // Commits the agent makes in a cow workspace survive snapshot + restore.
    e.p.spawn("rt-c", &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    let out = sh(
        &e.p,
        "rt-c",
        "echo agent > agent.txt && git add agent.txt && \
         git -c user.name=a -c user.email=a@a commit -qm 'agent work' && git rev-parse HEAD",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let agent_head = out.stdout.trim().to_string();
    let (info, art) = take(&e, "rt-c", "snap-commits").await;
    assert_eq!(art.data["parent"], serde_json::json!(agent_head));
    e.p.restore("rt-c2", &info, &empty_spec()).await.unwrap();
    let out = sh(&e.p, "rt-c2", "git log --format=%s -1; cat agent.txt").await;
    assert_eq!(out.stdout, "agent work\nagent\n");
}

#[tokio::test]
async fn deleted_snapshots_cannot_be_restored() {
    let e = Env::new();
    e.p.spawn("rt-d", &e.spec(WorkspaceMode::GitWorktree))
        .await
        .unwrap();
    std::fs::write(e.ws("rt-d").join("only-in-snapshot"), "x").unwrap();
    let (info, art) = take(&e, "rt-d", "snap-del").await;
    let store = Path::new(art.data["store"].as_str().unwrap()).to_path_buf();
    let has_ref = || git(&store, &["for-each-ref", "refs/godel/snapshots/"]).contains("snap-del");
    assert!(has_ref());
    e.p.delete_snapshot(&info).await.unwrap();
    assert!(!has_ref());
    e.p.delete_snapshot(&info).await.unwrap();
    // Once git collects the objects the snapshot is gone for good.
    git(&store, &["reflog", "expire", "--expire=now", "--all"]);
    git(&store, &["gc", "--quiet", "--prune=now"]);
    let err =
        e.p.restore("rt-d2", &info, &e.spec(WorkspaceMode::GitWorktree))
            .await
            .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    assert!(!e.ws("rt-d2").exists());
}

#[tokio::test]
async fn restore_layers_a_delta_and_handles_type_changes() {
    let e = Env::new();
    e.p.spawn("rt-a", &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    let ws = e.ws("rt-a");
    // Whole directory deleted, file -> directory, directory -> file.
    let out = sh(
        &e.p,
        "rt-a",
        "rm -r src && rm README.md && mkdir -p README.md/inner && echo x > README.md/inner/f \
         && mkdir -p gone/deep && echo y > gone/deep/z",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let (snap1, _) = take(&e, "rt-a", "snap-a1").await;
    e.p.restore("rt-b", &snap1, &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    let b = e.ws("rt-b");
    assert!(
        !b.join("src").exists(),
        "deleted directory visible after restore"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("README.md/inner/f")).unwrap(),
        "x\n"
    );
    let deltas: Vec<_> = std::fs::read_dir(e.home.join("worktree/lowers"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-delta-"))
        .collect();
    assert_eq!(
        deltas.len(),
        1,
        "restore should layer a delta, not a full checkout"
    );

    // Restore of a restore: change again, snapshot, restore.
    let out = sh(
        &e.p,
        "rt-b",
        "rm -r README.md && echo file > README.md && rm -r gone && echo n > new",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let (snap2, _) = take(&e, "rt-b", "snap-b1").await;
    e.p.restore("rt-c", &snap2, &e.spec(WorkspaceMode::Cow))
        .await
        .unwrap();
    let c = e.ws("rt-c");
    assert_eq!(
        std::fs::read_to_string(c.join("README.md")).unwrap(),
        "file\n"
    );
    assert!(!c.join("gone").exists() && !c.join("src").exists());
    assert_eq!(std::fs::read_to_string(c.join("new")).unwrap(), "n\n");
    assert_eq!(
        std::fs::read_link(c.join("readme-link"))
            .unwrap()
            .to_string_lossy(),
        "README.md"
    );
    // git agrees with the files: only the real changes against HEAD show.
    let out = sh(&e.p, "rt-c", "git status --porcelain | sort").await;
    assert_eq!(
        out.stdout, "A  new\nD  src/run.sh\nM  README.md\n",
        "{out:?}"
    );
    // The original is untouched.
    assert!(ws.join("gone/deep/z").exists());
}
