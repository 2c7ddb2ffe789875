//! Running git: one builder that always uses an explicit argv (never a
//! shell), a reproducible configuration (no system or global config, so a
//! user's `core.autocrlf` cannot change what a snapshot contains) and a fixed
//! identity for the commits godel writes. Failures become `godel_core::Error`
//! carrying git's own stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use godel_core::{Error, Result};

/// Author and committer of the commits godel writes.
const IDENT_NAME: &str = "godel";
const IDENT_EMAIL: &str = "godel@localhost";

/// One git invocation under construction.
pub struct Git {
    cmd: tokio::process::Command,
    desc: Vec<String>,
}

impl Default for Git {
    fn default() -> Self {
        Self::new()
    }
}

impl Git {
    /// `git` with a clean configuration (no system/global config, no prompts).
    pub fn new() -> Self {
        let mut cmd = tokio::process::Command::new("git");
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR",
            "GIT_NAMESPACE",
            "GIT_CEILING_DIRECTORIES",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", IDENT_NAME)
            .env("GIT_AUTHOR_EMAIL", IDENT_EMAIL)
            .env("GIT_COMMITTER_NAME", IDENT_NAME)
            .env("GIT_COMMITTER_EMAIL", IDENT_EMAIL)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Repositories owned by another user (the caller's checkout while the
        // daemon runs as root) are read, never executed from.
        cmd.args(["-c", "safe.directory=*", "-c", "core.fileMode=true"]);
        cmd.args(["-c", "core.symlinks=true", "-c", "core.autocrlf=false"]);
        cmd.args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"]);
        // Fetched objects stay packed, so checkouts can hard-link them.
        cmd.args(["-c", "fetch.unpackLimit=1", "-c", "transfer.unpackLimit=1"]);
        // Workspaces are agent-controlled: never run their hooks or fsmonitor.
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ]);
        Git {
            cmd,
            desc: vec!["git".into()],
        }
    }

    /// `--git-dir=<dir>`.
    pub fn git_dir(self, dir: &Path) -> Self {
        self.arg("--git-dir").arg(dir)
    }

    /// `--work-tree=<dir>`.
    pub fn work_tree(self, dir: &Path) -> Self {
        self.arg("--work-tree").arg(dir)
    }

    /// `-C <dir>`.
    pub fn dir(self, dir: &Path) -> Self {
        self.arg("-C").arg(dir)
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.desc.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    fn describe(&self) -> String {
        let mut d = self.desc.join(" ");
        if d.len() > 300 {
            d.truncate(300);
            d.push_str("...");
        }
        d
    }

    /// Run, returning stdout without the trailing newline; a non-zero exit is an error.
    pub async fn run(self) -> Result<String> {
        let desc = self.describe();
        let out = self.output().await?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "`{desc}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        while s.ends_with('\n') {
            s.pop();
        }
        Ok(s)
    }

    /// Run with `input` on stdin; like [`Git::run`] otherwise.
    pub async fn run_with_input(mut self, input: Vec<u8>) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        let desc = self.describe();
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .map_err(|e| Error::io(format!("cannot run `{desc}`"), &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .await
                .map_err(|e| Error::io(format!("cannot feed `{desc}`"), &e))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| Error::io(format!("cannot run `{desc}`"), &e))?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "`{desc}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Run and return stdout as raw bytes; a non-zero exit is an error.
    pub async fn run_bytes(self) -> Result<Vec<u8>> {
        let desc = self.describe();
        let out = self.output().await?;
        if !out.status.success() {
            return Err(Error::internal(format!(
                "`{desc}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    }

    /// Run and report only whether git exited with 0.
    pub async fn succeeds(self) -> Result<bool> {
        Ok(self.output().await?.status.success())
    }

    /// Run and return the raw output whatever the exit status.
    pub async fn output(mut self) -> Result<std::process::Output> {
        let desc = self.describe();
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.output().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::unavailable("git is not installed (it is needed by the worktree runtime)")
            } else {
                Error::io(format!("cannot run `{desc}`"), &e)
            }
        })
    }
}

/// Whether `s` looks like a full hex object id.
pub fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolve `git_ref` in the repository at `repo` to a commit id.
///
/// A missing repository is `NOT_FOUND`; a path that is not a repository or
/// an unknown ref is `INVALID_ARGUMENT` naming what was asked for.
pub async fn resolve_commit(repo: &Path, git_ref: &str) -> Result<String> {
    if git_ref.is_empty() || git_ref.starts_with('-') || git_ref.contains('\0') {
        return Err(Error::invalid(format!("invalid git ref {git_ref:?}")));
    }
    let out = Git::new()
        .dir(repo)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{git_ref}^{{commit}}"))
        .output()
        .await?;
    if out.status.success() {
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if is_object_id(&id) {
            return Ok(id);
        }
    }
    if !repo.exists() {
        return Err(Error::not_found(format!(
            "repository {} not found",
            repo.display()
        )));
    }
    let is_repo = Git::new()
        .dir(repo)
        .args(["rev-parse", "--git-dir"])
        .succeeds()
        .await?;
    if !is_repo {
        return Err(Error::invalid(format!(
            "{} is not a git repository",
            repo.display()
        )));
    }
    Err(Error::invalid(format!(
        "unknown git ref {git_ref:?} in repository {}",
        repo.display()
    )))
}

/// Check that git runs; returns its version string.
pub async fn version() -> Result<String> {
    Git::new().arg("--version").run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids() {
        assert!(is_object_id(&"a".repeat(40)));
        assert!(!is_object_id("HEAD"));
        assert!(!is_object_id(&"g".repeat(40)));
    }

    #[tokio::test]
    async fn resolve_errors_name_the_problem() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        let e = resolve_commit(&missing, "HEAD").await.unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::NotFound);
        let e = resolve_commit(t.path(), "HEAD").await.unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
        assert!(e.message.contains("not a git repository"), "{e}");
        let e = resolve_commit(t.path(), "--upload-pack=x")
            .await
            .unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
    }
}
