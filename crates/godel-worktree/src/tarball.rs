//! Tar archives in and out of a workspace, confined like every file op.
//!
//! Upload checks the whole archive before writing anything: an entry that
//! is absolute, contains `..`, or passes through a symlink the same archive
//! creates is refused (`INVALID_ARGUMENT`) and nothing is written. Entries
//! are then unpacked one by one through cap-std, so a symlink already in
//! the workspace cannot lead a write outside either (`PERMISSION_DENIED`).
//! Regular files, directories, symlinks and hard links are supported; device
//! nodes and fifos are skipped; setuid/setgid bits are dropped.
//!
//! Download packs a file or a directory tree (entries relative to it),
//! storing symlinks as symlinks, never following them.

use std::collections::HashSet;
use std::io::{Read, Write};

use cap_std::fs::{Dir, MetadataExt};
use godel_core::{Error, Result};
use tar::{Archive, Builder, EntryType, Header};

use crate::files::{Owner, chown_entry, mkdirs_owned, rel, set_mode};

/// Lexically normalise one archive path; `None` for the archive root (`./`).
fn entry_path(raw: &[u8]) -> Result<Option<String>> {
    let s = std::str::from_utf8(raw).map_err(|_| Error::invalid("tar entry name is not UTF-8"))?;
    if s.starts_with('/') || s.contains('\0') {
        return Err(Error::invalid(format!(
            "tar entry {s:?} is absolute; entries must be relative"
        )));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "tar entry {s:?} leads outside the target directory"
                )));
            }
            c => parts.push(c),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// First pass: refuse the archive if any entry could escape.
