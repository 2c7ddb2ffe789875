//! Workspace snapshots as git commits in godel's store.
//!
//! 1. A temporary index is seeded from the workspace's base index (the
//!    shared checkout's for `cow`, the worktree's own for `git-worktree`), so
//!    only files whose stat data changed are hashed again.
//! 2. `git add --all --force` with that index and the workspace as work tree
//!    records every file (untracked and ignored ones too; only `.git` is left
//!    out), with the executable bit and symlinks.
//! 3. `write-tree` + `commit-tree` with the workspace's `HEAD` as parent (the
//!    agent's own commits are fetched into the store first), pinned by
//!    `refs/godel/snapshots/<id>`.
//! 4. Empty directories, which git cannot hold, are listed in
//!    `workspace.json` in the snapshot directory next to the commit data.
//!
//! Restore materialises the snapshot commit with `HEAD` at its parent, so
//! the restored changes appear staged on top of the original history.

use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use godel_core::{Error, Result, SnapshotArtifact, SnapshotInfo, WorkspaceMode};
use serde::{Deserialize, Serialize};

use crate::git::{Git, is_object_id};
use crate::layout::{Layout, unique};
use crate::workspace::WorkspaceInfo;

/// File written into the snapshot directory.
pub const SNAPSHOT_FILE: &str = "workspace.json";

/// What a snapshot records (the artifact data and `workspace.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub commit: String,
    pub parent: String,
    pub base: String,
    pub tree: String,
    pub store: PathBuf,
    pub store_key: String,
    pub mode: WorkspaceMode,
    pub reference: String,
    #[serde(default)]
    pub empty_dirs: Vec<String>,
    #[serde(default)]
    pub files: u64,
}

/// The ref that keeps a snapshot commit alive.
pub fn snapshot_ref(snapshot_id: &str) -> String {
    format!("refs/godel/snapshots/{snapshot_id}")
}

/// Snapshot `ws` into its store; writes `workspace.json` into `target_dir`.
pub async fn take(
    layout: &Layout,
    ws: &WorkspaceInfo,
    snapshot_id: &str,
    target_dir: &Path,
) -> Result<SnapshotArtifact> {
    crate::layout::validate_id(snapshot_id)?;
    layout.create()?;
    let index = layout
        .tmp()
        .join(format!("index-{snapshot_id}-{}", unique()));
    let res = commit_workspace(ws, snapshot_id, &index).await;
    let _ = std::fs::remove_file(&index);
    let (commit, parent, tree) = res?;

    let path = ws.path.clone();
    let (empty_dirs, files, size) = tokio::task::spawn_blocking(move || scan(&path))
        .await
        .map_err(|e| Error::internal(format!("scan task failed: {e}")))??;
    let record = SnapshotRecord {
        commit,
        parent,
        base: ws.base.clone(),
        tree,
        store: ws.store.clone(),
        store_key: ws.store_key.clone(),
        mode: ws.mode,
        reference: snapshot_ref(snapshot_id),
        empty_dirs,
        files,
    };
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| Error::internal(format!("cannot encode snapshot record: {e}")))?;
    std::fs::create_dir_all(target_dir)
        .map_err(|e| Error::io(format!("cannot create {}", target_dir.display()), &e))?;
    std::fs::write(target_dir.join(SNAPSHOT_FILE), &json)
        .map_err(|e| Error::io("cannot write the snapshot record", &e))?;
    let mut data = std::collections::BTreeMap::new();
    if let serde_json::Value::Object(map) = serde_json::to_value(&record)
        .map_err(|e| Error::internal(format!("cannot encode snapshot record: {e}")))?
    {
        for (k, v) in map {
            if k != "empty_dirs" {
                data.insert(k, v);
            }
        }
    }
    Ok(SnapshotArtifact {
        size_bytes: size,
        kind: "workspace".into(),
        data,
    })
}

async fn commit_workspace(
    ws: &WorkspaceInfo,
    snapshot_id: &str,
    index: &Path,
) -> Result<(String, String, String)> {
    let seed = match ws.mode {
        WorkspaceMode::Cow => ws.overlay.as_ref().map(|o| o.lower.join(".git/index")),
        WorkspaceMode::GitWorktree => Some(ws.store.join("worktrees").join(&ws.id).join("index")),
    };
    if let Some(seed) = seed
        && seed.is_file()
    {
        std::fs::copy(&seed, index).map_err(|e| Error::io("cannot copy the base index", &e))?;
    }
    let git = || {
        Git::new()
            .git_dir(&ws.store)
            .work_tree(&ws.path)
            .env("GIT_INDEX_FILE", index)
    };
    git()
        .args(["add", "--all", "--force", "--", "."])
        .run()
        .await?;
    let tree = git().arg("write-tree").run().await?;
    let parent = workspace_head(ws).await;
    let commit = git()
        .args(["commit-tree", &tree, "-p", &parent, "-m"])
        .arg(format!("godel snapshot {snapshot_id} of {}", ws.id))
        .run()
        .await?;
    Git::new()
        .git_dir(&ws.store)
        .args(["update-ref", &snapshot_ref(snapshot_id), &commit])
        .run()
        .await?;
    Ok((commit, parent, tree))
}

