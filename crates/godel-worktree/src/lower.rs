//! Shared checkouts: the read-only lower layers of copy-on-write workspaces.
//!
//! One checkout per (store, commit), made once under
//! `worktree/lowers/<store>/<commit>` and shared by every workspace of that
//! commit. It holds the files plus a small `.git` whose objects come from
//! the store (its packs hard-linked, so git also works inside a sandbox that
//! cannot see the store), whose index matches the files
//! (so `git status` works in the workspace and snapshots only rehash what
//! changed) and whose `HEAD` is the commit the workspace should report.
//!
//! The first spawn of a commit pays the checkout (it grows with the repo);
//! every later one only checks that the directory exists. A checkout is built
//! in `worktree/tmp` and published with one `rename(2)`: concurrent builders
//! (this daemon or another) never see a half-made checkout, and a loser of the
//! race drops its copy and uses the winner's. Within one daemon a per-commit
//! lock avoids building twice.

use std::path::{Path, PathBuf};

use godel_core::{Error, Result, workspace_relative};

use crate::delta::DeltaSpec;
use crate::git::Git;
use crate::layout::{KeyedLocks, Layout, remove_tree, unique};
use crate::objects::{ObjectStore, RAW_ATTRIBUTES, write};

/// The cache of shared checkouts.
pub struct Lowers {
    layout: Layout,
    locks: KeyedLocks,
    /// Owner given to every published layer (the sandbox's shared agent
    /// uid/gid), so a sandboxed agent owns its workspace without a per-spawn
    /// chown that would copy every file up into the overlay.
    owner: Option<(u32, u32)>,
}

/// What a checkout should look like.
#[derive(Debug, Clone)]
pub struct LowerSpec<'a> {
    pub store: &'a ObjectStore,
    /// Commit whose tree becomes the files.
    pub commit: &'a str,
    /// Commit the checkout's `HEAD` points at (the commit itself, or a
    /// snapshot's parent so restored changes show as staged).
    pub head: &'a str,
    /// Empty directories to create (git does not track them).
    pub empty_dirs: &'a [String],
}

impl Lowers {
    pub fn new(layout: Layout) -> Self {
        Lowers {
            layout,
            locks: KeyedLocks::default(),
            owner: None,
        }
    }

    /// Publish layers owned by `owner` (uid, gid).
    pub fn with_owner(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    /// The owner published layers get, if any.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// Path of the checkout of `commit` from `store`.
    pub fn path(&self, store: &ObjectStore, commit: &str, head: &str) -> PathBuf {
        let name = if head == commit {
            commit.to_string()
        } else {
            format!("{commit}-{}", &head[..head.len().min(12)])
        };
        self.layout.lowers().join(&store.key).join(name)
    }

    /// The checkout for `spec`, built if missing. Returns its path and
    /// whether this call built it.
    pub async fn ensure(&self, spec: &LowerSpec<'_>) -> Result<(PathBuf, bool)> {
        let path = self.path(spec.store, spec.commit, spec.head);
        self.publish(&path, &spec.store.key, spec.commit, Build::Checkout(spec))
            .await
    }

    /// The delta layer restoring `spec.commit` on top of the checkout of
    /// `spec.base` (see [`crate::delta`]), built if missing.
    pub async fn ensure_delta(&self, spec: &DeltaSpec<'_>) -> Result<(PathBuf, bool)> {
        let path = self.layout.lowers().join(&spec.store.key).join(format!(
            "{}-delta-{}",
            spec.commit,
            &spec.base[..spec.base.len().min(12)]
        ));
        self.publish(&path, &spec.store.key, spec.commit, Build::Delta(spec))
            .await
    }

    async fn publish(
        &self,
        path: &Path,
        key: &str,
        commit: &str,
        what: Build<'_, '_>,
    ) -> Result<(PathBuf, bool)> {
        let path = path.to_path_buf();
        if path.is_dir() {
            return Ok((path, false));
        }
        let lock = self.locks.get(&path.to_string_lossy());
        let _g = lock.lock().await;
        if path.is_dir() {
            return Ok((path, false));
        }
        self.layout.create()?;
        let tmp = self.layout.tmp().join(format!(
            "lower-{key}-{}-{}",
            &commit[..12.min(commit.len())],
            unique()
        ));
        let built = match what {
            Build::Checkout(spec) => build(&tmp, spec).await,
            Build::Delta(spec) => crate::delta::build(&tmp, spec).await,
        };
        let built = built.and_then(|()| match self.owner {
            Some((uid, gid)) => chown_tree(&tmp, uid, gid),
            None => Ok(()),
        });
        if let Err(e) = built {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        let parent = path
            .parent()
            .ok_or_else(|| Error::internal("checkout path has no parent"))?;
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("cannot create {}", parent.display()), &e))?;
        match std::fs::rename(&tmp, &path) {
            Ok(()) => Ok((path, true)),
            Err(_) if path.is_dir() => {
                remove_tree(&tmp)?;
                Ok((path, false))
            }
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(Error::io(
                    format!("cannot publish checkout {}", path.display()),
                    &e,
                ))
            }
        }
    }
}

