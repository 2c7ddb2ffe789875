//! The file side of [`crate::FakeRuntime`]: plain host-directory operations
//! (copying a tree, `FileEntry` of a path, tar in and out). No confinement
//! beyond `workspace_relative` on the way in: tests only.

use std::path::Path;

use godel_core::{Error, FileEntry, FileKind, Result};

pub(crate) fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::io(what, &e)
}

/// Copy `from` into `to` (created), symlinks as symlinks, skipping `.git`;
/// answers the bytes copied.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut total = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            total += copy_tree(&entry.path(), &dest)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if ty.is_file() {
            total += std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(total)
}

/// The `FileEntry` of `path`, named by its workspace-relative `rel`.
pub(crate) fn entry_of(path: &Path, rel: &str) -> Result<FileEntry> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::symlink_metadata(path).map_err(|e| io_err(rel, e))?;
    let kind = if md.is_dir() {
        FileKind::Dir
    } else if md.is_file() {
        FileKind::File
    } else if md.file_type().is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    let name = Path::new(rel)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(FileEntry {
        name,
        path: rel.to_string(),
        kind,
        size: md.len(),
        mode: md.permissions().mode() & 0o7777,
        modified: md.modified().ok().map(Into::into),
        symlink_target: std::fs::read_link(path)
            .ok()
            .map(|p| p.display().to_string()),
    })
}

/// The entries of directory `path` (workspace-relative `rel`), sorted by name.
pub(crate) fn list(path: &Path, rel: &str) -> Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).map_err(|e| io_err(rel, e))? {
        let e = e.map_err(|e| io_err(rel, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        out.push(entry_of(&e.path(), &child)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Remove a file, an empty directory, or (with `recursive`) a tree.
pub(crate) fn remove(path: &Path, rel: &str, recursive: bool) -> Result<()> {
    let res = match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() && recursive => std::fs::remove_dir_all(path),
        Ok(md) if md.is_dir() => std::fs::remove_dir(path),
        _ => std::fs::remove_file(path),
    };
    res.map_err(|e| io_err(rel, e))
}

/// Unpack a tar archive into `path` (created); entries leading outside are
/// refused by the `tar` crate.
pub(crate) fn unpack_tar(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| io_err("tar target", e))?;
    tar::Archive::new(data)
        .unpack(path)
        .map_err(|e| Error::invalid(format!("invalid tar archive: {e}")))
}

/// A tar archive of `path`: a directory's tree (entries relative to it) or
/// one file; symlinks stored as symlinks.
pub(crate) fn pack_tar(path: &Path, rel: &str) -> Result<Vec<u8>> {
    let md = std::fs::symlink_metadata(path).map_err(|e| io_err(rel, e))?;
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let res = if md.is_dir() {
        b.append_dir_all(".", path)
    } else {
        let name = path.file_name().unwrap_or_default();
        b.append_path_with_name(path, name)
    };
    res.and_then(|()| b.into_inner())
        .map_err(|e| io_err("tar", e))
}