/// The workspace's current `HEAD`, made present in the store; the
/// workspace's starting head when it cannot be read.
async fn workspace_head(ws: &WorkspaceInfo) -> String {
    let head = Git::new()
        .dir(&ws.path)
        .args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        .run()
        .await
        .ok()
        .filter(|h| is_object_id(h));
    let Some(head) = head else {
        return ws.head.clone();
    };
    let in_store = Git::new()
        .git_dir(&ws.store)
        .args(["cat-file", "-e", &format!("{head}^{{commit}}")])
        .succeeds()
        .await
        .unwrap_or(false);
    if in_store {
        return head;
    }
    // Commits the agent made inside a cow workspace live in its own object
    // directory: pack them into the store, reading the workspace's objects
    // as an alternate (no upload-pack runs in the agent's repository). The
    // snapshot commit, child of `head`, keeps them alive.
    let objects = ws.path.join(".git/objects");
    let packed = Git::new()
        .git_dir(&ws.store)
        .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &objects)
        .args(["pack-objects", "--revs", "--window=0", "-q"])
        .arg(ws.store.join("objects/pack/pack"))
        .run_with_input(format!("{head}\n^{}\n", ws.base).into_bytes())
        .await;
    match packed {
        Ok(_) => head,
        Err(e) => {
            tracing::warn!(workspace = %ws.id, error = %e,
                "cannot import the workspace's commits; the snapshot's parent is its base");
            ws.head.clone()
        }
    }
}

/// Empty directories (leaves only), regular file count and total size.
fn scan(root: &Path) -> Result<(Vec<String>, u64, u64)> {
    let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| Error::io(format!("cannot open {}", root.display()), &e))?;
    let mut empty = Vec::new();
    let (mut files, mut size) = (0u64, 0u64);
    scan_dir(&dir, "", &mut empty, &mut files, &mut size)?;
    empty.sort();
    Ok((empty, files, size))
}

fn scan_dir(
    dir: &Dir,
    prefix: &str,
    empty: &mut Vec<String>,
    files: &mut u64,
    size: &mut u64,
) -> Result<()> {
    let mut any = false;
    for ent in dir
        .entries()
        .map_err(|e| Error::io(format!("cannot list {prefix:?}"), &e))?
    {
        let ent = ent.map_err(|e| Error::io(format!("cannot list {prefix:?}"), &e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        any = true;
        if name == ".git" {
            continue;
        }
        let ft = ent
            .file_type()
            .map_err(|e| Error::io(format!("cannot stat {name:?}"), &e))?;
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if ft.is_dir() {
            let sub = dir
                .open_dir(&name)
                .map_err(|e| Error::io(format!("cannot open {path:?}"), &e))?;
            scan_dir(&sub, &path, empty, files, size)?;
        } else if ft.is_file() {
            *files += 1;
            if let Ok(md) = ent.metadata() {
                *size += md.len();
            }
        }
    }
    if !any && !prefix.is_empty() {
        empty.push(prefix.to_string());
    }
    Ok(())
}

/// Read a published snapshot back: the record in its directory, or the
/// artifact data when the file is missing.
pub fn load(info: &SnapshotInfo) -> Result<SnapshotRecord> {
    let file = info.dir.join(SNAPSHOT_FILE);
    let rec: SnapshotRecord = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!("snapshot {}: bad {SNAPSHOT_FILE}: {e}", info.id))
        })?,
        Err(_) => {
            let v = serde_json::Value::Object(info.data.clone().into_iter().collect());
            serde_json::from_value(v).map_err(|e| {
                Error::invalid(format!(
                    "snapshot {} is not a worktree snapshot: {e}",
                    info.id
                ))
            })?
        }
    };
    if !is_object_id(&rec.commit) || !is_object_id(&rec.parent) {
        return Err(Error::invalid(format!(
            "snapshot {} has a bad commit id",
            info.id
        )));
    }
    Ok(rec)
}

/// Drop the ref that keeps a snapshot alive. Missing is fine.
pub async fn delete(rec: &SnapshotRecord) -> Result<()> {
    if !rec.store.is_dir() {
        return Ok(());
    }
    let ok = Git::new()
        .git_dir(&rec.store)
        .args(["update-ref", "-d", &rec.reference])
        .succeeds()
        .await?;
    if !ok {
        tracing::debug!(reference = %rec.reference, "snapshot ref already gone");
    }
    Ok(())
}
