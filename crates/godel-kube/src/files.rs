//! File operations inside an agent pod, by small exec'd shell commands and
//! tar streams (as `kubectl cp` does, but checked: reads carry the file's
//! size and are verified, writes are verified in the pod before an atomic
//! rename, downloaded tars are parsed to the end). Paths are passed as
//! arguments, never spliced into scripts.

use std::io::Read;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use godel_core::{Error, FileEntry, FileKind, Result, WORKSPACE_MOUNT, workspace_relative};

use crate::provider::{AgentRef, Inner};

const NOT_FOUND: i32 = 44;
const WRONG_KIND: i32 = 45;
const SIZE_MISMATCH: i32 = 46;
const EXISTS: i32 = 47;
const NOT_EMPTY: i32 = 48;

const READ: &str = r#"[ -e "$1" ] || exit 44; [ -d "$1" ] && exit 45; printf '%s\n' "$(wc -c < "$1")"; exec cat -- "$1""#;
const WRITE: &str = r#"[ -d "$1" ] && exit 45; mkdir -p -- "$(dirname -- "$1")" || exit 1; t="$1.godel-part.$$"; cat > "$t" || { rm -f -- "$t"; exit 1; }; n=$(wc -c < "$t"); if [ "$n" -ne "$2" ]; then rm -f -- "$t"; echo "received $n of $2 bytes" >&2; exit 46; fi; exec mv -f -- "$t" "$1""#;
const FMT: &str = r"%y\0%s\0%m\0%T@\0%f\0%l\0";
const LIST: &str = r#"[ -e "$1" ] || exit 44; [ -d "$1" ] || exit 45; exec find "$1" -mindepth 1 -maxdepth 1 -printf "$2""#;
const STAT: &str =
    r#"[ -e "$1" ] || [ -L "$1" ] || exit 44; exec find "$1" -maxdepth 0 -printf "$2""#;
const MKDIR: &str = r#"[ -e "$1" ] && [ ! -d "$1" ] && exit 47; exec mkdir -p -- "$1""#;
const RENAME: &str = r#"[ -e "$1" ] || [ -L "$1" ] || exit 44; mkdir -p -- "$(dirname -- "$2")" && exec mv -f -- "$1" "$2""#;
const REMOVE: &str = r#"[ -e "$1" ] || [ -L "$1" ] || exit 44; if [ "$2" = r ]; then exec rm -rf -- "$1"; fi; if [ -d "$1" ] && [ ! -L "$1" ]; then [ -z "$(ls -A -- "$1")" ] || exit 48; exec rmdir -- "$1"; fi; exec rm -f -- "$1""#;
const UNTAR: &str = r#"mkdir -p -- "$1" && exec tar -x -f - -C "$1" --no-same-owner"#;
pub(crate) const TAR: &str = r#"if [ -d "$1" ]; then exec tar -c -f - -C "$1" .; elif [ -e "$1" ]; then exec tar -c -f - -C "$(dirname -- "$1")" "$(basename -- "$1")"; else exit 44; fi"#;

/// `/home/user/<rel>` of a caller's path, and the relative form.
pub(crate) fn pod_path(path: &str) -> Result<(String, String)> {
    let rel = workspace_relative(path)?;
    let abs = if rel.is_empty() {
        WORKSPACE_MOUNT.to_string()
    } else {
        format!("{WORKSPACE_MOUNT}/{rel}")
    };
    Ok((abs, rel))
}

