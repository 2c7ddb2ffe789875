//! Materialising and removing one workspace, in either mode, and the
//! description of it that goes into the runtime handle (so `adopt` can find
//! it again after a daemon restart).
//!
//! - `cow`: the shared checkout of the commit (see [`crate::lower`]) is the
//!   overlay's lower layer; the workspace has its own upper and work dirs
//!   under `worktree/overlays/<id>` and is mounted at `workspaces/<id>`.
//! - `git-worktree`: `git worktree add --detach` from godel's store into
//!   `workspaces/<id>` (a full checkout per spawn, as the seed system did).

use std::path::{Path, PathBuf};

use godel_core::{Error, Result, WorkspaceMode};
use serde::{Deserialize, Serialize};

use crate::delta::DeltaSpec;
use crate::git::Git;
use crate::layout::{Layout, remove_tree};
use crate::lower::{LowerSpec, Lowers, create_empty_dirs};
use crate::objects::ObjectStore;
use crate::overlay::{self, OverlayDirs};

/// The overlay layers of a `cow` workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    /// The shared checkout of the base commit.
    pub lower: PathBuf,
    /// A restored snapshot's changes on top of `lower`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl OverlayInfo {
    fn dirs(&self) -> OverlayDirs {
        OverlayDirs {
            delta: self.delta.clone(),
            lower: self.lower.clone(),
            upper: self.upper.clone(),
            work: self.work.clone(),
        }
    }
}

/// Everything needed to find, snapshot and remove a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    pub id: String,
    /// Host path of the workspace (mount point or worktree).
    pub path: PathBuf,
    pub mode: WorkspaceMode,
    /// godel's bare repository holding the commits.
    pub store: PathBuf,
    pub store_key: String,
    /// The commit the lineage started from (the spawn's resolved ref).
    pub base: String,
    /// The commit whose tree the workspace started with.
    pub commit: String,
    /// What `HEAD` pointed at when the workspace was made.
    pub head: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayInfo>,
}

/// What to materialise.
pub struct Materialize<'a> {
    pub id: &'a str,
    pub mode: WorkspaceMode,
    pub store: &'a ObjectStore,
    pub base: &'a str,
    pub commit: &'a str,
    pub head: &'a str,
    pub empty_dirs: &'a [String],
    /// Hard size limit of what the workspace may add (`--disk`): its overlay
    /// upper layer then lives on a size-limited filesystem of its own.
    pub disk_bytes: Option<u64>,
}

/// Create the workspace described by `m`. On failure nothing is left behind.
pub async fn create(
    layout: &Layout,
    lowers: &Lowers,
    m: &Materialize<'_>,
) -> Result<WorkspaceInfo> {
    let path = layout.workspace(m.id);
    if path.exists() {
        return Err(Error::conflict(format!(
            "workspace {} already exists",
            path.display()
        )));
    }
    layout.create()?;
    let mut info = WorkspaceInfo {
        id: m.id.to_string(),
        path: path.clone(),
        mode: m.mode,
        store: m.store.path.clone(),
        store_key: m.store.key.clone(),
        base: m.base.to_string(),
        commit: m.commit.to_string(),
        head: m.head.to_string(),
        overlay: None,
    };
    let res = match m.mode {
        WorkspaceMode::Cow => create_cow(layout, lowers, m, &mut info).await,
        WorkspaceMode::GitWorktree => create_worktree(m, &info).await,
    };
    match res {
        Ok(()) => Ok(info),
        Err(e) => {
            let _ = destroy(layout, &info).await;
            Err(e)
        }
    }
}

