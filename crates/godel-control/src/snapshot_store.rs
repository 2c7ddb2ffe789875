//! The on-disk snapshot store under `$GODEL_HOME/snapshots`.
//!
//! 1. `stage(id)` makes an empty `snapshots/.staging/<id>` for the provider.
//! 2. The provider writes its artifact there.
//! 3. `publish` writes `manifest.json` (fsynced), fsyncs the directory and
//!    renames it to `snapshots/<id>` in one atomic step; only then is the
//!    record inserted. A crash at any point leaves either nothing visible or
//!    a whole snapshot whose manifest can be re-imported (`recover`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use godel_core::{Error, Result, SnapshotInfo};

pub const MANIFEST: &str = "manifest.json";

/// Paths and publication of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

fn io(ctx: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::io(ctx, &e)
}

impl SnapshotStore {
    pub fn new(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(root.join(".staging"))
            .map_err(|e| io(format!("create {}", root.display()), e))?;
        Ok(SnapshotStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a published snapshot lives.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// A fresh, empty staging directory for snapshot `id`.
    pub fn stage(&self, id: &str) -> Result<PathBuf> {
        let dir = self.root.join(".staging").join(id);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io("clear staging", e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
        Ok(dir)
    }

    /// Drop a staging directory after a failed snapshot.
    pub fn abandon(&self, id: &str) {
        let _ = fs::remove_dir_all(self.root.join(".staging").join(id));
    }

    /// Write the manifest and atomically publish the staged directory.
    /// `info.dir` is set to the published location.
    pub fn publish(&self, info: &mut SnapshotInfo) -> Result<()> {
        let staged = self.root.join(".staging").join(&info.id);
        let final_dir = self.dir_of(&info.id);
        info.dir = final_dir.clone();
        let manifest = serde_json::to_vec_pretty(&*info)
            .map_err(|e| Error::internal(format!("encode manifest: {e}")))?;
        let mpath = staged.join(MANIFEST);
        let mut f = fs::File::create(&mpath).map_err(|e| io("write manifest", e))?;
        f.write_all(&manifest)
            .map_err(|e| io("write manifest", e))?;
        f.sync_all().map_err(|e| io("sync manifest", e))?;
        sync_dir(&staged)?;
        fs::rename(&staged, &final_dir).map_err(|e| io("publish snapshot", e))?;
        sync_dir(&self.root)?;
        Ok(())
    }

    /// Remove a published snapshot's directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir_of(id);
        // Rename first so a crash mid-delete never leaves a half-deleted snapshot visible.
        let trash = self.root.join(".staging").join(format!("{id}.deleting"));
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("remove snapshot", e)),
        }
        fs::remove_dir_all(&trash).map_err(|e| io("remove snapshot", e))
    }

    /// Clear leftovers of interrupted snapshots; return manifests of published
    /// snapshots so the caller can re-import ones missing from the database.
    pub fn recover(&self) -> Result<Vec<SnapshotInfo>> {
        let staging = self.root.join(".staging");
        if let Ok(entries) = fs::read_dir(&staging) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let mut found = Vec::new();
        for e in fs::read_dir(&self.root)
            .map_err(|e| io("read snapshot store", e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let m = e.path().join(MANIFEST);
            if let Ok(bytes) = fs::read(&m)
                && let Ok(info) = serde_json::from_slice::<SnapshotInfo>(&bytes)
            {
                found.push(info);
            }
        }
        Ok(found)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(format!("sync {}", dir.display()), e))
}

/// Total size of the files under a directory.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            runtime_id: "rt-1".into(),
            runtime: "worktree".into(),
            team: "default".into(),
            created_at: chrono::Utc::now(),
            size_bytes: 1,
            kind: "workspace".into(),
            name: None,
            description: None,
            labels: Default::default(),
            dir: PathBuf::new(),
            data: Default::default(),
        }
    }

    #[test]
    fn staged_snapshots_are_invisible_until_published() {
        let t = tempfile::tempdir().unwrap();
        let s = SnapshotStore::new(t.path().join("snaps")).unwrap();
        let d = s.stage("snap-a").unwrap();
        fs::write(d.join("data"), b"x").unwrap();
        // A crash now: recovery removes the staging dir and finds nothing.
        assert!(s.recover().unwrap().is_empty());
        assert!(!d.exists());

        let d = s.stage("snap-b").unwrap();
        fs::write(d.join("data"), b"x").unwrap();
        let mut i = info("snap-b");
        s.publish(&mut i).unwrap();
        assert_eq!(i.dir, s.dir_of("snap-b"));
        assert!(i.dir.join(MANIFEST).exists());
        let found = s.recover().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "snap-b");
        s.remove("snap-b").unwrap();
        assert!(s.recover().unwrap().is_empty());
        s.remove("snap-b").unwrap();
    }
}
