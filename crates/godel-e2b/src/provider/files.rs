//! File operations on a remote sandbox: `/files` for contents,
//! `filesystem.Filesystem` RPCs for the rest, and tar archives packed or
//! unpacked here one file at a time. godel paths (workspace-relative or under
//! `/home/user`) become absolute sandbox paths; entries come back relative.

use std::io::Read;

use bytes::Bytes;
use godel_core::{
    Error, ErrorCode, FileEntry, FileKind, Result, WORKSPACE_MOUNT, workspace_relative,
};

use super::client::{Client, EnvdTarget};
use crate::pb::filesystem::{
    EntryInfo, FileType, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, StatRequest, StatResponse,
};

/// The absolute sandbox path of a godel path (other absolute paths pass through).
pub(crate) fn abs(path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    match workspace_relative(path) {
        Ok(rel) if rel.is_empty() => WORKSPACE_MOUNT.to_string(),
        Ok(rel) => format!("{WORKSPACE_MOUNT}/{rel}"),
        Err(_) => format!("{WORKSPACE_MOUNT}/{path}"),
    }
}

/// An envd entry as a godel entry (path relative to `/home/user` when under it).
pub(crate) fn to_entry(e: &EntryInfo) -> FileEntry {
    let kind = match FileType::try_from(e.r#type) {
        Ok(FileType::File) => FileKind::File,
        Ok(FileType::Directory) => FileKind::Dir,
        Ok(FileType::Symlink) => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let path = workspace_relative(&e.path).unwrap_or_else(|_| e.path.clone());
    FileEntry {
        name: e.name.clone(),
        path,
        kind,
        size: e.size.max(0) as u64,
        mode: e.mode,
        modified: e
            .modified_time
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)),
        symlink_target: e.symlink_target.clone(),
    }
}

pub(super) async fn read(c: &Client, t: &EnvdTarget, path: &str) -> Result<Bytes> {
    c.download(t, &abs(path)).await
}

pub(super) async fn write(
    c: &Client,
    t: &EnvdTarget,
    path: &str,
    data: Bytes,
    octet: bool,
) -> Result<()> {
    c.upload(t, &abs(path), data, octet).await
}

pub(super) async fn list(c: &Client, t: &EnvdTarget, path: &str) -> Result<Vec<FileEntry>> {
    let req = ListDirRequest {
        path: abs(path),
        depth: 1,
    };
    let resp: ListDirResponse = c.unary(t, "filesystem.Filesystem/ListDir", &req).await?;
    Ok(resp.entries.iter().map(to_entry).collect())
}

pub(super) async fn stat(c: &Client, t: &EnvdTarget, path: &str) -> Result<FileEntry> {
    let req = StatRequest { path: abs(path) };
    let resp: StatResponse = c.unary(t, "filesystem.Filesystem/Stat", &req).await?;
    resp.entry
        .as_ref()
        .map(to_entry)
        .ok_or_else(|| Error::internal("Stat returned no entry"))
}

pub(super) async fn make_dir(c: &Client, t: &EnvdTarget, path: &str) -> Result<()> {
    let req = MakeDirRequest { path: abs(path) };
    match c
        .unary::<_, MakeDirResponse>(t, "filesystem.Filesystem/MakeDir", &req)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::Conflict => match stat(c, t, path).await {
            Ok(s) if s.kind == FileKind::Dir => Ok(()),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

pub(super) async fn rename(c: &Client, t: &EnvdTarget, from: &str, to: &str) -> Result<()> {
    let req = MoveRequest {
        source: abs(from),
        destination: abs(to),
    };
    c.unary::<_, MoveResponse>(t, "filesystem.Filesystem/Move", &req)
        .await
        .map(drop)
}

pub(super) async fn remove(c: &Client, t: &EnvdTarget, path: &str, recursive: bool) -> Result<()> {
    if !recursive {
        let s = stat(c, t, path).await?;
        if s.kind == FileKind::Dir && !list(c, t, path).await?.is_empty() {
            return Err(Error::conflict(format!("directory {path} is not empty")));
        }
    }
    let req = RemoveRequest { path: abs(path) };
    c.unary::<_, RemoveResponse>(t, "filesystem.Filesystem/Remove", &req)
        .await
        .map(drop)
}

pub(super) async fn upload_tar(
    c: &Client,
    t: &EnvdTarget,
    dest: &str,
    tar: Bytes,
    octet: bool,
) -> Result<()> {
    let dest = abs(dest);
    make_dir(c, t, &dest).await?;
    // Unpack in memory first so a bad archive writes nothing.
    let mut items: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut archive = tar::Archive::new(&tar[..]);
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid(format!("bad tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::invalid(format!("bad tar entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| Error::invalid(format!("bad tar path: {e}")))?
            .to_string_lossy()
            .into_owned();
        let rel = workspace_relative(path.trim_start_matches('/'))?;
        if rel.is_empty() {
            continue;
        }
        let target = format!("{}/{rel}", dest.trim_end_matches('/'));
        match entry.header().entry_type() {
            tar::EntryType::Directory => items.push((target, None)),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| Error::invalid(format!("bad tar data: {e}")))?;
                items.push((target, Some(data)));
            }
            _ => {}
        }
    }
    for (path, data) in items {
        match data {
            None => make_dir(c, t, &path).await?,
            Some(d) => write(c, t, &path, Bytes::from(d), octet).await?,
        }
    }
    Ok(())
}

pub(super) async fn download_tar(c: &Client, t: &EnvdTarget, path: &str) -> Result<Bytes> {
    let root = stat(c, t, path).await?;
    let mut b = tar::Builder::new(Vec::new());
    let append = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], dir: bool, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_size(if dir { 0 } else { data.len() as u64 });
        h.set_mode(if mode & 0o777 == 0 {
            if dir { 0o755 } else { 0o644 }
        } else {
            mode & 0o777
        });
        h.set_cksum();
        b.append_data(&mut h, name, data)
            .map_err(|e| Error::internal(format!("cannot build the tar archive: {e}")))
    };
    if root.kind != FileKind::Dir {
        let data = read(c, t, path).await?;
        append(&mut b, &root.name, &data, false, root.mode)?;
    } else {
        let mut queue = vec![(abs(path), String::new())];
        while let Some((dir, prefix)) = queue.pop() {
            for e in list(c, t, &dir).await? {
                let name = if prefix.is_empty() {
                    e.name.clone()
                } else {
                    format!("{prefix}/{}", e.name)
                };
                let full = format!("{}/{}", dir.trim_end_matches('/'), e.name);
                match e.kind {
                    FileKind::Dir => {
                        append(&mut b, &format!("{name}/"), &[], true, e.mode)?;
                        queue.push((full, name));
                    }
                    FileKind::File => {
                        let data = read(c, t, &full).await?;
                        append(&mut b, &name, &data, false, e.mode)?;
                    }
                    _ => {}
                }
            }
        }
    }
    b.into_inner()
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("cannot finish the tar archive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_both_ways() {
        assert_eq!(abs("a/b"), "/home/user/a/b");
        assert_eq!(abs(""), "/home/user");
        assert_eq!(abs("/tmp/x"), "/tmp/x");
        let e = EntryInfo {
            name: "b".into(),
            r#type: FileType::Directory as i32,
            path: "/home/user/a/b".into(),
            ..Default::default()
        };
        let f = to_entry(&e);
        assert_eq!((f.path.as_str(), f.kind), ("a/b", FileKind::Dir));
    }
}