fn check(data: &[u8]) -> Result<()> {
    let mut links: HashSet<String> = HashSet::new();
    let mut ar = Archive::new(data);
    for ent in ar.entries().map_err(|e| bad_tar(&e))? {
        let ent = ent.map_err(|e| bad_tar(&e))?;
        let Some(path) = entry_path(&ent.path_bytes())? else {
            continue;
        };
        let mut prefix = String::new();
        for comp in path.split('/') {
            if !prefix.is_empty() && links.contains(&prefix) {
                return Err(Error::invalid(format!(
                    "tar entry {path:?} passes through symlink {prefix:?} from the same archive"
                )));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
        }
        match ent.header().entry_type() {
            EntryType::Symlink => {
                links.insert(path);
            }
            EntryType::Link => {
                let target = ent
                    .link_name_bytes()
                    .ok_or_else(|| Error::invalid(format!("hard link {path:?} has no target")))?;
                if entry_path(&target)?.is_none() {
                    return Err(Error::invalid(format!("hard link {path:?} has no target")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn bad_tar(e: &std::io::Error) -> Error {
    Error::invalid(format!("invalid tar archive: {e}"))
}

/// Unpack `data` into `path` (created if missing) beneath `root`.
pub fn unpack(root: &Dir, path: &str, data: &[u8], owner: Owner) -> Result<()> {
    let base = rel(path)?;
    check(data)?;
    mkdirs_owned(root, &base, path, owner)?;
    let dir = root
        .open_dir(&base)
        .map_err(|e| Error::io(format!("open {path:?}"), &e))?;
    let mut ar = Archive::new(data);
    for ent in ar.entries().map_err(|e| bad_tar(&e))? {
        let mut ent = ent.map_err(|e| bad_tar(&e))?;
        let Some(p) = entry_path(&ent.path_bytes())? else {
            continue;
        };
        let io = |e: std::io::Error| Error::io(format!("unpack {p:?}"), &e);
        if let Some((parent, _)) = p.rsplit_once('/') {
            mkdirs_owned(&dir, parent, &p, owner)?;
        }
        let mode = ent.header().mode().unwrap_or(0o644);
        match ent.header().entry_type() {
            EntryType::Directory => {
                mkdirs_owned(&dir, &p, &p, owner)?;
                set_mode(&dir, &p, mode | 0o700)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                replace(&dir, &p)?;
                let mut f = dir.create(&p).map_err(io)?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = ent.read(&mut buf).map_err(|e| bad_tar(&e))?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&buf[..n]).map_err(io)?;
                }
                drop(f);
                set_mode(&dir, &p, mode)?;
            }
            EntryType::Symlink => {
                let target = ent
                    .link_name_bytes()
                    .ok_or_else(|| Error::invalid(format!("symlink {p:?} has no target")))?;
                let target = String::from_utf8_lossy(&target).into_owned();
                replace(&dir, &p)?;
                dir.symlink_contents(&target, &p).map_err(io)?;
            }
            EntryType::Link => {
                let target = ent
                    .link_name_bytes()
                    .and_then(|t| entry_path(&t).ok().flatten())
                    .ok_or_else(|| Error::invalid(format!("hard link {p:?} has no target")))?;
                replace(&dir, &p)?;
                dir.hard_link(&target, &dir, &p).map_err(io)?;
            }
            // Devices, fifos, pax/GNU metadata records (handled by `tar`).
            _ => continue,
        }
        if let Some(o) = owner {
            chown_entry(&dir, &p, o)?;
        }
    }
    Ok(())
}

/// Unlink a non-directory at `p` so a new entry replaces it rather than
/// writing through it (as GNU tar does).
fn replace(dir: &Dir, p: &str) -> Result<()> {
    match dir.symlink_metadata(p) {
        Ok(md) if !md.is_dir() => dir
            .remove_file(p)
            .map_err(|e| Error::io(format!("replace {p:?}"), &e)),
        Ok(_) => Err(Error::invalid(format!(
            "tar entry {p:?} would replace a directory"
        ))),
        Err(_) => Ok(()),
    }
}

/// Pack `path` (a file or a directory) into a tar archive.
pub fn pack(root: &Dir, path: &str) -> Result<Vec<u8>> {
    let r = rel(path)?;
    let mut b = Builder::new(Vec::new());
    b.follow_symlinks(false);
    let md = if r == "." {
        root.dir_metadata()
    } else {
        root.symlink_metadata(&r)
    }
    .map_err(|e| Error::io(format!("download {path:?}"), &e))?;
    if md.is_dir() {
        let dir = root
            .open_dir(&r)
            .map_err(|e| Error::io(format!("open {path:?}"), &e))?;
        walk(&dir, "", &mut b)?;
    } else {
        let (parent, name) = match r.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (".".to_string(), r.clone()),
        };
        let dir = root
            .open_dir(&parent)
            .map_err(|e| Error::io(format!("open parent of {path:?}"), &e))?;
        add(&dir, &name, &name, &mut b)?;
    }
    b.into_inner()
        .map_err(|e| Error::internal(format!("cannot finish tar archive: {e}")))
}

fn walk(dir: &Dir, prefix: &str, b: &mut Builder<Vec<u8>>) -> Result<()> {
    let mut names = Vec::new();
    for ent in dir
        .entries()
        .map_err(|e| Error::io(format!("list {prefix:?}"), &e))?
    {
        let ent = ent.map_err(|e| Error::io(format!("list {prefix:?}"), &e))?;
        names.push(ent.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        let archived = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if add(dir, &name, &archived, b)? {
            let sub = dir
                .open_dir(&name)
                .map_err(|e| Error::io(format!("open {archived:?}"), &e))?;
            walk(&sub, &archived, b)?;
        }
    }
    Ok(())
}

/// Append one entry; returns true when it is a directory to descend into.
fn add(dir: &Dir, name: &str, archived: &str, b: &mut Builder<Vec<u8>>) -> Result<bool> {
    let io = |e: std::io::Error| Error::io(format!("pack {archived:?}"), &e);
    let md = dir.symlink_metadata(name).map_err(io)?;
    let ft = md.file_type();
    let mut h = Header::new_gnu();
    h.set_mode(md.mode() & 0o7777);
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    if ft.is_symlink() {
        let target = dir.read_link_contents(name).map_err(io)?;
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, archived, &target).map_err(io)?;
        Ok(false)
    } else if ft.is_dir() {
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, format!("{archived}/"), std::io::empty())
            .map_err(io)?;
        Ok(true)
    } else if ft.is_file() {
        let f = dir.open(name).map_err(io)?;
        h.set_entry_type(EntryType::Regular);
        h.set_size(md.len());
        b.append_data(&mut h, archived, f).map_err(io)?;
        Ok(false)
    } else {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert_eq!(entry_path(b"./a//b").unwrap().unwrap(), "a/b");
        assert!(entry_path(b"./").unwrap().is_none());
        assert!(entry_path(b"../x").is_err());
        assert!(entry_path(b"a/../../x").is_err());
        assert!(entry_path(b"/etc/passwd").is_err());
    }
}
