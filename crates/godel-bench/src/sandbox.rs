//! `godel bench sandbox`: in one run, interleaved so machine noise hits all
//! candidates alike, the latency of
//! - spawning a sandbox (create → ready; destroy is not counted),
//! - `true` executed in a live sandbox (launch → exit observed),
//! - `true` executed with no isolation ([`HostIsolator`]),
//! - `bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-all
//!   --die-with-parent --new-session true` (a new bubblewrap sandbox per
//!   command, which is what bwrap offers), when `bwrap` is installed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use godel_sandbox::{
    HostIsolator, Isolator, Jail, JailConfig, JailLimits, NamespaceIsolator, NamespaceOptions,
    ProcessSpec,
};

use crate::LatencySummary;

/// What `run_benchmark` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub iterations: usize,
    pub sandbox_spawn: LatencySummary,
    pub sandbox_exec_true: LatencySummary,
    pub unsandboxed_exec_true: LatencySummary,
    /// `None` when `bwrap` is not installed.
    pub bwrap_true: Option<LatencySummary>,
    /// Sandboxed exec P50 minus unsandboxed exec P50 (target: ≤ 1.5 ms).
    pub exec_overhead_p50_ms: f64,
    pub cgroup_version: Option<String>,
}

async fn run_true(sb: &dyn Jail) -> Result<Duration> {
    let t = Instant::now();
    let mut p = sb
        .launch(ProcessSpec {
            argv: vec!["true".into()],
            ..Default::default()
        })
        .await?;
    let mut sink = Vec::new();
    let _ = p.stdout.read_to_end(&mut sink).await;
    let _ = p.stderr.read_to_end(&mut sink).await;
    let st = p.exit.await.map_err(|e| Error::io("wait for true", &e))?;
    if st.code != 0 {
        return Err(Error::exec(format!("true exited with {}", st.code)));
    }
    Ok(t.elapsed())
}

async fn run_bwrap() -> Option<Duration> {
    let t = Instant::now();
    let st = tokio::process::Command::new("bwrap")
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "true",
        ])
        .status()
        .await
        .ok()?;
    st.success().then(|| t.elapsed())
}

fn config(root: &std::path::Path, id: &str) -> Result<JailConfig> {
    let workspace = root.join(id).join("ws");
    let state_dir = root.join(id).join("state");
    std::fs::create_dir_all(&workspace).map_err(|e| Error::io("bench workspace", &e))?;
    Ok(JailConfig {
        id: id.to_string(),
        workspace,
        state_dir,
        limits: JailLimits::default(),
        network: Default::default(),
        env: Default::default(),
    })
}

/// Run the benchmark (`iterations` execs of each kind; spawns are capped at 50).
pub async fn run_benchmark(iterations: usize) -> Result<BenchReport> {
    let iterations = iterations.max(1);
    let iso = Arc::new(NamespaceIsolator::new(NamespaceOptions::default()));
    let avail = iso.available().await;
    if !avail.available {
        return Err(Error::unavailable(avail.reason));
    }
    let root = std::env::temp_dir().join(format!("godel-sandbox-bench-{}", std::process::id()));
    let result = bench_inner(&iso, &root, iterations).await;
    let _ = std::fs::remove_dir_all(&root);
    let mut report = result?;
    report.cgroup_version = avail.details.get("cgroup_version").cloned();
    Ok(report)
}

async fn bench_inner(
    iso: &NamespaceIsolator,
    root: &std::path::Path,
    iterations: usize,
) -> Result<BenchReport> {
    let has_bwrap = tokio::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    // Spawn latency.
    let mut spawn = Vec::new();
    for i in 0..iterations.min(50) {
        let cfg = config(root, &format!("bench-spawn-{i}"))?;
        let t = Instant::now();
        let sb = iso.create(cfg).await?;
        spawn.push(t.elapsed());
        sb.destroy().await?;
    }
    // Exec latency, interleaved.
    let sb = iso.create(config(root, "bench-exec")?).await?;
    let host = HostIsolator.create(config(root, "bench-host")?).await?;
    // Warm up page cache and code paths.
    for _ in 0..3 {
        run_true(&*sb).await?;
        run_true(&*host).await?;
    }
    let (mut sx, mut hx, mut bx) = (Vec::new(), Vec::new(), Vec::new());
    let mut outcome = Ok(());
    for _ in 0..iterations {
        match run_true(&*host).await {
            Ok(v) => hx.push(v),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        match run_true(&*sb).await {
            Ok(v) => sx.push(v),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        if has_bwrap && let Some(v) = run_bwrap().await {
            bx.push(v);
        }
    }
    sb.destroy().await?;
    outcome?;
    let sandbox_exec_true = LatencySummary::of(&sx);
    let unsandboxed_exec_true = LatencySummary::of(&hx);
    Ok(BenchReport {
        iterations,
        exec_overhead_p50_ms: sandbox_exec_true.p50_ms - unsandboxed_exec_true.p50_ms,
        sandbox_spawn: LatencySummary::of(&spawn),
        sandbox_exec_true,
        unsandboxed_exec_true,
        bwrap_true: has_bwrap.then(|| LatencySummary::of(&bx)),
        cgroup_version: None,
    })
}
