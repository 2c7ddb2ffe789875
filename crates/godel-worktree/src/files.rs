//! File operations confined to a workspace. Every path goes through two
//! gates: `godel_core::workspace_relative` (lexical: `..`, absolute paths
//! outside `/home/user`, NUL bytes → `INVALID_ARGUMENT`), then cap-std, which
//! resolves each component beneath the workspace's directory handle so a
//! symlink leading outside (absolute, or `..` past the root) is refused
//! (`PERMISSION_DENIED`). Missing files are `NOT_FOUND`.
//!
//! When the sandbox runs agents as another uid (`Jail::workspace_owner`),
//! whatever these operations create is chowned to it, through a handle
//! opened beneath the workspace (never by a host path).
//!
//! These functions block; the provider runs them on the blocking pool.

use std::io::Write;

use cap_std::fs::{Dir, Metadata, MetadataExt, Permissions, PermissionsExt};
use chrono::{DateTime, Utc};
use godel_core::{Error, FileEntry, FileKind, Result, workspace_relative};

/// A workspace path made relative (`.` for the root).
pub fn rel(path: &str) -> Result<String> {
    let r = workspace_relative(path)?;
    Ok(if r.is_empty() { ".".to_string() } else { r })
}

fn io_err(op: &str, path: &str, e: std::io::Error) -> Error {
    Error::io(format!("{op} {path:?}"), &e)
}

/// Host uid/gid that created entries must belong to (`None`: leave as is).
pub type Owner = Option<(u32, u32)>;

/// Chown one entry beneath `root` without following a final symlink; the
/// parent is opened through cap-std, so nothing outside can be reached.
pub fn chown_entry(root: &Dir, path: &str, owner: (u32, u32)) -> Result<()> {
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => (".", path),
    };
    if name.is_empty() || name == "." {
        return Ok(());
    }
    let pdir = root
        .open_dir(parent)
        .map_err(|e| io_err("chown", path, e))?;
    nix::unistd::fchownat(
        &pdir,
        name,
        Some(nix::unistd::Uid::from_raw(owner.0)),
        Some(nix::unistd::Gid::from_raw(owner.1)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::internal(format!("cannot chown {path:?}: {e}")))
}

/// [`mkdirs`], then chown the directories it created to `owner`.
pub fn mkdirs_owned(root: &Dir, path: &str, shown: &str, owner: Owner) -> Result<()> {
    let Some(owner) = owner else {
        return mkdirs(root, path, shown);
    };
    let comps: Vec<&str> = path.split('/').filter(|c| *c != ".").collect();
    let first_missing = (0..comps.len())
        .find(|&i| root.symlink_metadata(comps[..=i].join("/")).is_err())
        .unwrap_or(comps.len());
    mkdirs(root, path, shown)?;
    for i in first_missing..comps.len() {
        chown_entry(root, &comps[..=i].join("/"), owner)?;
    }
    Ok(())
}

/// `create_dir_all` beneath `root`. When a component exists but cannot be
/// used (a symlink leading outside reports `EEXIST` from mkdir), the real
/// reason from resolving it is returned instead.
pub fn mkdirs(root: &Dir, path: &str, shown: &str) -> Result<()> {
    match root.create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) => match root.metadata(path) {
            Err(real) => Err(io_err("create directory", shown, real)),
            Ok(md) if !md.is_dir() => Err(Error::invalid(format!("{shown:?} is not a directory"))),
            Ok(_) => Err(io_err("create directory", shown, e)),
        },
    }
}

pub fn read_file(root: &Dir, path: &str) -> Result<Vec<u8>> {
    let r = rel(path)?;
    let md = root.metadata(&r).map_err(|e| io_err("read", path, e))?;
    if md.is_dir() {
        return Err(Error::invalid(format!("{path:?} is a directory")));
    }
    root.read(&r).map_err(|e| io_err("read", path, e))
}

