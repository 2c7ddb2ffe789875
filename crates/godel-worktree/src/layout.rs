//! Where the worktree runtime keeps things under `$GODEL_HOME`, and the
//! per-key async locks that serialise work on one store or one checkout.
//!
//! ```text
//! $GODEL_HOME/workspaces/<id>            the workspace (overlay mount point or git worktree)
//! $GODEL_HOME/worktree/stores/<key>.git  godel's bare repository per source repo
//! $GODEL_HOME/worktree/lowers/<key>/<commit>  shared read-only checkouts (overlay lower dirs)
//! $GODEL_HOME/worktree/overlays/<id>/{upper,work}  a workspace's own overlay layers
//! $GODEL_HOME/worktree/state/<id>/       handle.json, sandbox state
//! $GODEL_HOME/worktree/tmp/              temporary indexes and half-built checkouts
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use godel_core::{Error, Result};
use parking_lot::Mutex;

/// Paths of the worktree runtime under one `$GODEL_HOME`.
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Layout { home: home.into() }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.home.join("workspaces").join(id)
    }

    pub fn root(&self) -> PathBuf {
        self.home.join("worktree")
    }

    pub fn stores(&self) -> PathBuf {
        self.root().join("stores")
    }

    pub fn lowers(&self) -> PathBuf {
        self.root().join("lowers")
    }

    pub fn overlay(&self, id: &str) -> PathBuf {
        self.root().join("overlays").join(id)
    }

    pub fn state(&self, id: &str) -> PathBuf {
        self.root().join("state").join(id)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root().join("tmp")
    }

    /// Create the top-level directories.
    pub fn create(&self) -> Result<()> {
        for d in [
            self.home.join("workspaces"),
            self.stores(),
            self.lowers(),
            self.root().join("overlays"),
            self.root().join("state"),
            self.tmp(),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), &e))?;
        }
        Ok(())
    }
}

/// Runtime ids become directory and worktree names: keep them boring.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid runtime id {id:?}: use letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Async mutexes keyed by a string (a store path, a checkout key).
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// The lock for `key` (created on first use; entries are tiny and kept).
    pub fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock();
        map.entry(key.to_string()).or_default().clone()
    }
}

/// Remove a directory tree, treating "already gone" as success.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), &e)),
    }
}

/// A unique suffix for temporary names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("rt-0123abcd").is_ok());
        for bad in ["", "..", "a/b", ".x", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
