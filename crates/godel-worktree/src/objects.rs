//! godel's object stores: one bare repository per source repository under
//! `worktree/stores/`, holding the base commits workspaces start from
//! (`refs/godel/bases/<commit>`) and every snapshot commit
//! (`refs/godel/snapshots/<id>`). Workspaces, checkouts and snapshots only
//! ever read objects from a store, so the caller's repository is never
//! written to and a snapshot outlives changes to it.
//!
//! ObjectStores are created with a temporary name and published by rename, so two
//! spawns racing on a new repository cannot see a half-made store. Fetches
//! into one store are serialised by a per-store lock.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use godel_core::{Error, Result};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::git::{Git, is_object_id};
use crate::layout::{KeyedLocks, Layout, remove_tree, unique};

/// Attributes forcing byte-exact content: no eol conversion, no filters, no
/// ident expansion, whatever the tree's `.gitattributes` say. Written to
/// `info/attributes`, which takes precedence over in-tree attributes.
pub const RAW_ATTRIBUTES: &str = "* -text -eol -filter -ident -working-tree-encoding\n";

/// The key of the store holding workspaces that start empty.
const EMPTY_KEY: &str = "empty";

/// One bare repository owned by godel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStore {
    /// Short stable key (names the checkout cache directory).
    pub key: String,
    /// Path of the bare repository.
    pub path: PathBuf,
}

/// Creates stores and imports commits into them.
pub struct ObjectStores {
    layout: Layout,
    locks: KeyedLocks,
    /// (store path, commit) pairs known to be present, to skip a git call per spawn.
    known: Mutex<HashSet<(PathBuf, String)>>,
    empty_commit: std::sync::OnceLock<String>,
}

impl ObjectStores {
    pub fn new(layout: Layout) -> Self {
        ObjectStores {
            layout,
            locks: KeyedLocks::default(),
            known: Mutex::new(HashSet::new()),
            empty_commit: std::sync::OnceLock::new(),
        }
    }

    /// The store for a source repository (created on first use).
    pub async fn for_source(&self, source: &Path) -> Result<ObjectStore> {
        let canon = std::fs::canonicalize(source)
            .map_err(|e| Error::io(format!("repository {}", source.display()), &e))?;
        let digest = Sha256::digest(canon.as_os_str().as_encoded_bytes());
        let key = hex::encode(&digest[..8]);
        let store = self.store(&key);
        self.ensure_created(&store, Some(&canon)).await?;
        Ok(store)
    }

    /// The store of empty workspaces and its (fixed) empty commit.
    pub async fn empty(&self) -> Result<(ObjectStore, String)> {
        let store = self.store(EMPTY_KEY);
        self.ensure_created(&store, None).await?;
        if let Some(commit) = self.empty_commit.get() {
            return Ok((store, commit.clone()));
        }
        let lock = self.locks.get(&store.path.to_string_lossy());
        let _g = lock.lock().await;
        let empty_tree = Git::new()
            .git_dir(&store.path)
            .args(["mktree", "--missing"])
            .run()
            .await?;
        let commit = Git::new()
            .git_dir(&store.path)
            .env("GIT_AUTHOR_DATE", "@0 +0000")
            .env("GIT_COMMITTER_DATE", "@0 +0000")
            .args(["commit-tree", &empty_tree, "-m", "empty workspace"])
            .run()
            .await?;
        self.keep(&store, &commit).await?;
        let _ = self.empty_commit.set(commit.clone());
        Ok((store, commit))
    }

    /// A store by key (not created).
    pub fn store(&self, key: &str) -> ObjectStore {
        ObjectStore {
            key: key.to_string(),
            path: self.layout.stores().join(format!("{key}.git")),
        }
    }

