//! `godel bench scale`: spawn N agents concurrently against a real daemon,
//! hold them all alive while a mixed API load runs, exec in every one,
//! terminate them all; time, errors, the daemon's RSS and CPU (sampled
//! through the run), per-agent overhead (host memory and, for microVMs, the
//! VMMs' total PSS). The baseline, measured in the same run, is N host
//! processes (`sleep`) started with the same concurrency.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::daemon::{Api, Daemon, proc_fd_count, proc_pss_bytes};
use crate::load::{DaemonOptions, LoadReport, Setup, mixed_load};
use crate::{LatencySummary, ms};

/// The `godel bench scale` flags.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub daemon: DaemonOptions,
    pub runtime: String,
    pub agents: usize,
    /// Spawns in flight at once.
    pub concurrency: usize,
    /// Mixed API load while all agents are alive.
    pub rate: f64,
    pub load_secs: f64,
    /// Give up spawning after this long (agents spawned by then are measured).
    pub spawn_timeout: Duration,
    /// A directory of built microVM images to link in (`$GODEL_HOME/images`).
    pub images: Option<std::path::PathBuf>,
}

/// One point of the scale curve: `live` agents after `at_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub live: usize,
    pub at_ms: f64,
    pub spawn_ms: f64,
}

/// Daemon samples over the run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DaemonUsage {
    pub rss_start_bytes: u64,
    pub rss_all_live_bytes: u64,
    pub rss_peak_bytes: u64,
    pub fds_all_live: usize,
    /// Daemon CPU, cores (1.0 = one core busy), per phase.
    pub cpu_spawn_cores: f64,
    pub cpu_load_cores: f64,
    pub cpu_idle_cores: f64,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub bench: &'static str,
    pub runtime: String,
    pub agents: usize,
    pub concurrency: usize,
    pub spawned: usize,
    pub spawn_errors: usize,
    pub spawn_error_samples: Vec<String>,
    pub spawn_total_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub spawn: LatencySummary,
    pub baseline: LatencySummary,
    pub baseline_is: String,
    pub baseline_total_ms: f64,
    pub live_listed: usize,
    pub exec_all_ms: f64,
    pub exec_ok: usize,
    pub exec_errors: usize,
    pub exec: LatencySummary,
    pub load: LoadReport,
    pub daemon: DaemonUsage,
    pub host_memory_per_agent_bytes: u64,
    pub daemon_rss_per_agent_bytes: u64,
    /// microVMs: sum of the VMM processes' PSS with all alive.
    pub vmm_pss_total_bytes: u64,
    pub terminate_all_ms: f64,
    pub terminate_errors: usize,
    pub curve: Vec<CurvePoint>,
    pub targets: Value,
}

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0)
        * 1024
}

