//! Delta layers: restoring a snapshot into a copy-on-write workspace without
//! checking out the whole tree again.
//!
//! A snapshot commit differs from its base commit by the agent's changes.
//! Instead of a full checkout of the snapshot commit (time growing with the
//! repo), a restore mounts two lower layers: a small *delta* directory on
//! top of the base commit's shared checkout. The delta holds
//!
//! - the files added or changed since the base (`git checkout-index` of just
//!   those entries, modes and symlinks included),
//! - an overlayfs whiteout (a 0/0 character device) for every path that was
//!   deleted, placed at the highest directory that no longer exists,
//! - the snapshot's empty directories,
//! - `.git/HEAD` (the snapshot's parent) and `.git/index` (the base index
//!   with the changes applied, so unchanged files keep their stat data and
//!   neither `git status` nor the next snapshot rehashes them).
//!
//! Its cost grows with the size of the change, not of the repository.
//! Deltas are cached and published like checkouts (see [`crate::lower`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use godel_core::{Error, Result};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::git::Git;
use crate::lower::create_empty_dirs;
use crate::objects::ObjectStore;

/// What a delta is made from.
pub struct DeltaSpec<'a> {
    pub store: &'a ObjectStore,
    /// The commit of the shared checkout below the delta.
    pub base: &'a str,
    /// The base checkout (its `.git/index` seeds the delta's index).
    pub base_dir: &'a Path,
    /// The snapshot commit.
    pub commit: &'a str,
    /// `HEAD` of the restored workspace.
    pub head: &'a str,
    pub empty_dirs: &'a [String],
}

struct Change {
    new_mode: String,
    new_id: String,
    status: u8,
    path: Vec<u8>,
}

/// Parse `git diff-tree -r -z` output.
fn parse_diff(out: &[u8]) -> Result<Vec<Change>> {
    let mut parts = out.split(|b| *b == 0).filter(|p| !p.is_empty());
    let mut changes = Vec::new();
    while let Some(meta) = parts.next() {
        let meta = std::str::from_utf8(meta)
            .map_err(|_| Error::internal("diff-tree printed a non-UTF-8 header"))?;
        let f: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let path = parts
            .next()
            .ok_or_else(|| Error::internal("diff-tree record without a path"))?;
        if f.len() < 5 {
            return Err(Error::internal(format!(
                "unexpected diff-tree record {meta:?}"
            )));
        }
        changes.push(Change {
            new_mode: f[1].to_string(),
            new_id: f[3].to_string(),
            status: f[4].as_bytes().first().copied().unwrap_or(b'M'),
            path: path.to_vec(),
        });
    }
    Ok(changes)
}

