//! Benchmark helpers: [`generate_repo`] builds a committed repository of N
//! small files quickly (one `git fast-import` stream), and [`run`] measures
//! provider-level spawn+terminate in both workspace modes and an exec round
//! trip of `true`. The numbers are printed, never asserted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use godel_core::{
    Error, ExecRequest, Isolation, Result, RuntimeProvider, SnapshotInfo, SnapshotRequest,
    SnapshotTarget, SpawnSpec, WorkspaceMode,
};
use godel_sandbox::Isolator;

use crate::provider::{WorktreeConfig, WorktreeProvider};

fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "godel")
        .env("GIT_AUTHOR_EMAIL", "godel@localhost")
        .env("GIT_COMMITTER_NAME", "godel")
        .env("GIT_COMMITTER_EMAIL", "godel@localhost");
    c
}

fn check(what: &str, st: std::io::Result<std::process::ExitStatus>) -> Result<()> {
    match st {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Error::internal(format!("{what} failed: {s}"))),
        Err(e) => Err(Error::io(format!("cannot run {what}"), &e)),
    }
}

/// Create (or reuse an empty directory as) a git repository at `path` with
/// one commit on `main` holding `files` small files in nested directories
/// (`d<NN>/s<N>/f<N>.txt`, 100 per leaf directory), checked out.
pub fn generate_repo(path: &Path, files: usize) -> Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), &e))?;
    check(
        "git init",
        git_cmd(path)
            .args(["init", "--quiet", "--initial-branch=main"])
            .status(),
    )?;
    let mut stream = Vec::with_capacity(files * 96);
    let msg = format!("{files} generated files\n");
    stream.extend_from_slice(b"commit refs/heads/main\n");
    stream.extend_from_slice(b"committer godel <godel@localhost> 1700000000 +0000\n");
    stream.extend_from_slice(format!("data {}\n{msg}", msg.len()).as_bytes());
    for i in 0..files {
        let body = format!("file {i}\nsome content so the blob is not empty\n");
        let p = format!("d{:02}/s{}/f{i}.txt", i / 1000, (i / 100) % 10);
        stream.extend_from_slice(format!("M 100644 inline {p}\ndata {}\n", body.len()).as_bytes());
        stream.extend_from_slice(body.as_bytes());
        stream.push(b'\n');
    }
    stream.extend_from_slice(b"done\n");
    let mut child = git_cmd(path)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("cannot run git fast-import", &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&stream)
            .map_err(|e| Error::io("cannot feed git fast-import", &e))?;
    }
    check("git fast-import", child.wait())?;
    check(
        "git reset",
        git_cmd(path)
            .args(["reset", "--hard", "--quiet", "main"])
            .status(),
    )
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `$GODEL_HOME` to use (a scratch directory).
    pub home: PathBuf,
    /// Files in the generated repository.
    pub files: usize,
    /// Spawn+terminate cycles in `cow` mode.
    pub iterations: usize,
    /// Spawn+terminate cycles in `git-worktree` mode (each checks out the whole repo).
    pub worktree_iterations: usize,
    /// Exec round trips.
    pub execs: usize,
}

/// Percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).copied().map(ms).unwrap_or(0.0)
        };
        Percentiles {
            n: samples.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: samples.last().copied().map(ms).unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={:<4} p50={:>8.2} ms  p95={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
            self.n, self.p50, self.p95, self.p99, self.max
        )
    }
}

/// Results of [`run`].
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub files: usize,
    pub generate_ms: f64,
    /// First cow spawn of the commit (pays the shared checkout).
    pub cow_first_spawn_ms: f64,
    pub cow: Percentiles,
    /// The spawn half of `cow`.
    pub cow_spawn: Percentiles,
    pub git_worktree: Percentiles,
    /// The spawn half of `git_worktree`.
    pub git_worktree_spawn: Percentiles,
    pub exec_true: Percentiles,
    /// Snapshot of a cow workspace with one changed file.
    pub snapshot_ms: f64,
    /// First restore of that snapshot (builds its shared checkout) and a later one.
    pub restore_first_ms: f64,
    pub restore_ms: f64,
}