/// Run the benchmark.
pub async fn run(o: &ScaleOptions, progress: &dyn Fn(&str)) -> Result<ScaleReport> {
    let mut s = Setup::start(&o.daemon, progress).await?;
    let spec = match o.runtime.as_str() {
        "worktree" => s.worktree_spec(),
        "microvm" => {
            link_images(&s.daemon, o.images.as_deref(), progress).await?;
            json!({"runtime": "microvm", "resources": {"cpu": "1", "memory": "128Mi"}})
        }
        r => {
            return Err(Error::invalid(format!(
                "bench scale --runtime {r:?}: use worktree or microvm"
            )));
        }
    };
    let pid = s
        .daemon
        .pid()
        .ok_or_else(|| Error::internal("daemon has no pid"))?;
    let mut usage = DaemonUsage {
        rss_start_bytes: s.daemon.rss_bytes(),
        ..Default::default()
    };
    // RSS sampler for the whole run.
    let peak = Arc::new(AtomicU64::new(usage.rss_start_bytes));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(crate::daemon::proc_rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mem0 = mem_available();

    progress(&format!(
        "spawning {} {} agents, {} at once",
        o.agents, o.runtime, o.concurrency
    ));
    let cpu0 = s.daemon.cpu_secs();
    let t0 = Instant::now();
    let (ids, lat, curve, errs) = spawn_all(&s, &spec, o, t0, progress).await;
    let spawn_total = t0.elapsed();
    usage.cpu_spawn_cores = (s.daemon.cpu_secs() - cpu0) / spawn_total.as_secs_f64().max(1e-9);
    let spawned = ids.len();
    progress(&format!(
        "{spawned} live after {:.1} s ({} errors)",
        spawn_total.as_secs_f64(),
        errs.len()
    ));

    // All alive: count them, measure memory.
    let mut api = s.api();
    let listed = api
        .ok(Method::GET, "/v1/runtimes", None)
        .await
        .map(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|r| r["state"] == "running").count())
                .unwrap_or(0)
        })
        .unwrap_or(0);
    // Idle CPU of the daemon with everything alive (2 s).
    let c = s.daemon.cpu_secs();
    tokio::time::sleep(Duration::from_secs(2)).await;
    usage.cpu_idle_cores = (s.daemon.cpu_secs() - c) / 2.0;
    usage.rss_all_live_bytes = s.daemon.rss_bytes();
    usage.fds_all_live = proc_fd_count(pid);
    let host_per_agent = mem0.saturating_sub(mem_available()) / spawned.max(1) as u64;
    let vmm_pss = if o.runtime == "microvm" {
        vmm_pss_total(&mut api, &ids).await
    } else {
        0
    };

    progress(&format!(
        "mixed API load at {} req/s for {} s with {spawned} agents alive",
        o.rate, o.load_secs
    ));
    let c = s.daemon.cpu_secs();
    let t = Instant::now();
    let load = mixed_load(&s.daemon.socket(), &ids, o.rate, o.load_secs).await;
    usage.cpu_load_cores = (s.daemon.cpu_secs() - c) / t.elapsed().as_secs_f64().max(1e-9);

    progress(&format!("exec `true` in all {spawned}"));
    let t = Instant::now();
    let (exec_lat, exec_errs) = for_all(&s, &ids, o.concurrency, |id| {
        (
            Method::POST,
            format!("/v1/runtimes/{id}/exec"),
            Some(json!({"cmd": ["true"]})),
        )
    })
    .await;
    let exec_all = t.elapsed();

    progress(&format!("terminating all {spawned}"));
    let t = Instant::now();
    let (_, term_errs) = for_all(&s, &ids, o.concurrency, |id| {
        (Method::DELETE, format!("/v1/runtimes/{id}"), None)
    })
    .await;
    let terminate_all = t.elapsed();
    // SIGTERM, so the daemon drains its warm pool (a killed one leaves it).
    s.daemon.stop().await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    usage.rss_peak_bytes = peak.load(Ordering::Relaxed);

    progress(&format!(
        "baseline: {spawned} host `sleep` processes, {} at once",
        o.concurrency
    ));
    let (base, base_total) = baseline(spawned.max(1), o.concurrency).await?;
    let spawn = LatencySummary::of(&lat);
    Ok(ScaleReport {
        bench: "scale",
        runtime: o.runtime.clone(),
        agents: o.agents,
        concurrency: o.concurrency,
        spawned,
        spawn_errors: errs.len(),
        spawn_error_samples: errs.into_iter().take(5).collect(),
        spawn_total_ms: ms(spawn_total),
        p50_ms: spawn.p50_ms,
        p95_ms: spawn.p95_ms,
        p99_ms: spawn.p99_ms,
        spawn,
        baseline: LatencySummary::of(&base),
        baseline_is:
            "host fork+exec of `sleep` with the same concurrency (no API, no workspace, no jail)"
                .into(),
        baseline_total_ms: ms(base_total),
        live_listed: listed,
        exec_all_ms: ms(exec_all),
        exec_ok: exec_lat.len(),
        exec_errors: exec_errs,
        exec: LatencySummary::of(&exec_lat),
        load,
        daemon_rss_per_agent_bytes: usage
            .rss_all_live_bytes
            .saturating_sub(usage.rss_start_bytes)
            / spawned.max(1) as u64,
        daemon: usage,
        host_memory_per_agent_bytes: host_per_agent,
        vmm_pss_total_bytes: vmm_pss,
        terminate_all_ms: ms(terminate_all),
        terminate_errors: term_errs,
        curve,
        targets: json!({"agents": 1000, "api_p95_ms": 50.0, "rate_per_s": 200.0, "errors": 0, "daemon_rss_mib": 300}),
    })
}

