//! `godel bench sandbox`: in one run, interleaved so machine noise hits all
//! candidates alike, the latency of
//! - creating a sandbox from the warm pool (create → ready: a claim of a jail
//!   made ahead; the pool is topped up, untimed, before each one),
//! - creating a sandbox cold (no pool: slot, cgroups, init, namespaces, mounts),
//! - `true` executed in a live sandbox (launch → exit observed),
//! - `true` executed with no isolation ([`HostIsolator`]),
//! - `bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-all
//!   --die-with-parent --new-session true` (a new bubblewrap sandbox per
//!   command: create + run + destroy), when `bwrap` is installed,
//! - `crun run` of `true` in a bundle whose read-only root holds `/usr` and
//!   `/etc` bound read-only (godel's view), with crun's default spec
//!   otherwise: pid, mount, IPC, UTS and network namespaces, cgroups, `/proc`,
//!   `/dev`, `/sys` (create + start + wait + delete), when `crun` is installed.
//!
//! Destroying a sandbox is not counted in godel's create figures.

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
    /// Create with the default warm pool (a claim).
    pub sandbox_spawn: LatencySummary,
    /// Create without a pool.
    pub sandbox_create_cold: LatencySummary,
    /// `crun run` of `true`; `None` when crun is not installed.
    #[serde(default)]
    pub crun_true: Option<LatencySummary>,
    /// Warm create P50 over bwrap's P50 (target ≤ 2).
    #[serde(default)]
    pub spawn_p50_over_bwrap_p50: Option<f64>,
    /// Warm create P50 over crun's P50 (target ≤ 2).
    #[serde(default)]
    pub spawn_p50_over_crun_p50: Option<f64>,
    /// Cold create P50 over bwrap's P50.
    #[serde(default)]
    pub cold_p50_over_bwrap_p50: Option<f64>,
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

async fn run_crun(bundle: &std::path::Path, id: &str) -> Option<Duration> {
    let t = Instant::now();
    let mut cmd = tokio::process::Command::new("crun");
    cmd.arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(std::process::Stdio::null());
    hide_hybrid_cgroup2(&mut cmd);
    let st = cmd.status().await.ok()?;
    st.success().then(|| t.elapsed())
}

/// crun refuses hosts whose cgroup v2 mount in a hybrid layout holds a
/// controller (Debian's v1 hosts with `hugetlb` there): run it in a private
/// mount namespace without `/sys/fs/cgroup/unified`, so it uses v1 like
/// godel does. Costs an `unshare` and two mount calls before the exec.
#[allow(unsafe_code)]
fn hide_hybrid_cgroup2(cmd: &mut tokio::process::Command) {
    if !std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        return;
    }
    // SAFETY: between fork and exec the closure makes only raw syscalls
    // (unshare, mount, umount2) on static C strings; it allocates nothing
    // and takes no lock, so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
            Ok(())
        });
    }
}

/// A crun bundle running `true` with the host's `/` as a read-only root.
async fn crun_bundle(root: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = root.join("crun-bundle");
    std::fs::create_dir_all(&dir).ok()?;
    let st = tokio::process::Command::new("crun")
        .arg("spec")
        .current_dir(&dir)
        .output()
        .await
        .ok()?;
    if !st.status.success() {
        return None;
    }
    // A root like godel's: /usr and /etc bound read-only, the /bin-style
    // symlinks of a merged-/usr host (crun cannot pivot into the host's `/`).
    let rootfs = dir.join("rootfs");
    for d in ["usr", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).ok()?;
    }
    for l in ["bin", "lib", "lib64", "sbin"] {
        let host = std::path::Path::new("/").join(l);
        if let Ok(to) = std::fs::read_link(&host) {
            let _ = std::os::unix::fs::symlink(to, rootfs.join(l));
        }
    }
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    spec["root"] = serde_json::json!({"path": "rootfs", "readonly": true});
    let mounts = spec["mounts"].as_array_mut()?;
    for d in ["/usr", "/etc"] {
        mounts.push(serde_json::json!({
            "destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]
        }));
    }
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&path, serde_json::to_vec(&spec).ok()?).ok()?;
    Some(dir)
}

