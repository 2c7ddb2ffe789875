//! read, write and cp. Directories travel as tar streams.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use godel_core::{Error, FileEntry, FileKind, Result};
use http::Method;

use crate::Ctx;
use crate::client::enc;

fn file_url(id: &str, what: &str, path: &str) -> String {
    format!("/v1/runtimes/{id}/{what}?path={}", enc(path))
}

pub async fn read(ctx: &Ctx, id: &str, path: &str) -> Result<i32> {
    let data = ctx
        .client
        .call(
            Method::GET,
            &file_url(id, "files", path),
            Bytes::new(),
            "application/json",
        )
        .await?;
    let mut out = std::io::stdout();
    out.write_all(&data)
        .map_err(|e| Error::io("write stdout", &e))?;
    out.flush().map_err(|e| Error::io("write stdout", &e))?;
    Ok(0)
}

pub async fn write(ctx: &Ctx, id: &str, path: &str) -> Result<i32> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read stdin", &e))?;
    let n = buf.len();
    ctx.client
        .call(
            Method::PUT,
            &file_url(id, "files", path),
            Bytes::from(buf),
            "application/octet-stream",
        )
        .await?;
    if ctx.json {
        crate::output::json(&serde_json::json!({"path": path, "bytes": n}));
    }
    Ok(0)
}

/// `ID:PATH` → Some((id, path)); a local path → None.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    Some((id, path))
}

fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

async fn remote_stat(ctx: &Ctx, id: &str, path: &str) -> Result<Option<FileEntry>> {
    match ctx
        .client
        .json::<FileEntry>(Method::GET, &file_url(id, "stat", path), None::<&()>)
        .await
    {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.code == godel_core::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn cp(ctx: &Ctx, src: &str, dst: &str) -> Result<i32> {
    match (remote(src), remote(dst)) {
        (Some((id, rpath)), None) => download(ctx, id, rpath, Path::new(dst)).await?,
        (None, Some((id, rpath))) => upload(ctx, Path::new(src), id, rpath).await?,
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "copy between two runtimes is not supported; copy through a local directory",
            ));
        }
        (None, None) => return Err(Error::invalid("one side of cp must be ID:PATH")),
    }
    Ok(0)
}

async fn download(ctx: &Ctx, id: &str, rpath: &str, dst: &Path) -> Result<()> {
    let entry = remote_stat(ctx, id, rpath)
        .await?
        .ok_or_else(|| Error::not_found(format!("{id}:{rpath} does not exist")))?;
    let target: PathBuf = if dst.is_dir() {
        dst.join(base_name(rpath))
    } else {
        dst.to_path_buf()
    };
    match entry.kind {
        FileKind::Dir => {
            let data = ctx
                .client
                .call(
                    Method::GET,
                    &file_url(id, "tar", rpath),
                    Bytes::new(),
                    "application/json",
                )
                .await?;
            std::fs::create_dir_all(&target)
                .map_err(|e| Error::io(format!("create {}", target.display()), &e))?;
            let mut ar = tar::Archive::new(std::io::Cursor::new(data));
            ar.set_preserve_permissions(true);
            // `unpack` refuses entries that would escape the target directory.
            ar.unpack(&target)
                .map_err(|e| Error::io(format!("unpack into {}", target.display()), &e))?;
        }
        _ => {
            let data = ctx
                .client
                .call(
                    Method::GET,
                    &file_url(id, "files", rpath),
                    Bytes::new(),
                    "application/json",
                )
                .await?;
            std::fs::write(&target, &data)
                .map_err(|e| Error::io(format!("write {}", target.display()), &e))?;
        }
    }
    Ok(())
}

async fn upload(ctx: &Ctx, src: &Path, id: &str, rpath: &str) -> Result<()> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io(format!("{}", src.display()), &e))?;
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let existing = remote_stat(ctx, id, rpath).await?;
    let into_dir = matches!(
        existing,
        Some(FileEntry {
            kind: FileKind::Dir,
            ..
        })
    ) && !name.is_empty();
    let target = if into_dir {
        format!("{}/{name}", rpath.trim_end_matches('/'))
    } else {
        rpath.to_string()
    };
    if meta.is_dir() {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", src)
            .map_err(|e| Error::io(format!("pack {}", src.display()), &e))?;
        let data = builder.into_inner().map_err(|e| Error::io("pack", &e))?;
        ctx.client
            .call(
                Method::PUT,
                &file_url(id, "tar", &target),
                Bytes::from(data),
                "application/x-tar",
            )
            .await?;
    } else {
        let data =
            std::fs::read(src).map_err(|e| Error::io(format!("read {}", src.display()), &e))?;
        ctx.client
            .call(
                Method::PUT,
                &file_url(id, "files", &target),
                Bytes::from(data),
                "application/octet-stream",
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs() {
        assert_eq!(remote("rt-1:/a/b"), Some(("rt-1", "/a/b")));
        assert_eq!(remote("./x:y"), None);
        assert_eq!(remote("/tmp/x"), None);
        assert_eq!(remote(":x"), None);
        assert_eq!(base_name("/a/b/"), "b");
    }
}