/// Generate a repository and measure spawn+terminate (both modes) and exec.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let repo = opts.home.join("bench-repo");
    let t = Instant::now();
    if !repo.join(".git").exists() {
        let (r, n) = (repo.clone(), opts.files);
        tokio::task::spawn_blocking(move || generate_repo(&r, n))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
    }
    let generate_ms = t.elapsed().as_secs_f64() * 1000.0;
    let host: Arc<dyn Isolator> = Arc::new(godel_sandbox::HostIsolator);
    let mut cfg = WorktreeConfig::new(opts.home.join("home"));
    cfg.host = host;
    let p = WorktreeProvider::new(cfg)?;
    let spec = |mode| SpawnSpec {
        repo: Some(repo.to_string_lossy().into_owned()),
        isolation: Isolation::None,
        workspace: mode,
        ..Default::default()
    };
    let mut report = BenchReport {
        files: opts.files,
        generate_ms,
        ..Default::default()
    };
    for mode in [WorkspaceMode::Cow, WorkspaceMode::GitWorktree] {
        let s = spec(mode);
        let mut samples = Vec::new();
        let mut spawns = Vec::new();
        let n = match mode {
            WorkspaceMode::Cow => opts.iterations,
            WorkspaceMode::GitWorktree => opts.worktree_iterations,
        };
        for i in 0..=n {
            let id = format!(
                "bench-{}-{i}",
                if mode == WorkspaceMode::Cow {
                    "cow"
                } else {
                    "wt"
                }
            );
            let t = Instant::now();
            p.spawn(&id, &s).await?;
            let spawned = t.elapsed();
            p.terminate(&id).await?;
            let d = t.elapsed();
            if i == 0 {
                // The first cycle imports the commit (and, for cow, builds the checkout).
                if mode == WorkspaceMode::Cow {
                    report.cow_first_spawn_ms = d.as_secs_f64() * 1000.0;
                }
                continue;
            }
            samples.push(d);
            spawns.push(spawned);
        }
        match mode {
            WorkspaceMode::Cow => {
                report.cow = Percentiles::of(samples);
                report.cow_spawn = Percentiles::of(spawns);
            }
            WorkspaceMode::GitWorktree => {
                report.git_worktree = Percentiles::of(samples);
                report.git_worktree_spawn = Percentiles::of(spawns);
            }
        }
    }
    p.spawn("bench-exec", &spec(WorkspaceMode::Cow)).await?;
    let mut samples = Vec::new();
    for _ in 0..opts.execs {
        let t = Instant::now();
        let out = p
            .exec_collect("bench-exec", ExecRequest::new(["true"]))
            .await?;
        samples.push(t.elapsed());
        if out.exit_code != 0 {
            return Err(Error::exec("`true` failed"));
        }
    }
    report.exec_true = Percentiles::of(samples);

    let ws = p.workspace_path("bench-exec")?;
    std::fs::write(ws.join("d00/s0/f0.txt"), "changed\n")
        .map_err(|e| Error::io("cannot change a file", &e))?;
    let target = SnapshotTarget {
        snapshot_id: "snap-bench".into(),
        dir: opts.home.join("snap-bench"),
    };
    let t = Instant::now();
    let art = p
        .snapshot("bench-exec", &SnapshotRequest::default(), &target)
        .await?;
    report.snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    let info = SnapshotInfo {
        id: target.snapshot_id.clone(),
        runtime_id: "bench-exec".into(),
        runtime: "worktree".into(),
        team: "bench".into(),
        created_at: chrono::Utc::now(),
        size_bytes: art.size_bytes,
        kind: art.kind,
        name: None,
        description: None,
        labels: Default::default(),
        dir: target.dir.clone(),
        data: art.data,
    };
    for (i, slot) in [&mut report.restore_first_ms, &mut report.restore_ms]
        .into_iter()
        .enumerate()
    {
        let id = format!("bench-restore-{i}");
        let t = Instant::now();
        p.restore(&id, &info, &spec(WorkspaceMode::Cow)).await?;
        *slot = t.elapsed().as_secs_f64() * 1000.0;
        p.terminate(&id).await?;
    }
    p.terminate("bench-exec").await?;
    Ok(report)
}
