//! `godel bench spawn`: spawn, exec and terminate worktree runtimes through
//! the real API (an in-process daemon on a scratch `$GODEL_HOME` and Unix
//! socket) on a generated repository, next to a plain `git worktree add` +
//! `sh -c true` baseline measured in the same run. Prints P50/P95/P99.

use std::path::Path;
use std::time::{Duration, Instant};

use godel_control::{Control, Settings, event_channel};
use godel_core::{
    Error, ExecOutput, ExecRequest, Isolation, Result, RuntimeInfo, SpawnSpec, WorkspaceMode,
};
use http::Method;
use serde::Serialize;
use serde_json::json;

use crate::Ctx;
use crate::cli::{BenchCmd, BenchSpawnArgs};
use crate::client::Client;
use crate::runtimes::{RuntimeOptions, register_all};

/// Percentiles of one measurement, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let at = |q: f64| {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest-rank percentile.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            ms(v[rank - 1])
        };
        Stats {
            n: v.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            min_ms: v.first().copied().map(ms).unwrap_or(0.0),
            max_ms: v.last().copied().map(ms).unwrap_or(0.0),
        }
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<40} n={:<4} p50 {:>9.2} ms   p95 {:>9.2} ms   p99 {:>9.2} ms   max {:>9.2} ms",
            self.n, self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )
    }
}

pub async fn run(ctx: &Ctx, cmd: BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Spawn(a) => spawn_bench(ctx, a).await,
        BenchCmd::Sandbox { iterations } => {
            progress(
                ctx,
                &format!("{iterations} iterations: sandbox vs bwrap vs no isolation"),
            );
            let r = godel_sandbox::run_benchmark(iterations).await?;
            crate::output::json(&r);
            Ok(0)
        }
        BenchCmd::Microvm {
            samples,
            forks,
            idle,
        } => {
            let mut o = godel_microvm::BenchOptions::new(&ctx.home);
            o.samples = samples;
            o.forks = forks;
            o.idle_target = idle;
            let json = ctx.json;
            let r = godel_microvm::run_benchmark(o, &move |m: &str| {
                if !json {
                    eprintln!("… {m}");
                }
            })
            .await?;
            crate::output::json(&r);
            Ok(0)
        }
        BenchCmd::Kube { pods, concurrency } => {
            progress(
                ctx,
                &format!(
                    "{pods} pods, {concurrency} at once, against the in-repo fake API server (measures godel's own overhead)"
                ),
            );
            let r = godel_kube::bench::run_benchmark(pods, concurrency).await?;
            crate::output::json(&r);
            Ok(0)
        }
    }
}

fn progress(ctx: &Ctx, msg: &str) {
    if !ctx.json {
        eprintln!("… {msg}");
    }
}