    /// Make sure `commit` (from `source`) is in `store`, fetching it if needed.
    pub async fn import(&self, store: &ObjectStore, source: &Path, commit: &str) -> Result<()> {
        if !is_object_id(commit) {
            return Err(Error::invalid(format!("not a commit id: {commit:?}")));
        }
        if self.is_known(store, commit) {
            return Ok(());
        }
        let lock = self.locks.get(&store.path.to_string_lossy());
        let _g = lock.lock().await;
        if !self.has_commit(store, commit).await? {
            Git::new()
                .git_dir(&store.path)
                .args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"])
                .arg("--end-of-options")
                .arg(source)
                .arg(format!("{commit}:refs/godel/bases/{commit}"))
                .run()
                .await
                .map_err(|e| {
                    Error::spawn(format!(
                        "cannot import commit {commit} from {}: {}",
                        source.display(),
                        e.message
                    ))
                })?;
        }
        self.keep(store, commit).await
    }

    /// Whether the store holds `commit` (a commit object).
    pub async fn has_commit(&self, store: &ObjectStore, commit: &str) -> Result<bool> {
        if self.is_known(store, commit) {
            return Ok(true);
        }
        let ok = Git::new()
            .git_dir(&store.path)
            .args(["cat-file", "-e", "--end-of-options"])
            .arg(format!("{commit}^{{commit}}"))
            .succeeds()
            .await?;
        if ok {
            self.remember(store, commit);
        }
        Ok(ok)
    }

    /// Pin `commit` with `refs/godel/bases/<commit>` so it is never collected.
    async fn keep(&self, store: &ObjectStore, commit: &str) -> Result<()> {
        Git::new()
            .git_dir(&store.path)
            .args(["update-ref", &format!("refs/godel/bases/{commit}"), commit])
            .run()
            .await?;
        self.remember(store, commit);
        Ok(())
    }

    fn is_known(&self, store: &ObjectStore, commit: &str) -> bool {
        let known = self.known.lock();
        known.contains(&(store.path.clone(), commit.to_string()))
    }

    fn remember(&self, store: &ObjectStore, commit: &str) {
        let mut known = self.known.lock();
        known.insert((store.path.clone(), commit.to_string()));
    }

    async fn ensure_created(&self, store: &ObjectStore, source: Option<&Path>) -> Result<()> {
        if store.path.join("HEAD").is_file() {
            return Ok(());
        }
        let lock = self.locks.get(&store.path.to_string_lossy());
        let _g = lock.lock().await;
        if store.path.join("HEAD").is_file() {
            return Ok(());
        }
        self.layout.create()?;
        let tmp = self
            .layout
            .tmp()
            .join(format!("store-{}-{}", store.key, unique()));
        let made = async {
            Git::new()
                .args(["init", "--quiet", "--bare", "--template="])
                .arg(&tmp)
                .run()
                .await?;
            let info = tmp.join("info");
            write(&info.join("attributes"), RAW_ATTRIBUTES)?;
            if let Some(src) = source {
                write(
                    &tmp.join("godel-source"),
                    &format!("{}\n", src.to_string_lossy()),
                )?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = made {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, &store.path) {
            Ok(()) => Ok(()),
            // Another daemon published it first: use theirs.
            Err(_) if store.path.join("HEAD").is_file() => remove_tree(&tmp),
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(Error::io(
                    format!("cannot publish store {}", store.path.display()),
                    &e,
                ))
            }
        }
    }
}

/// Write a file, creating its parent directory.
pub fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("cannot create {}", parent.display()), &e))?;
    }
    std::fs::write(path, contents)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), &e))
}

/// Turn `SpawnSpec::repo` into a local path (plain path or `file://` URL).
pub fn source_path(repo: &str) -> Result<PathBuf> {
    let path = if let Some(rest) = repo.strip_prefix("file://") {
        rest
    } else if repo.contains("://") || repo.starts_with("git@") {
        return Err(Error::invalid(format!(
            "the worktree runtime needs a local repository path or file:// URL, not {repo:?}"
        )));
    } else {
        repo
    };
    if path.is_empty() || path.contains('\0') {
        return Err(Error::invalid(format!("invalid repository {repo:?}")));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(source_path("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(source_path("file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert!(source_path("https://x/y").is_err());
        assert!(source_path("").is_err());
    }
}