type Spawned = (Vec<String>, Vec<Duration>, Vec<CurvePoint>, Vec<String>);

/// Spawn `o.agents` with `o.concurrency` in flight; ids, latencies, the
/// curve and error messages.
async fn spawn_all(
    s: &Setup,
    spec: &Value,
    o: &ScaleOptions,
    t0: Instant,
    progress: &dyn Fn(&str),
) -> Spawned {
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let deadline = t0 + o.spawn_timeout;
    for _ in 0..o.agents {
        let (sem, tx, spec, sock) = (sem.clone(), tx.clone(), spec.clone(), s.daemon.socket());
        tokio::spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            if Instant::now() > deadline {
                let _ = tx.send((Err("spawn time limit reached".to_string()), Duration::ZERO));
                return;
            }
            let mut api = Api::new(&sock);
            let t = Instant::now();
            let r = api.ok(Method::POST, "/v1/runtimes", Some(&spec)).await;
            let took = t.elapsed();
            let r = match r {
                Ok(v) => v["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("no id in {v}")),
                Err(e) => Err(format!("{}: {}", e.code.as_str(), e.message)),
            };
            let _ = tx.send((r, took));
        });
    }
    drop(tx);
    let (mut ids, mut lat, mut curve, mut errs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_note = Instant::now();
    while let Some((r, took)) = rx.recv().await {
        match r {
            Ok(id) => {
                ids.push(id);
                lat.push(took);
                curve.push(CurvePoint {
                    live: ids.len(),
                    at_ms: ms(t0.elapsed()),
                    spawn_ms: ms(took),
                });
            }
            Err(e) => errs.push(e),
        }
        if last_note.elapsed() > Duration::from_secs(10) {
            last_note = Instant::now();
            progress(&format!(
                "{} live, {} errors, {:.0} s",
                ids.len(),
                errs.len(),
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    (ids, lat, curve, errs)
}

/// One request per id with `conc` in flight; latencies of the successes and
/// the error count.
async fn for_all(
    s: &Setup,
    ids: &[String],
    conc: usize,
    req: impl Fn(&str) -> (Method, String, Option<Value>),
) -> (Vec<Duration>, usize) {
    let sem = Arc::new(tokio::sync::Semaphore::new(conc.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let (m, p, b) = req(id);
        let (sem, sock) = (sem.clone(), s.daemon.socket());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            let mut api = Api::new(&sock);
            let t = Instant::now();
            let r = api.ok(m, &p, b.as_ref()).await;
            let ok = match &r {
                Ok(v) => v.get("exit_code").is_none_or(|c| c == 0),
                Err(_) => false,
            };
            ok.then(|| t.elapsed())
        });
    }
    let (mut lat, mut errs) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Some(d)) => lat.push(d),
            _ => errs += 1,
        }
    }
    (lat, errs)
}

/// Baseline: `n` host `sleep 600` processes started with `conc` in flight,
/// then killed; per-process start latency (fork+exec until spawned) and
/// the total.
async fn baseline(n: usize, conc: usize) -> Result<(Vec<Duration>, Duration)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(conc.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for _ in 0..n {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.ok();
            let t = Instant::now();
            let child = tokio::process::Command::new("sleep")
                .arg("600")
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::io("spawn sleep", &e))?;
            Ok::<_, Error>((t.elapsed(), child))
        });
    }
    let mut lat = Vec::with_capacity(n);
    let mut children = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        let (d, c) = r.map_err(|e| Error::internal(e.to_string()))??;
        lat.push(d);
        children.push(c);
    }
    let total = t0.elapsed();
    for mut c in children {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    Ok((lat, total))
}

