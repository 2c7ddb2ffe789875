//! Host side effects of the daemon half of the sandbox (cgroup files, state
//! directories, network commands) behind one trait, [`HostOps`], so the
//! sequencing logic in [`crate::cgroup`] and [`crate::nat`] runs against a
//! [`RecordingHostOps`] in unit tests without root. [`RealHostOps`] is the
//! real thing. (The init's own mount sequence is a pure plan, see
//! [`crate::mounts`], applied with syscalls inside the new namespaces.)

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One host side effect, as the fake records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOp {
    MkdirAll(PathBuf),
    Write(PathBuf, String),
    RemoveDir(PathBuf),
    Run(Vec<String>),
}

/// File and command operations on the host.
pub trait HostOps: Send + Sync + std::fmt::Debug {
    fn mkdir_all(&self, path: &Path) -> std::io::Result<()>;
    fn write(&self, path: &Path, contents: &str) -> std::io::Result<()>;
    fn read(&self, path: &Path) -> std::io::Result<String>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_dir(&self, path: &Path) -> std::io::Result<()>;
    /// Run a host command (`ip`, `nft`); fails with its stderr on a non-zero exit.
    fn run(&self, argv: &[&str]) -> std::io::Result<String>;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHostOps;

impl HostOps for RealHostOps {
    fn mkdir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn write(&self, path: &Path, contents: &str) -> std::io::Result<()> {
        // cgroup files want one write(2) without O_TRUNC/O_CREAT semantics.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(contents.as_bytes())
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn run(&self, argv: &[&str]) -> std::io::Result<String> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let out = std::process::Command::new(prog).args(args).output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(std::io::Error::other(format!(
                "{}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// A fake host: records every mutating operation and serves reads from a map.
#[derive(Debug, Default)]
pub struct RecordingHostOps {
    pub ops: Mutex<Vec<HostOp>>,
    /// File contents reads return (and writes update).
    pub files: Mutex<BTreeMap<PathBuf, String>>,
    /// Paths `exists` reports (in addition to files and made directories).
    pub dirs: Mutex<Vec<PathBuf>>,
}

impl RecordingHostOps {
    pub fn new() -> Self {
        Self::default()
    }
    /// Seed a file.
    pub fn with_file(self, path: impl Into<PathBuf>, contents: &str) -> Self {
        self.files.lock().insert(path.into(), contents.to_string());
        self
    }
    /// Every recorded operation so far.
    pub fn recorded(&self) -> Vec<HostOp> {
        self.ops.lock().clone()
    }
    fn push(&self, op: HostOp) {
        self.ops.lock().push(op);
    }
}

impl HostOps for RecordingHostOps {
    fn mkdir_all(&self, path: &Path) -> std::io::Result<()> {
        self.push(HostOp::MkdirAll(path.to_path_buf()));
        self.dirs.lock().push(path.to_path_buf());
        Ok(())
    }
    fn write(&self, path: &Path, contents: &str) -> std::io::Result<()> {
        self.push(HostOp::Write(path.to_path_buf(), contents.to_string()));
        self.files
            .lock()
            .insert(path.to_path_buf(), contents.to_string());
        Ok(())
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .lock()
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.lock().contains_key(path) || self.dirs.lock().iter().any(|d| d == path)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        self.push(HostOp::RemoveDir(path.to_path_buf()));
        self.dirs.lock().retain(|d| d != path);
        Ok(())
    }
    fn run(&self, argv: &[&str]) -> std::io::Result<String> {
        self.push(HostOp::Run(argv.iter().map(|s| s.to_string()).collect()));
        Ok(String::new())
    }
}