fn ratio(a: &LatencySummary, b: Option<&LatencySummary>) -> Option<f64> {
    b.filter(|b| b.p50_ms > 0.0).map(|b| a.p50_ms / b.p50_ms)
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
        volumes: Vec::new(),
    })
}

/// Run the benchmark (`iterations` execs of each kind; creates are capped at 50).
pub async fn run_benchmark(iterations: usize) -> Result<BenchReport> {
    let iterations = iterations.max(1);
    let warm = Arc::new(NamespaceIsolator::new(NamespaceOptions::default()));
    let cold = NamespaceIsolator::new(NamespaceOptions {
        warm_pool: 0,
        ..Default::default()
    });
    let avail = warm.available().await;
    if !avail.available {
        return Err(Error::unavailable(avail.reason));
    }
    let root = std::env::temp_dir().join(format!("godel-sandbox-bench-{}", std::process::id()));
    let result = bench_inner(&warm, &cold, &root, iterations).await;
    warm.drain().await;
    let _ = std::fs::remove_dir_all(&root);
    let mut report = result?;
    report.cgroup_version = avail.details.get("cgroup_version").cloned();
    Ok(report)
}

async fn bench_inner(
    warm: &NamespaceIsolator,
    cold: &NamespaceIsolator,
    root: &std::path::Path,
    iterations: usize,
) -> Result<BenchReport> {
    let has_bwrap = tokio::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    let crun = crun_bundle(root).await;
    // Create latency, warm and cold interleaved with the baselines.
    let (mut spawn, mut spawn_cold, mut bx, mut cx) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations.min(50) {
        warm.prewarm().await;
        let cfg = config(root, &format!("bench-spawn-{i}"))?;
        let t = Instant::now();
        let sb = warm.create(cfg).await?;
        spawn.push(t.elapsed());
        sb.destroy().await?;
        let cfg = config(root, &format!("bench-cold-{i}"))?;
        let t = Instant::now();
        let sb = cold.create(cfg).await?;
        spawn_cold.push(t.elapsed());
        sb.destroy().await?;
        if has_bwrap && let Some(v) = run_bwrap().await {
            bx.push(v);
        }
        if let Some(b) = &crun
            && let Some(v) = run_crun(b, &format!("godel-bench-{}-{i}", std::process::id())).await
        {
            cx.push(v);
        }
    }
    // Exec latency, interleaved.
    let sb = warm.create(config(root, "bench-exec")?).await?;
    let host = HostIsolator.create(config(root, "bench-host")?).await?;
    // Warm up page cache and code paths.
    for _ in 0..3 {
        run_true(&*sb).await?;
        run_true(&*host).await?;
    }
    let (mut sx, mut hx) = (Vec::new(), Vec::new());
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
    }
    sb.destroy().await?;
    outcome?;
    let sandbox_exec_true = LatencySummary::of(&sx);
    let unsandboxed_exec_true = LatencySummary::of(&hx);
    let sandbox_spawn = LatencySummary::of(&spawn);
    let sandbox_create_cold = LatencySummary::of(&spawn_cold);
    let bwrap_true = has_bwrap.then(|| LatencySummary::of(&bx));
    let crun_true = crun.is_some().then(|| LatencySummary::of(&cx));
    Ok(BenchReport {
        iterations,
        exec_overhead_p50_ms: sandbox_exec_true.p50_ms - unsandboxed_exec_true.p50_ms,
        spawn_p50_over_bwrap_p50: ratio(&sandbox_spawn, bwrap_true.as_ref()),
        spawn_p50_over_crun_p50: ratio(&sandbox_spawn, crun_true.as_ref()),
        cold_p50_over_bwrap_p50: ratio(&sandbox_create_cold, bwrap_true.as_ref()),
        sandbox_spawn,
        sandbox_create_cold,
        sandbox_exec_true,
        unsandboxed_exec_true,
        bwrap_true,
        crun_true,
        cgroup_version: None,
    })
}