/// `sh -c <script> sh <args...>`.
pub(crate) fn script(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

fn fail(path: &str, code: i32, stderr: &[u8]) -> Error {
    let msg = String::from_utf8_lossy(stderr).trim().to_string();
    match code {
        NOT_FOUND => Error::not_found(format!("{path}: no such file or directory")),
        WRONG_KIND => Error::invalid(format!(
            "{path}: wrong kind of file (a directory where a file is needed, or the reverse)"
        )),
        SIZE_MISMATCH => Error::exec(format!("{path}: incomplete transfer: {msg}")),
        EXISTS => Error::conflict(format!("{path}: exists and is not a directory")),
        NOT_EMPTY => Error::conflict(format!("{path}: directory not empty (use recursive)")),
        _ => Error::exec(format!(
            "{path}: command failed with exit code {code}: {msg}"
        )),
    }
}

/// Parse `find -printf` records (six NUL-terminated fields each).
pub(crate) fn parse_entries(out: &[u8], dir_rel: &str) -> Result<Vec<FileEntry>> {
    let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    let mut entries = Vec::new();
    for rec in fields.chunks(6).filter(|c| c.len() == 6) {
        let s = |i: usize| String::from_utf8_lossy(rec[i]).into_owned();
        let kind = match s(0).as_str() {
            "f" => FileKind::File,
            "d" => FileKind::Dir,
            "l" => FileKind::Symlink,
            _ => FileKind::Other,
        };
        let name = s(4);
        let modified = s(3)
            .split('.')
            .next()
            .and_then(|secs| secs.parse::<i64>().ok())
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
        entries.push(FileEntry {
            path: if dir_rel.is_empty() {
                name.clone()
            } else {
                format!("{dir_rel}/{name}")
            },
            name,
            kind,
            size: s(1).parse().unwrap_or(0),
            mode: u32::from_str_radix(&s(2), 8).unwrap_or(0),
            modified,
            symlink_target: (kind == FileKind::Symlink).then(|| s(5)),
        });
    }
    Ok(entries)
}

/// Read every entry of a tar to its end: a truncated archive is an error.
pub(crate) fn verify_tar<R: Read>(r: R) -> std::io::Result<(u64, u64)> {
    let mut ar = tar::Archive::new(r);
    let (mut files, mut bytes) = (0u64, 0u64);
    for e in ar.entries()? {
        let mut e = e?;
        bytes += std::io::copy(&mut e, &mut std::io::sink())?;
        files += 1;
    }
    Ok((files, bytes))
}

impl Inner {
    async fn run(
        &self,
        agent: &AgentRef,
        argv: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let input = stdin.map(|b| {
            Box::new(std::io::Cursor::new(b)) as Box<dyn tokio::io::AsyncRead + Unpin + Send>
        });
        let (code, err) = self.exec_raw(agent, argv, input, &mut out).await?;
        Ok((code, out, err))
    }

    pub(crate) async fn read_file(&self, id: &str, path: &str) -> Result<Bytes> {
        let agent = self.agent(id)?;
        let (abs, _) = pod_path(path)?;
        let (code, out, err) = self.run(&agent, script(READ, &[&abs]), None).await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        let nl = out
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| Error::exec(format!("{path}: malformed read response")))?;
        let size: usize = String::from_utf8_lossy(&out[..nl])
            .trim()
            .parse()
            .map_err(|_| Error::exec(format!("{path}: malformed size in read response")))?;
        let data = Bytes::from(out).slice(nl + 1..);
        if data.len() != size {
            return Err(Error::exec(format!(
                "{path}: incomplete read: got {} of {size} bytes (the file may have changed)",
                data.len()
            )));
        }
        Ok(data)
    }

    pub(crate) async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()> {
        let agent = self.agent(id)?;
        let (abs, rel) = pod_path(path)?;
        if rel.is_empty() {
            return Err(Error::invalid("cannot write the workspace root as a file"));
        }
        let len = data.len().to_string();
        let (code, _, err) = self
            .run(&agent, script(WRITE, &[&abs, &len]), Some(data))
            .await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        Ok(())
    }

    pub(crate) async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        let agent = self.agent(id)?;
        let (abs, rel) = pod_path(path)?;
        let (code, out, err) = self.run(&agent, script(LIST, &[&abs, FMT]), None).await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        let mut entries = parse_entries(&out, &rel)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    pub(crate) async fn stat(&self, id: &str, path: &str) -> Result<FileEntry> {
        let agent = self.agent(id)?;
        let (abs, rel) = pod_path(path)?;
        let (code, out, err) = self.run(&agent, script(STAT, &[&abs, FMT]), None).await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        let mut e = parse_entries(&out, "")?
            .pop()
            .ok_or_else(|| Error::exec(format!("{path}: malformed stat response")))?;
        e.name = rel.rsplit('/').next().unwrap_or("").to_string();
        e.path = rel;
        Ok(e)
    }

    pub(crate) async fn make_dir(&self, id: &str, path: &str) -> Result<()> {
        let agent = self.agent(id)?;
        let (abs, _) = pod_path(path)?;
        let (code, _, err) = self.run(&agent, script(MKDIR, &[&abs]), None).await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        Ok(())
    }

    pub(crate) async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let agent = self.agent(id)?;
        let (a, arel) = pod_path(from)?;
        let (b, brel) = pod_path(to)?;
        if arel.is_empty() || brel.is_empty() {
            return Err(Error::invalid("cannot rename the workspace root"));
        }
        let (code, _, err) = self.run(&agent, script(RENAME, &[&a, &b]), None).await?;
        if code != 0 {
            return Err(fail(from, code, &err).with_runtime(id));
        }
        Ok(())
    }

    pub(crate) async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let agent = self.agent(id)?;
        let (abs, rel) = pod_path(path)?;
        if rel.is_empty() {
            return Err(Error::invalid("cannot remove the workspace root"));
        }
        let mode = if recursive { "r" } else { "" };
        let (code, _, err) = self
            .run(&agent, script(REMOVE, &[&abs, mode]), None)
            .await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        Ok(())
    }

    /// Unpack a tar stream into `path` (created if missing).
    pub(crate) async fn untar(
        &self,
        agent: &AgentRef,
        path: &str,
        tar: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    ) -> Result<()> {
        let (abs, _) = pod_path(path)?;
        let mut out = Vec::new();
        let (code, err) = self
            .exec_raw(agent, script(UNTAR, &[&abs]), Some(tar), &mut out)
            .await?;
        if code != 0 {
            return Err(fail(path, code, &err));
        }
        Ok(())
    }

    pub(crate) async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()> {
        let agent = self.agent(id)?;
        verify_tar(&tar[..])
            .map_err(|e| Error::invalid(format!("upload_tar: not a valid tar archive: {e}")))?;
        self.untar(&agent, path, Box::new(std::io::Cursor::new(tar)))
            .await
            .map_err(|e| e.with_runtime(id))
    }

    pub(crate) async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes> {
        let agent = self.agent(id)?;
        let (abs, _) = pod_path(path)?;
        let (code, out, err) = self.run(&agent, script(TAR, &[&abs]), None).await?;
        if code != 0 {
            return Err(fail(path, code, &err).with_runtime(id));
        }
        verify_tar(&out[..])
            .map_err(|e| Error::exec(format!("{path}: the pod sent a damaged tar archive: {e}")))?;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_scripts() {
        assert_eq!(pod_path("a/b").unwrap().0, "/home/user/a/b");
        assert_eq!(pod_path("/home/user").unwrap().0, "/home/user");
        assert!(pod_path("../etc").is_err());
        assert_eq!(script("echo", &["x"]), ["sh", "-c", "echo", "sh", "x"]);
    }

    #[test]
    fn parses_find_output() {
        let out = b"f\x0012\x00644\x001700000000.5\x00a.txt\x00\x00l\x000\x00777\x001700000000.0\x00ln\x00a.txt\x00";
        let e = parse_entries(out, "dir").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, "dir/a.txt");
        assert_eq!(e[0].size, 12);
        assert_eq!(e[0].mode, 0o644);
        assert_eq!(e[1].kind, FileKind::Symlink);
        assert_eq!(e[1].symlink_target.as_deref(), Some("a.txt"));
    }
}