pub fn write_file(root: &Dir, path: &str, data: &[u8], owner: Owner) -> Result<()> {
    let r = rel(path)?;
    if r == "." {
        return Err(Error::invalid("cannot write to the workspace root"));
    }
    if let Some((parent, _)) = r.rsplit_once('/') {
        mkdirs_owned(root, parent, path, owner)?;
    }
    let mut f = root.create(&r).map_err(|e| io_err("write", path, e))?;
    f.write_all(data).map_err(|e| io_err("write", path, e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(|e| io_err("chown", path, e))?;
    }
    Ok(())
}

pub fn list_dir(root: &Dir, path: &str) -> Result<Vec<FileEntry>> {
    let r = rel(path)?;
    let md = root.metadata(&r).map_err(|e| io_err("list", path, e))?;
    if !md.is_dir() {
        return Err(Error::invalid(format!("{path:?} is not a directory")));
    }
    let mut out = Vec::new();
    for ent in root.read_dir(&r).map_err(|e| io_err("list", path, e))? {
        let ent = ent.map_err(|e| io_err("list", path, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let child = if r == "." {
            name.clone()
        } else {
            format!("{r}/{name}")
        };
        let md = root
            .symlink_metadata(&child)
            .map_err(|e| io_err("stat", &child, e))?;
        out.push(entry(root, &child, name, &md));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn stat(root: &Dir, path: &str) -> Result<FileEntry> {
    let r = rel(path)?;
    if r == "." {
        let md = root.dir_metadata().map_err(|e| io_err("stat", path, e))?;
        return Ok(entry(root, "", String::new(), &md));
    }
    let md = root
        .symlink_metadata(&r)
        .map_err(|e| io_err("stat", path, e))?;
    let name = r.rsplit('/').next().unwrap_or(&r).to_string();
    Ok(entry(root, &r, name, &md))
}

pub fn make_dir(root: &Dir, path: &str, owner: Owner) -> Result<()> {
    let r = rel(path)?;
    mkdirs_owned(root, &r, path, owner)
}

pub fn rename(root: &Dir, from: &str, to: &str, owner: Owner) -> Result<()> {
    let f = rel(from)?;
    let t = rel(to)?;
    if f == "." || t == "." {
        return Err(Error::invalid("cannot rename the workspace root"));
    }
    root.symlink_metadata(&f)
        .map_err(|e| io_err("rename", from, e))?;
    if let Some((parent, _)) = t.rsplit_once('/') {
        mkdirs_owned(root, parent, to, owner)?;
    }
    root.rename(&f, root, &t)
        .map_err(|e| io_err("rename to", to, e))
}

pub fn remove(root: &Dir, path: &str, recursive: bool) -> Result<()> {
    let r = rel(path)?;
    if r == "." {
        return Err(Error::invalid("cannot remove the workspace root"));
    }
    let md = root
        .symlink_metadata(&r)
        .map_err(|e| io_err("remove", path, e))?;
    let res = if md.is_dir() {
        if recursive {
            root.remove_dir_all(&r)
        } else {
            root.remove_dir(&r)
        }
    } else {
        root.remove_file(&r)
    };
    res.map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTEMPTY) {
            Error::invalid(format!(
                "directory {path:?} is not empty (remove it recursively)"
            ))
        } else {
            io_err("remove", path, e)
        }
    })
}

/// Set permission bits on a path (no setuid/setgid/sticky).
pub fn set_mode(root: &Dir, path: &str, mode: u32) -> Result<()> {
    root.set_permissions(path, Permissions::from_mode(mode & 0o777))
        .map_err(|e| io_err("chmod", path, e))
}

fn entry(root: &Dir, rel_path: &str, name: String, md: &Metadata) -> FileEntry {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let symlink_target = if kind == FileKind::Symlink {
        root.read_link_contents(rel_path)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    } else {
        None
    };
    let modified = md
        .modified()
        .ok()
        .map(|t| DateTime::<Utc>::from(t.into_std()));
    FileEntry {
        name,
        path: rel_path.to_string(),
        kind,
        size: md.len(),
        mode: md.mode() & 0o7777,
        modified,
        symlink_target,
    }
}
