//! `godel bench spawn`: spawn, exec and terminate worktree runtimes through
//! the real API (an in-process daemon on a scratch `$GODEL_HOME` and Unix
//! socket) on a generated repository, next to a plain `git worktree add` +
//! `sh -c true` baseline measured in the same run. Prints P50/P95/P99.
//!
//! The binary hands in what lives in it: how runtimes are registered and
//! the CLI's HTTP client (`api(socket, method, path, body)`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use godel_control::{Control, Settings, event_channel};
use godel_core::{
    Error, EventSink, ExecOutput, ExecRequest, Isolation, Result, SandboxInfo, SpawnSpec,
    WorkspaceMode,
};
use http::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::LatencySummary;

/// What to run (the `godel bench spawn` flags).
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    pub runtime: String,
    /// Files in the generated repository.
    pub files: usize,
    /// Spawn/terminate cycles.
    pub iterations: usize,
    /// Exec round trips.
    pub execs: usize,
    /// Baseline runs (`git worktree add` + `sh -c true` + remove).
    pub baseline: usize,
    /// `sandbox` or `none`.
    pub isolation: String,
    /// `cow` or `git-worktree`.
    pub workspace: String,
    /// Forks of one snapshot made in one `POST /v1/snapshots/{id}/fork`
    /// (0 skips the fork measurement).
    pub forks: usize,
}

/// `godel fork SNAP -n N` on a worktree sandbox, measured once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForkReport {
    pub forks: usize,
    pub snapshot_ms: f64,
    pub total_ms: f64,
    pub per_fork_ms: f64,
    /// Mean of the forks' cgroup memory while idle (after the fork call returned).
    pub idle_memory_bytes_per_fork: u64,
    /// Time to terminate all of them, one request each.
    pub terminate_all_ms: f64,
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct SpawnReport {
    pub opts: SpawnOptions,
    pub generate_ms: f64,
    pub first_spawn_ms: f64,
    pub spawn: LatencySummary,
    pub exec: LatencySummary,
    pub terminate: LatencySummary,
    pub baseline: LatencySummary,
    pub fork: Option<ForkReport>,
}

