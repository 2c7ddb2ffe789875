//! Shared helpers of the integration tests: real git repositories in temp
//! dirs and a provider with the host isolator.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use godel_core::{ExecOutput, ExecRequest, Isolation, RuntimeProvider, SpawnSpec, WorkspaceMode};
use godel_worktree::{WorktreeConfig, WorktreeProvider};

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repo with two commits: `v1` (README "one") and `main` (README "two"),
/// an executable script, a symlink and a .gitignore for `*.log`.
pub fn make_repo(path: &Path) {
    std::fs::create_dir_all(path.join("src")).unwrap();
    git(path, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(path.join("README.md"), "one\n").unwrap();
    std::fs::write(path.join("src/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        path.join("src/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("README.md", path.join("readme-link")).unwrap();
    std::fs::write(path.join(".gitignore"), "*.log\n").unwrap();
    git(path, &["add", "-A"]);
    git(path, &["commit", "-qm", "one"]);
    git(path, &["tag", "v1"]);
    std::fs::write(path.join("README.md"), "two\n").unwrap();
    git(path, &["commit", "-qam", "two"]);
}

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub p: WorktreeProvider,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        make_repo(&repo);
        let home = tmp.path().join("home");
        let p = WorktreeProvider::new(WorktreeConfig::new(&home)).unwrap();
        Env { tmp, repo, home, p }
    }

    /// A second provider over the same home (a restarted daemon).
    pub fn reopen(&self) -> WorktreeProvider {
        WorktreeProvider::new(WorktreeConfig::new(&self.home)).unwrap()
    }

    pub fn spec(&self, mode: WorkspaceMode) -> SpawnSpec {
        SpawnSpec {
            repo: Some(self.repo.to_string_lossy().into_owned()),
            isolation: Isolation::None,
            workspace: mode,
            ..Default::default()
        }
    }

    pub fn ws(&self, id: &str) -> PathBuf {
        self.home.join("workspaces").join(id)
    }
}

pub fn empty_spec() -> SpawnSpec {
    SpawnSpec {
        isolation: Isolation::None,
        ..Default::default()
    }
}

pub async fn sh(p: &dyn RuntimeProvider, id: &str, script: &str) -> ExecOutput {
    p.exec_collect(id, ExecRequest::new(["sh", "-c", script]))
        .await
        .unwrap()
}

pub fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

pub const MODES: [WorkspaceMode; 2] = [WorkspaceMode::Cow, WorkspaceMode::GitWorktree];

impl Drop for Env {
    /// Unmount whatever a test left mounted under its home, so the temp dir
    /// can be removed and no mount outlives the test.
    fn drop(&mut self) {
        let prefix = format!("{}/", self.home.display());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mp in info.lines().filter_map(|l| l.split(' ').nth(4)) {
            if mp.starts_with(&prefix) {
                let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