async fn create_cow(
    layout: &Layout,
    lowers: &Lowers,
    m: &Materialize<'_>,
    info: &mut WorkspaceInfo,
) -> Result<()> {
    let (lower, delta) = if m.commit == m.base {
        let (lower, _) = lowers
            .ensure(&LowerSpec {
                store: m.store,
                commit: m.commit,
                head: m.head,
                empty_dirs: m.empty_dirs,
            })
            .await?;
        (lower, None)
    } else {
        // A snapshot: its changes as a delta over the base checkout.
        let (lower, _) = lowers
            .ensure(&LowerSpec {
                store: m.store,
                commit: m.base,
                head: m.base,
                empty_dirs: &[],
            })
            .await?;
        let (delta, _) = lowers
            .ensure_delta(&DeltaSpec {
                store: m.store,
                base: m.base,
                base_dir: &lower,
                commit: m.commit,
                head: m.head,
                empty_dirs: m.empty_dirs,
            })
            .await?;
        (lower, Some(delta))
    };
    let base = layout.overlay(m.id);
    // With a disk limit the upper and work dirs sit on a size-limited ext4
    // of their own (a sparse image on a loop device): writes past it fail
    // with ENOSPC inside the sandbox.
    let layer_root = match m.disk_bytes {
        Some(bytes) => {
            mkdir(&base)?;
            crate::loopfs::create(&base.join("disk.img"), &base.join("fs"), bytes)?
        }
        None => base.clone(),
    };
    let ov = OverlayInfo {
        delta,
        lower,
        upper: layer_root.join("upper"),
        work: layer_root.join("work"),
    };
    info.overlay = Some(ov.clone());
    for d in [&ov.upper, &ov.work, &info.path] {
        mkdir(d)?;
    }
    // The merged root takes the upper dir's owner: the agent's, like the layers.
    if let Some((uid, gid)) = lowers.owner() {
        std::os::unix::fs::lchown(&ov.upper, Some(uid), Some(gid))
            .map_err(|e| Error::io("cannot chown the workspace's upper dir", &e))?;
    }
    overlay::mount(&ov.dirs(), &info.path)
}

async fn create_worktree(m: &Materialize<'_>, info: &WorkspaceInfo) -> Result<()> {
    Git::new()
        .git_dir(&m.store.path)
        .args(["worktree", "add", "--detach", "--quiet"])
        .arg(&info.path)
        .arg(m.commit)
        .run()
        .await
        .map_err(|e| Error::spawn(format!("git worktree add failed: {}", e.message)))?;
    if m.head != m.commit {
        Git::new()
            .dir(&info.path)
            .args(["reset", "--soft", "--quiet", m.head])
            .run()
            .await?;
    }
    create_empty_dirs(&info.path, m.empty_dirs)
}

/// Make sure a `cow` workspace is mounted (after a daemon restart or a
/// lost mount). Returns `Ok(None)` when the workspace is gone, otherwise
/// whether it had to be remounted.
pub fn ensure_present(info: &WorkspaceInfo) -> Result<Option<bool>> {
    match (&info.mode, &info.overlay) {
        (WorkspaceMode::Cow, Some(ov)) => {
            if overlay::is_mounted(&info.path)? {
                return Ok(Some(false));
            }
            let delta_ok = ov.delta.as_ref().is_none_or(|d| d.is_dir());
            if !(delta_ok && ov.lower.is_dir() && ov.upper.is_dir() && ov.work.is_dir()) {
                return Ok(None);
            }
            mkdir(&info.path)?;
            overlay::mount(&ov.dirs(), &info.path)?;
            Ok(Some(true))
        }
        (WorkspaceMode::Cow, None) => Err(Error::invalid(
            "cow workspace handle without overlay directories",
        )),
        (WorkspaceMode::GitWorktree, _) => {
            if info.path.join(".git").exists() {
                Ok(Some(false))
            } else {
                Ok(None)
            }
        }
    }
}

/// Remove a workspace: unmount, delete its directories, drop the git
/// worktree registration. Idempotent.
pub async fn destroy(layout: &Layout, info: &WorkspaceInfo) -> Result<()> {
    match info.mode {
        WorkspaceMode::Cow => {
            overlay::unmount(&info.path)?;
            remove_tree(&info.path)?;
            crate::loopfs::unmount(&layout.overlay(&info.id).join("fs"))?;
            remove_tree(&layout.overlay(&info.id))?;
        }
        WorkspaceMode::GitWorktree => {
            let removed = Git::new()
                .git_dir(&info.store)
                .args(["worktree", "remove", "--force", "--force"])
                .arg(&info.path)
                .succeeds()
                .await
                .unwrap_or(false);
            if !removed {
                remove_tree(&info.path)?;
                if info.store.is_dir() {
                    Git::new()
                        .git_dir(&info.store)
                        .args(["worktree", "prune"])
                        .run()
                        .await?;
                }
            }
        }
    }
    Ok(())
}

fn mkdir(d: &Path) -> Result<()> {
    std::fs::create_dir_all(d).map_err(|e| Error::io(format!("cannot create {}", d.display()), &e))
}