/// Sum of the VMMs' PSS (status answers each VM's pid).
async fn vmm_pss_total(api: &mut Api, ids: &[String]) -> u64 {
    let mut total = 0;
    for id in ids {
        if let Ok(v) = api
            .ok(Method::GET, &format!("/v1/runtimes/{id}"), None)
            .await
            && let Some(pid) = v["pid"].as_u64()
        {
            total += proc_pss_bytes(pid as u32);
        }
    }
    total
}

/// Make microVM images available to the scratch daemon: link `images` (or
/// `~/.godel/images`) in, else build them with `godel image build`.
async fn link_images(d: &Daemon, images: Option<&Path>, progress: &dyn Fn(&str)) -> Result<()> {
    let default = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".godel/images"))
        .filter(|p| p.join("manifest.json").exists() || p.is_dir());
    let src = images.map(Path::to_path_buf).or(default);
    let dst = d.home.join("images");
    if let Some(src) = src.filter(|p| p.is_dir()) {
        // The link lives in the daemon's home: a relative path would not resolve.
        let src = std::fs::canonicalize(&src).unwrap_or(src);
        progress(&format!("linking microVM images from {}", src.display()));
        let _ = std::fs::remove_dir_all(&dst);
        std::os::unix::fs::symlink(&src, &dst).map_err(|e| Error::io("link images", &e))?;
        return Ok(());
    }
    progress("building the microVM image (godel image build)");
    let st = tokio::process::Command::new(&d.bin)
        .args(["image", "build"])
        .env("GODEL_HOME", &d.home)
        .status()
        .await
        .map_err(|e| Error::io("run godel image build", &e))?;
    if !st.success() {
        return Err(Error::unavailable("godel image build failed"));
    }
    Ok(())
}

impl ScaleReport {
    /// Human-readable summary.
    pub fn print(&self) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "godel bench scale: {} × {} ({} at once)",
            self.agents, self.runtime, self.concurrency
        );
        println!(
            "spawned {} in {:.1} s, {} errors{}",
            self.spawned,
            self.spawn_total_ms / 1000.0,
            self.spawn_errors,
            self.spawn_error_samples
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        println!("{}", self.spawn.line("spawn (API, concurrent)"));
        println!(
            "{}",
            self.baseline.line("baseline: host fork+exec of sleep")
        );
        println!("listed running: {}", self.live_listed);
        println!(
            "API at {} req/s with all alive: {}  errors {}",
            self.load.rate_per_s, self.load.all, self.load.errors
        );
        println!("{}", self.load.baseline.line("  baseline GET /v1/health"));
        println!(
            "exec in all: {:.1} s, {} ok, {} errors; {}",
            self.exec_all_ms / 1000.0,
            self.exec_ok,
            self.exec_errors,
            self.exec
        );
        println!(
            "daemon RSS: start {:.1} MiB, all live {:.1} MiB, peak {:.1} MiB; fds {}; CPU spawn {:.2} / load {:.2} / idle {:.3} cores",
            mib(self.daemon.rss_start_bytes),
            mib(self.daemon.rss_all_live_bytes),
            mib(self.daemon.rss_peak_bytes),
            self.daemon.fds_all_live,
            self.daemon.cpu_spawn_cores,
            self.daemon.cpu_load_cores,
            self.daemon.cpu_idle_cores
        );
        println!(
            "per agent: host memory {:.2} MiB, daemon RSS {:.1} KiB{}",
            mib(self.host_memory_per_agent_bytes),
            self.daemon_rss_per_agent_bytes as f64 / 1024.0,
            if self.vmm_pss_total_bytes > 0 {
                format!("; VMMs' total PSS {:.0} MiB", mib(self.vmm_pss_total_bytes))
            } else {
                String::new()
            }
        );
        println!(
            "terminate all: {:.1} s, {} errors",
            self.terminate_all_ms / 1000.0,
            self.terminate_errors
        );
    }
}
