//! File-operation types shared by every provider: entries, kinds, and the
//! path rules (paths are relative to the workspace, or absolute under the
//! runtime's home `/home/user`, which maps to the same place).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The workspace's path as the agent sees it (E2B clients assume this).
pub const WORKSPACE_MOUNT: &str = "/home/user";

/// Kind of a file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file system entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Path relative to the workspace root.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// Turn a caller's path into a workspace-relative one.
///
/// Accepts `a/b`, `./a/b`, `/home/user/a/b` and `/home/user`. Refuses other
/// absolute paths, NUL bytes and any `..` component. This is only a first,
/// lexical gate: providers must still resolve beneath the workspace root with
/// `openat2(RESOLVE_BENEATH)`/cap-std so symlinks cannot lead outside.
pub fn workspace_relative(path: &str) -> Result<String> {
    if path.contains('\0') {
        return Err(Error::invalid("path contains a NUL byte"));
    }
    let rel = if let Some(rest) = path.strip_prefix(WORKSPACE_MOUNT) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(outside(path));
        }
        rest.trim_start_matches('/')
    } else if path.starts_with('/') {
        return Err(outside(path));
    } else {
        path
    };
    let mut parts = Vec::new();
    for comp in rel.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(outside(path)),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn outside(path: &str) -> Error {
    Error::invalid(format!(
        "path {path:?} is outside the workspace: use a relative path or one under {WORKSPACE_MOUNT}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(workspace_relative("a/b").unwrap(), "a/b");
        assert_eq!(workspace_relative("./a//b/").unwrap(), "a/b");
        assert_eq!(workspace_relative("/home/user/a").unwrap(), "a");
        assert_eq!(workspace_relative("/home/user").unwrap(), "");
        assert_eq!(workspace_relative("").unwrap(), "");
    }

    #[test]
    fn escapes_are_refused() {
        for p in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/home/username/x",
            "a\0b",
            "/home/user/../x",
        ] {
            assert_eq!(
                workspace_relative(p).unwrap_err().code,
                crate::ErrorCode::InvalidArgument,
                "{p}"
            );
        }
    }
}