/// Run the benchmark. `register` registers the runtimes on the in-process
/// daemon; `api` sends one JSON request to the daemon's socket.
pub async fn run(
    opts: &SpawnOptions,
    register: impl AsyncFnOnce(&Control, &Path, Isolation, EventSink),
    api: impl AsyncFn(&Path, Method, &str, Option<Value>) -> Result<Value>,
    progress: &dyn Fn(&str),
) -> Result<SpawnReport> {
    if opts.runtime != "worktree" {
        return Err(Error::invalid(format!(
            "bench spawn --runtime {:?}: only worktree spawns through this benchmark; \
             `godel bench microvm`, `godel bench sandbox` and `godel bench kube` measure the others",
            opts.runtime
        )));
    }
    let isolation = match opts.isolation.as_str() {
        "sandbox" => Isolation::Sandbox,
        "none" => Isolation::None,
        o => {
            return Err(Error::invalid(format!(
                "--isolation {o:?}: use sandbox or none"
            )));
        }
    };
    let workspace = match opts.workspace.as_str() {
        "cow" => WorkspaceMode::Cow,
        "git-worktree" => WorkspaceMode::GitWorktree,
        o => {
            return Err(Error::invalid(format!(
                "--workspace {o:?}: use cow or git-worktree"
            )));
        }
    };
    let scratch = tempfile::Builder::new()
        .prefix("godel-bench-")
        .tempdir()
        .map_err(|e| Error::io("create scratch dir", &e))?;
    let repo = scratch.path().join("repo");
    progress(&format!("generating a {}-file repository", opts.files));
    let t = Instant::now();
    {
        let (r, n) = (repo.clone(), opts.files);
        tokio::task::spawn_blocking(move || generate_repo(&r, n))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
    }
    let generate_ms = t.elapsed().as_secs_f64() * 1000.0;

    // An in-process daemon serving the real API on a scratch socket.
    let home = scratch.path().join("home");
    let control = Control::open(&home, Settings::default())?;
    let (sink, rx) = event_channel();
    control.attach_event_receiver(rx);
    register(&control, &home, isolation, sink).await;
    let sock = home.join("godel.sock");
    let listener = godel_api::bind_unix(&sock).map_err(|e| Error::io("bind bench socket", &e))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(godel_api::serve_unix(
        listener,
        control.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let spec = serde_json::to_value(SpawnSpec {
        runtime: Some("worktree".into()),
        repo: Some(repo.display().to_string()),
        isolation,
        workspace,
        ..Default::default()
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let spawn_one = async || -> Result<SandboxInfo> {
        call(
            &api,
            &sock,
            Method::POST,
            "/v1/runtimes",
            Some(spec.clone()),
        )
        .await
    };
    let terminate = async |id: &str| -> Result<Value> {
        call(
            &api,
            &sock,
            Method::DELETE,
            &format!("/v1/runtimes/{id}"),
            None,
        )
        .await
    };

    progress("first spawn (builds the shared checkout of the commit)");
    let t = Instant::now();
    let first = spawn_one().await?;
    let first_spawn_ms = t.elapsed().as_secs_f64() * 1000.0;

    progress(&format!("{} exec round trips of `true`", opts.execs));
    let exec_req = serde_json::to_value(ExecRequest::new(["true"]))
        .map_err(|e| Error::internal(e.to_string()))?;
    let exec_path = format!("/v1/runtimes/{}/exec", first.id);
    let mut exec = Vec::new();
    for _ in 0..opts.execs {
        let t = Instant::now();
        let out: ExecOutput = call(
            &api,
            &sock,
            Method::POST,
            &exec_path,
            Some(exec_req.clone()),
        )
        .await?;
        exec.push(t.elapsed());
        if out.exit_code != 0 {
            return Err(Error::exec(format!(
                "`true` exited {} in the benchmark runtime",
                out.exit_code
            )));
        }
    }
    let fork = if opts.forks > 0 {
        progress(&format!("snapshot, then fork -n {}", opts.forks));
        Some(fork_runs(&api, &sock, &first.id, opts.forks).await?)
    } else {
        None
    };
    terminate(&first.id).await?;

    progress(&format!(
        "{} spawn/terminate cycles through the API",
        opts.iterations
    ));
    let (mut spawn, mut term) = (Vec::new(), Vec::new());
    for _ in 0..opts.iterations {
        let t = Instant::now();
        let info = spawn_one().await?;
        spawn.push(t.elapsed());
        let t = Instant::now();
        terminate(&info.id).await?;
        term.push(t.elapsed());
    }
    let _ = stop_tx.send(());
    let _ = server.await;

    progress(&format!(
        "{} baseline runs of `git worktree add` + `sh -c true`",
        opts.baseline
    ));
    let baseline = baseline_runs(&repo, scratch.path(), opts.baseline).await?;
    drop(control);
    Ok(SpawnReport {
        opts: opts.clone(),
        generate_ms,
        first_spawn_ms,
        spawn: LatencySummary::of(&spawn),
        exec: LatencySummary::of(&exec),
        terminate: LatencySummary::of(&term),
        baseline: LatencySummary::of(&baseline),
        fork,
    })
}

/// Snapshot `id`, fork it `n` times in one request, read each fork's idle
/// memory, terminate them all.
async fn fork_runs(
    api: &impl AsyncFn(&Path, Method, &str, Option<Value>) -> Result<Value>,
    sock: &Path,
    id: &str,
    n: usize,
) -> Result<ForkReport> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let snap: Value = call(
        api,
        sock,
        Method::POST,
        &format!("/v1/runtimes/{id}/snapshots"),
        Some(json!({})),
    )
    .await?;
    let snapshot_ms = ms(t);
    let snap_id = snap["id"]
        .as_str()
        .ok_or_else(|| Error::internal("snapshot without an id"))?
        .to_string();
    let t = Instant::now();
    let forks: Vec<SandboxInfo> = call(
        api,
        sock,
        Method::POST,
        &format!("/v1/snapshots/{snap_id}/fork"),
        Some(json!({ "count": n })),
    )
    .await?;
    let total_ms = ms(t);
    let mut mem = 0u64;
    for f in &forks {
        let v: Value = call(
            api,
            sock,
            Method::GET,
            &format!("/v1/runtimes/{}", f.id),
            None,
        )
        .await?;
        mem += v
            .pointer("/usage/memory_bytes")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }
    let t = Instant::now();
    for f in &forks {
        let _: Value = call(
            api,
            sock,
            Method::DELETE,
            &format!("/v1/runtimes/{}", f.id),
            None,
        )
        .await?;
    }
    let terminate_all_ms = ms(t);
    let _: Value = call(
        api,
        sock,
        Method::DELETE,
        &format!("/v1/snapshots/{snap_id}"),
        None,
    )
    .await
    .unwrap_or(Value::Null);
    let count = forks.len().max(1);
    Ok(ForkReport {
        forks: forks.len(),
        snapshot_ms,
        total_ms,
        per_fork_ms: total_ms / count as f64,
        idle_memory_bytes_per_fork: mem / count as u64,
        terminate_all_ms,
    })
}

/// One request through `api`, its answer decoded as `T`.
async fn call<T: DeserializeOwned>(
    api: &impl AsyncFn(&Path, Method, &str, Option<Value>) -> Result<Value>,
    sock: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<T> {
    let v = api(sock, method, path, body).await?;
    serde_json::from_value(v).map_err(|e| Error::internal(format!("{path}: {e}")))
}

impl SpawnReport {
    fn speedup(&self) -> f64 {
        if self.spawn.p95_ms > 0.0 {
            self.baseline.p95_ms / self.spawn.p95_ms
        } else {
            0.0
        }
    }

    /// The report as JSON: `p50_ms`/`p95_ms`/`p99_ms` at the top (and
    /// `godel`) are the spawn's, `baseline` is `git worktree add` + `sh -c
    /// true` from the same run.
    pub fn to_json(&self) -> Value {
        let (a, spawn, exec) = (&self.opts, &self.spawn, &self.exec);
        let speedup = self.speedup();
        json!({
                "bench": "spawn",
                "runtime": "worktree",
                "p50_ms": spawn.p50_ms,
                "p95_ms": spawn.p95_ms,
                "p99_ms": spawn.p99_ms,
                "godel": spawn,
                "baseline_is": "git worktree add + sh -c true on the host",
                "workspace": a.workspace,
                "isolation": a.isolation,
                "files": a.files,
                "generate_ms": self.generate_ms,
                "first_spawn_ms": self.first_spawn_ms,
                "spawn": spawn,
                "exec": exec,
                "terminate": self.terminate,
                "baseline": self.baseline,
                "baseline_p95_over_spawn_p95": speedup,
                "fork": self.fork,
                "targets": {"spawn_p95_ms": 10.0, "speedup_min": 100.0, "exec_p50_ms": 1.5, "phase_gate_spawn_p95_ms": 100.0},
                "met": {
                    "spawn_p95": spawn.p95_ms < 10.0,
                    "speedup": speedup >= 100.0,
                    "exec_p50": exec.p50_ms < 1.5,
                    "phase_gate_spawn_p95": spawn.p95_ms < 100.0,
                },
        })
    }

    /// Print the report: a table, or JSON with `json`.
    pub fn print(&self, json: bool) {
        let (a, spawn, exec) = (&self.opts, &self.spawn, &self.exec);
        let speedup = self.speedup();
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
            );
            return;
        }
        println!(
            "godel bench spawn: worktree runtime ({} workspace, isolation {}), {}-file repository",
            a.workspace, a.isolation, a.files
        );
        println!(
            "first spawn of the commit (builds the shared checkout): {:.1} ms",
            self.first_spawn_ms
        );
        println!("{}", spawn.line("spawn (API, POST /v1/runtimes)"));
        println!("{}", exec.line("exec `true` (API, buffered)"));
        println!("{}", self.terminate.line("terminate (API, DELETE)"));
        println!(
            "{}",
            self.baseline
                .line("baseline: git worktree add + sh -c true")
        );
        println!(
            "baseline p95 / spawn p95 = {speedup:.1}x   (targets: spawn p95 < 10 ms, >= 100x, exec p50 < 1.5 ms)"
        );
        if let Some(f) = &self.fork {
            println!(
                "fork -n {}: {:.1} ms total, {:.2} ms per fork, {:.1} MiB idle memory per fork (snapshot {:.1} ms, terminate all {:.1} ms)",
                f.forks,
                f.total_ms,
                f.per_fork_ms,
                f.idle_memory_bytes_per_fork as f64 / (1 << 20) as f64,
                f.snapshot_ms,
                f.terminate_all_ms
            );
        }
    }
}

async fn baseline_runs(repo: &Path, scratch: &Path, n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for i in 0..n {
        let wt = scratch.join(format!("baseline-wt-{i}"));
        let t = Instant::now();
        run_ok(
            tokio::process::Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["worktree", "add", "--detach", "-q"])
                .arg(&wt)
                .arg("HEAD"),
        )
        .await?;
        run_ok(
            tokio::process::Command::new("sh")
                .args(["-c", "true"])
                .current_dir(&wt),
        )
        .await?;
        out.push(t.elapsed());
        run_ok(
            tokio::process::Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["worktree", "remove", "--force"])
                .arg(&wt),
        )
        .await?;
    }
    Ok(out)
}

async fn run_ok(cmd: &mut tokio::process::Command) -> Result<()> {
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::io("run baseline command", &e))?;
    if !out.status.success() {
        return Err(Error::exec(format!(
            "baseline command failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

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
pub(crate) fn generate_repo(path: &Path, files: usize) -> Result<()> {
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