async fn spawn_bench(ctx: &Ctx, a: BenchSpawnArgs) -> Result<i32> {
    if a.runtime != "worktree" {
        return Err(Error::invalid(format!(
            "bench spawn supports --runtime worktree (got {:?})",
            a.runtime
        )));
    }
    let isolation = match a.isolation.as_str() {
        "sandbox" => Isolation::Sandbox,
        "none" => Isolation::None,
        o => {
            return Err(Error::invalid(format!(
                "--isolation {o:?}: use sandbox or none"
            )));
        }
    };
    let workspace = match a.workspace.as_str() {
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
    progress(ctx, &format!("generating a {}-file repository", a.files));
    let t = Instant::now();
    {
        let (r, n) = (repo.clone(), a.files);
        tokio::task::spawn_blocking(move || godel_worktree::generate_repo(&r, n))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
    }
    let generate_ms = t.elapsed().as_secs_f64() * 1000.0;

    // An in-process daemon serving the real API on a scratch socket.
    let home = scratch.path().join("home");
    let control = Control::open(&home, Settings::default())?;
    let (sink, rx) = event_channel();
    control.attach_event_receiver(rx);
    register_all(
        &control,
        &home,
        &RuntimeOptions {
            isolation,
            ..Default::default()
        },
        sink,
    )
    .await;
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
    let client = Client::new(None, None, sock)?;
    let spec = SpawnSpec {
        runtime: Some("worktree".into()),
        repo: Some(repo.display().to_string()),
        isolation,
        workspace,
        ..Default::default()
    };

    progress(
        ctx,
        "first spawn (builds the shared checkout of the commit)",
    );
    let t = Instant::now();
    let first: RuntimeInfo = client
        .json(Method::POST, "/v1/runtimes", Some(&spec))
        .await?;
    let first_spawn_ms = t.elapsed().as_secs_f64() * 1000.0;

    progress(ctx, &format!("{} exec round trips of `true`", a.execs));
    let exec_req = ExecRequest::new(["true"]);
    let exec_path = format!("/v1/runtimes/{}/exec", first.id);
    let mut exec = Vec::new();
    for _ in 0..a.execs {
        let t = Instant::now();
        let out: ExecOutput = client
            .json(Method::POST, &exec_path, Some(&exec_req))
            .await?;
        exec.push(t.elapsed());
        if out.exit_code != 0 {
            return Err(Error::exec(format!(
                "`true` exited {} in the benchmark runtime",
                out.exit_code
            )));
        }
    }
    let _: RuntimeInfo = client
        .json(
            Method::DELETE,
            &format!("/v1/runtimes/{}", first.id),
            None::<&()>,
        )
        .await?;

    progress(
        ctx,
        &format!("{} spawn/terminate cycles through the API", a.iterations),
    );
    let (mut spawn, mut term) = (Vec::new(), Vec::new());
    for _ in 0..a.iterations {
        let t = Instant::now();
        let info: RuntimeInfo = client
            .json(Method::POST, "/v1/runtimes", Some(&spec))
            .await?;
        spawn.push(t.elapsed());
        let t = Instant::now();
        let _: RuntimeInfo = client
            .json(
                Method::DELETE,
                &format!("/v1/runtimes/{}", info.id),
                None::<&()>,
            )
            .await?;
        term.push(t.elapsed());
    }
    let _ = stop_tx.send(());
    let _ = server.await;

    progress(
        ctx,
        &format!(
            "{} baseline runs of `git worktree add` + `sh -c true`",
            a.baseline
        ),
    );
    let baseline = baseline_runs(&repo, scratch.path(), a.baseline).await?;

    let spawn = Stats::of(spawn);
    let exec = Stats::of(exec);
    let terminate = Stats::of(term);
    let baseline = Stats::of(baseline);
    let speedup = if spawn.p95_ms > 0.0 {
        baseline.p95_ms / spawn.p95_ms
    } else {
        0.0
    };
    let report = json!({
        "runtime": "worktree",
        "workspace": a.workspace,
        "isolation": a.isolation,
        "files": a.files,
        "generate_ms": generate_ms,
        "first_spawn_ms": first_spawn_ms,
        "spawn": spawn,
        "exec": exec,
        "terminate": terminate,
        "baseline": baseline,
        "baseline_p95_over_spawn_p95": speedup,
        "targets": {"spawn_p95_ms": 20.0, "speedup_min": 10.0, "exec_p50_ms": 3.0},
        "met": {
            "spawn_p95": spawn.p95_ms < 20.0,
            "speedup": speedup >= 10.0,
            "exec_p50": exec.p50_ms < 3.0,
        },
    });
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "godel bench spawn: worktree runtime ({} workspace, isolation {}), {}-file repository",
            a.workspace, a.isolation, a.files
        );
        println!("first spawn of the commit (builds the shared checkout): {first_spawn_ms:.1} ms");
        println!("{}", spawn.line("spawn (API, POST /v1/runtimes)"));
        println!("{}", exec.line("exec `true` (API, buffered)"));
        println!("{}", terminate.line("terminate (API, DELETE)"));
        println!(
            "{}",
            baseline.line("baseline: git worktree add + sh -c true")
        );
        println!(
            "baseline p95 / spawn p95 = {speedup:.1}x   (targets: spawn p95 < 20 ms, >= 10x, exec p50 < 3 ms)"
        );
    }
    drop(control);
    Ok(0)
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