/// Build the delta layer for `spec` in `dir` (which must not exist).
pub async fn build(dir: &Path, spec: &DeltaSpec<'_>) -> Result<()> {
    std::fs::create_dir_all(dir.join(".git"))
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), &e))?;
    let store = &spec.store.path;
    let diff = Git::new()
        .git_dir(store)
        .args(["diff-tree", "-r", "-z", "--no-renames", "--no-commit-id"])
        .args([spec.base, spec.commit])
        .run_bytes()
        .await?;
    let changes = parse_diff(&diff)?;

    // Index lines: `mode SP id TAB path NUL`; mode 0 removes an entry.
    let mut written = Vec::new();
    let mut index_update = Vec::new();
    let mut deleted = Vec::new();
    for c in &changes {
        if c.status == b'D' {
            deleted.push(c.path.clone());
            index_update.extend_from_slice(b"0 0000000000000000000000000000000000000000\t");
        } else if c.new_mode != "160000" {
            let line = format!("{} {}\t", c.new_mode, c.new_id);
            written.extend_from_slice(line.as_bytes());
            written.extend_from_slice(&c.path);
            written.push(0);
            index_update.extend_from_slice(line.as_bytes());
        } else {
            continue;
        }
        index_update.extend_from_slice(&c.path);
        index_update.push(0);
    }

    if !written.is_empty() {
        let tmp_index = dir.join(".git/delta-index");
        let git = || {
            Git::new()
                .git_dir(store)
                .work_tree(dir)
                .env("GIT_INDEX_FILE", &tmp_index)
        };
        git()
            .args(["update-index", "-z", "--index-info"])
            .run_with_input(written)
            .await?;
        git()
            .args(["checkout-index", "--all", "--force", "--quiet"])
            .run()
            .await?;
        let _ = std::fs::remove_file(&tmp_index);
    }

    if !deleted.is_empty() {
        let dirs = Git::new()
            .git_dir(store)
            .args(["ls-tree", "-r", "-d", "-z", "--name-only", spec.commit])
            .run_bytes()
            .await?;
        let mut present: HashSet<Vec<u8>> = dirs
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| p.to_vec())
            .collect();
        for d in spec.empty_dirs {
            let mut acc = Vec::new();
            for comp in d.split('/').filter(|c| !c.is_empty()) {
                if !acc.is_empty() {
                    acc.push(b'/');
                }
                acc.extend_from_slice(comp.as_bytes());
                present.insert(acc.clone());
            }
        }
        let mut whited: HashSet<Vec<u8>> = HashSet::new();
        for path in deleted {
            if let Some(w) = whiteout_point(dir, &path, &present)
                && whited.insert(w.clone())
            {
                whiteout(dir, &w)?;
            }
        }
    }
    create_empty_dirs(dir, spec.empty_dirs)?;

    // The restored workspace's git view: HEAD at the parent, index = snapshot tree.
    let index = dir.join(".git/index");
    let base_index = spec.base_dir.join(".git/index");
    if base_index.is_file() {
        std::fs::copy(&base_index, &index)
            .map_err(|e| Error::io("cannot copy the base index", &e))?;
        Git::new()
            .git_dir(store)
            .env("GIT_INDEX_FILE", &index)
            .args(["update-index", "-z", "--index-info"])
            .run_with_input(index_update)
            .await?;
    } else {
        Git::new()
            .git_dir(store)
            .env("GIT_INDEX_FILE", &index)
            .args(["read-tree", spec.commit])
            .run()
            .await?;
    }
    // The snapshot's own objects (its commit, trees, new blobs, and any
    // commits the agent made), so git works in the restored workspace.
    let pack_dir = dir.join(".git/objects/pack");
    std::fs::create_dir_all(&pack_dir)
        .map_err(|e| Error::io(format!("cannot create {}", pack_dir.display()), &e))?;
    crate::lower::pack_objects(
        store,
        &pack_dir,
        &format!("{}\n^{}\n", spec.commit, spec.base),
        false,
    )
    .await?;
    std::fs::write(dir.join(".git/HEAD"), format!("{}\n", spec.head))
        .map_err(|e| Error::io("cannot write HEAD", &e))
}

/// Where to put the whiteout hiding deleted `path`: its highest ancestor
/// (or itself) that the snapshot does not have. `None` when something in
/// the delta already hides it.
fn whiteout_point(dir: &Path, path: &[u8], present: &HashSet<Vec<u8>>) -> Option<Vec<u8>> {
    let mut acc: Vec<u8> = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        if !acc.is_empty() {
            acc.push(b'/');
        }
        acc.extend_from_slice(comp);
        if present.contains(&acc) {
            continue;
        }
        // A file the delta wrote at this name hides the lower entry already.
        if dir.join(OsStr::from_bytes(&acc)).symlink_metadata().is_ok() {
            return None;
        }
        return Some(acc);
    }
    None
}

fn whiteout(dir: &Path, rel: &[u8]) -> Result<()> {
    let p = dir.join(OsStr::from_bytes(rel));
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("cannot create {}", parent.display()), &e))?;
    }
    mknod(&p, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| Error::internal(format!("cannot create whiteout {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_diff_tree() {
        let z = "0000000000000000000000000000000000000000";
        let a = "1111111111111111111111111111111111111111";
        let out = format!(":000000 100755 {z} {a} A\0dir/x y\0:100644 000000 {a} {z} D\0gone\0");
        let c = parse_diff(out.as_bytes()).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].status, c[0].new_mode.as_str(), &c[0].path[..]),
            (b'A', "100755", &b"dir/x y"[..])
        );
        assert_eq!((c[1].status, &c[1].path[..]), (b'D', &b"gone"[..]));
    }
}