impl Lowers {
    /// Remove every checkout and delta not in `in_use`; returns what was removed.
    pub fn prune(&self, in_use: &std::collections::HashSet<PathBuf>) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let Ok(stores) = std::fs::read_dir(self.layout.lowers()) else {
            return Ok(removed);
        };
        for store in stores.flatten() {
            let Ok(entries) = std::fs::read_dir(store.path()) else {
                continue;
            };
            for ent in entries.flatten() {
                let p = ent.path();
                if !in_use.contains(&p) {
                    remove_tree(&p)?;
                    removed.push(p);
                }
            }
        }
        Ok(removed)
    }
}

enum Build<'a, 'b> {
    Checkout(&'a LowerSpec<'b>),
    Delta(&'a DeltaSpec<'b>),
}

async fn build(dir: &Path, spec: &LowerSpec<'_>) -> Result<()> {
    Git::new()
        .args(["init", "--quiet", "--template="])
        .arg(dir)
        .run()
        .await?;
    let git_dir = dir.join(".git");
    copy_objects(&spec.store.path, &git_dir, spec.commit).await?;
    write(&git_dir.join("info/attributes"), RAW_ATTRIBUTES)?;
    Git::new()
        .git_dir(&git_dir)
        .work_tree(dir)
        .args([
            "read-tree",
            "-u",
            "--reset",
            "--end-of-options",
            spec.commit,
        ])
        .run()
        .await
        .map_err(|e| Error::spawn(format!("checkout of {} failed: {}", spec.commit, e.message)))?;
    Git::new()
        .git_dir(&git_dir)
        .args(["update-ref", "--no-deref", "HEAD", spec.head])
        .run()
        .await?;
    settle_index(&git_dir, dir).await?;
    create_empty_dirs(dir, spec.empty_dirs)
}

/// Give a checkout its own objects, so git works inside a sandbox that
/// cannot see the store: the store's packs are hard-linked (no copy, no
/// time), and the few loose objects reachable from `commit` are packed.
async fn copy_objects(store: &Path, git_dir: &Path, commit: &str) -> Result<()> {
    let from = store.join("objects/pack");
    let to = git_dir.join("objects/pack");
    std::fs::create_dir_all(&to)
        .map_err(|e| Error::io(format!("cannot create {}", to.display()), &e))?;
    if let Ok(entries) = std::fs::read_dir(&from) {
        for ent in entries.flatten() {
            let name = ent.file_name();
            let n = name.to_string_lossy();
            if !(n.starts_with("pack-") && (n.ends_with(".pack") || n.ends_with(".idx"))) {
                continue;
            }
            let dst = to.join(&name);
            if std::fs::hard_link(ent.path(), &dst).is_err() {
                std::fs::copy(ent.path(), &dst)
                    .map_err(|e| Error::io(format!("cannot copy pack {n}"), &e))?;
            }
        }
    }
    pack_objects(store, &to, &format!("{commit}\n"), true).await
}

/// Pack the objects `revs` (stdin of `pack-objects --revs`) name into `pack_dir`.
pub async fn pack_objects(store: &Path, pack_dir: &Path, revs: &str, unpacked: bool) -> Result<()> {
    let mut git = Git::new()
        .git_dir(store)
        .args(["pack-objects", "--revs", "--window=0", "-q"]);
    if unpacked {
        git = git.arg("--unpacked");
    }
    git.arg(pack_dir.join("pack"))
        .run_with_input(revs.as_bytes().to_vec())
        .await
        .map(|_| ())
}

/// Files written in the same second as the index are "racily clean" to git
/// and get rehashed by every later `git status` or snapshot. Wait for the
/// next second and refresh once, so the shared index has usable stat data
/// for every workspace built on it (costs under a second, once per commit).
async fn settle_index(git_dir: &Path, work_tree: &Path) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let wait = std::time::Duration::from_nanos(u64::from(1_000_000_000 - now.subsec_nanos()))
        + std::time::Duration::from_millis(10);
    tokio::time::sleep(wait).await;
    // Exit status 1 only means "some entries needed an update".
    Git::new()
        .git_dir(git_dir)
        .work_tree(work_tree)
        .args(["update-index", "-q", "--refresh"])
        .succeeds()
        .await?;
    Ok(())
}

/// Create `dirs` (workspace-relative) beneath `root`, confined by cap-std.
pub fn create_empty_dirs(root: &Path, dirs: &[String]) -> Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    let root_dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| Error::io(format!("cannot open {}", root.display()), &e))?;
    for d in dirs {
        let rel = workspace_relative(d)?;
        if rel.is_empty() || rel == ".git" || rel.starts_with(".git/") {
            continue;
        }
        root_dir
            .create_dir_all(&rel)
            .map_err(|e| Error::io(format!("cannot create directory {rel}"), &e))?;
    }
    Ok(())
}

/// Give a freshly built (not yet published) tree to `uid:gid`, symlinks included.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<()> {
    fn walk(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(p)?.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(root, uid, gid).map_err(|e| Error::io(format!("cannot chown {}", root.display()), &e))
}
