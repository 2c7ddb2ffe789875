//! `godel bench microvm`: the microvm runtime's benchmark. Every number is reported with the
//! accelerator it was measured under, next to its target; nothing is
//! asserted.
//!
//! In one run: cold boot to guest-ready, restore from snapshot to ready,
//! warm-pool claim, exec round trip, file throughput, N concurrent forks,
//! the PSS of an idle fork, how many idle VMs stay alive answering exec, and
//! as the baseline a plain `qemu-system-x86_64` boot (default `pc` machine
//! with firmware, the compressed bzImage, PCI virtio, no tuned kernel
//! arguments) of the same kernel, initramfs and root disk to the same
//! guest-ready point.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use godel_core::{Error, ExecRequest, Result, RuntimeProvider, SnapshotInfo, SpawnSpec};
use godel_guest::GuestClient;
use serde::{Deserialize, Serialize};

use godel_microvm::launch::{self, Accel};
use godel_microvm::{MicrovmConfig, MicrovmProvider, vm};

use crate::LatencySummary;
use crate::microvm_restore::{self, ForkReport, RestoreBreakdown};
use crate::ms;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchOptions {
    /// `$GODEL_HOME` holding the built image (VMs are made under `microvm/`).
    pub home: PathBuf,
    pub image: String,
    /// Samples per latency metric.
    pub samples: usize,
    /// Exec round trips to time.
    pub exec_samples: usize,
    /// Concurrent forks from one snapshot.
    pub forks: usize,
    /// Idle VMs to try to keep alive (0 skips the density test).
    pub idle_target: usize,
    /// Also time the plain-QEMU baseline boot.
    pub baseline: bool,
    /// Force an accelerator (else the probed one).
    pub accel: Option<Accel>,
}

impl BenchOptions {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        BenchOptions {
            home: home.into(),
            image: godel_image::DEFAULT_IMAGE.into(),
            samples: 5,
            exec_samples: 20,
            forks: 10,
            idle_target: 200,
            baseline: true,
            accel: None,
        }
    }
}

/// The idle-density test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Density {
    pub target: usize,
    /// VMs that were running and answered an exec at the end.
    pub reached: usize,
    pub started: usize,
    /// Time for every VM to answer one exec, concurrently.
    pub exec_all_ms: f64,
    pub total_pss_mib: f64,
    pub host_mem_available_drop_mib: f64,
    /// Host CPU used by all idle VMs together, percent of one core.
    pub idle_cpu_percent: f64,
    /// Why it stopped short of the target, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_because: Option<String>,
}

/// One target and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub metric: String,
    pub target: String,
    pub value: String,
    pub met: bool,
}

/// Everything measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub accel: String,
    pub accel_reason: String,
    pub qemu_version: String,
    pub host_tsc_khz: Option<u64>,
    pub image: String,
    pub memory_mib: u64,
    pub cold_boot: LatencySummary,
    pub baseline_boot: Option<LatencySummary>,
    pub baseline: String,
    /// Restore to ready with a pre-started QEMU waiting (the normal case
    /// after the first restore of a snapshot), with its breakdown.
    pub restore: LatencySummary,
    pub restore_breakdown: RestoreBreakdown,
    /// Restore to ready when QEMU must start first (no spare waiting).
    pub restore_cold_vmm: RestoreBreakdown,
    /// PSS of one idle pre-started QEMU (the cost of a spare).
    pub idle_vmm_pss_mib: f64,
    /// Snapshot of a VM that was itself restored (16 MiB of memory changed).
    pub snapshot_restored_ms: f64,
    pub fork: ForkReport,
    pub warm_claim: LatencySummary,
    pub exec_rtt: LatencySummary,
    pub file_write_mib_s: f64,
    pub file_read_mib_s: f64,
    pub snapshot_ms: f64,
    pub snapshot_bytes: u64,
    pub forks: usize,
    pub forks_ready_ms: f64,
    pub idle_fork_pss_mib: f64,
    pub idle_fork_rss_mib: f64,
    pub density: Option<Density>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

fn mem_available_mib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn snapshot_info(id: &str, dir: &Path) -> SnapshotInfo {
    SnapshotInfo {
        id: id.into(),
        runtime_id: String::new(),
        runtime: "microvm".into(),
        team: "bench".into(),
        created_at: chrono::Utc::now(),
        size_bytes: 0,
        kind: "vm".into(),
        name: None,
        description: None,
        labels: Default::default(),
        dir: dir.to_path_buf(),
        data: Default::default(),
    }
}

/// Run the whole benchmark. Progress lines go to `log`.
pub async fn run_benchmark(
    opts: BenchOptions,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<BenchReport> {
    let mut cfg = MicrovmConfig::new(&opts.home).with_image(&opts.image);
    cfg.accel = opts.accel;
    cfg.shutdown_grace = Duration::ZERO;
    let p = MicrovmProvider::new(cfg.clone())?;
    let avail = p.available().await;
    if !avail.available {
        return Err(Error::unavailable(avail.reason));
    }
    let verdict = p.accel_verdict().await?;
    let image = godel_image::load_image(&opts.home, &opts.image)?;
    let qemu = launch::which("qemu-system-x86_64").unwrap_or_else(|| "qemu-system-x86_64".into());
    let mut r = BenchReport {
        accel: verdict.accel.clone(),
        accel_reason: verdict.reason.clone(),
        qemu_version: launch::qemu_version(&qemu).await.unwrap_or_default(),
        host_tsc_khz: p.tsc_khz(),
        image: format!("{} ({})", image.name, image.build_id),
        memory_mib: cfg.default_memory_mib,
        ..Default::default()
    };
    log(&format!("accelerator {} ({})", r.accel, r.accel_reason));
    let work = opts
        .home
        .join("microvm")
        .join(format!("bench-{}", std::process::id()));
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(|e| Error::io("create bench dir", &e))?;
    // The same provider without spare QEMU processes: restores that start QEMU.
    let mut cold_cfg = cfg.clone();
    cold_cfg.prestart_per_snapshot = 0;
    let cold = MicrovmProvider::new(cold_cfg)?;
    let res = measure((&p, &cold), &opts, &work, &image, &qemu, &mut r, log).await;
    cold.shutdown(true).await;
    p.shutdown(true).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    res?;
    r.targets = targets(&r);
    Ok(r)
}

async fn measure(
    (p, cold_p): (&MicrovmProvider, &MicrovmProvider),
    opts: &BenchOptions,
    work: &Path,
    image: &godel_image::ImageInfo,
    qemu: &Path,
    r: &mut BenchReport,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<()> {
    let spec = SpawnSpec::default();
    // Cold boots; the last one stays up as the exec/file/snapshot subject.
    let mut cold = Vec::new();
    for i in 0..opts.samples.max(1) {
        let id = format!("bench-cold-{i}");
        let t = Instant::now();
        p.spawn(&id, &spec).await?;
        cold.push(t.elapsed());
        log(&format!("cold boot {i}: {:.0} ms", ms(t.elapsed())));
        if i + 1 < opts.samples.max(1) {
            p.terminate(&id).await?;
        }
    }
    r.cold_boot = LatencySummary::of(&cold);
    let subject = format!("bench-cold-{}", opts.samples.max(1) - 1);

    let mut rtt = Vec::new();
    for _ in 0..opts.exec_samples.max(1) {
        let t = Instant::now();
        p.exec_collect(&subject, ExecRequest::new(["true"])).await?;
        rtt.push(t.elapsed());
    }
    r.exec_rtt = LatencySummary::of(&rtt);
    log(&format!("exec round trip p50 {:.1} ms", r.exec_rtt.p50_ms));

    let data = Bytes::from(vec![0x5au8; 50 << 20]);
    let t = Instant::now();
    p.write_file(&subject, "bench.bin", data).await?;
    r.file_write_mib_s = 50.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = p.read_file(&subject, "bench.bin").await?;
    r.file_read_mib_s = (back.len() as f64 / (1 << 20) as f64) / t.elapsed().as_secs_f64();
    p.remove(&subject, "bench.bin", false).await?;
    log(&format!(
        "files: write {:.1} MiB/s, read {:.1} MiB/s",
        r.file_write_mib_s, r.file_read_mib_s
    ));

    let snap_dir = work.join("snap");
    let target = godel_core::SnapshotTarget {
        snapshot_id: "bench".into(),
        dir: snap_dir.clone(),
    };
    let t = Instant::now();
    let art = p.snapshot(&subject, &Default::default(), &target).await?;
    r.snapshot_ms = ms(t.elapsed());
    r.snapshot_bytes = art.size_bytes;
    p.terminate(&subject).await?;
    let snap = snapshot_info("bench", &snap_dir);

    let samples = opts.samples.max(1);
    r.restore_cold_vmm = microvm_restore::restores(cold_p, &snap, samples, false).await?;
    log(&format!(
        "restore, QEMU started in the call: p50 {:.0} ms",
        r.restore_cold_vmm.total.p50_ms
    ));
    r.restore_breakdown = microvm_restore::restores(p, &snap, samples, true).await?;
    r.restore = r.restore_breakdown.total.clone();
    log(&format!(
        "restore, pre-started QEMU: p50 {:.0} ms p95 {:.0} ms",
        r.restore.p50_ms, r.restore.p95_ms
    ));
    r.idle_vmm_pss_mib = microvm_restore::idle_vmm_pss_mib(p, &snap).await?;
    log(&format!(
        "idle pre-started QEMU PSS {:.1} MiB",
        r.idle_vmm_pss_mib
    ));
    r.snapshot_restored_ms = microvm_restore::snapshot_of_restored(p, &snap, work).await?;
    log(&format!(
        "snapshot of a restored VM: {:.0} ms",
        r.snapshot_restored_ms
    ));

    r.forks = opts.forks;
    p.drop_spares(&snap).await;
    r.fork = microvm_restore::fork(p, &snap, opts.forks).await;
    r.forks_ready_ms = r.fork.ready_ms;
    r.idle_fork_pss_mib = r.fork.idle_pss_mib;
    r.idle_fork_rss_mib = r.fork.idle_rss_mib;
    log(&format!(
        "{} forks: ready in {:.0} ms, all answered exec in {:.0} ms ({} of {}), idle PSS {:.1} MiB per fork",
        r.fork.forks,
        r.fork.ready_ms,
        r.fork.all_exec_ms,
        r.fork.answered,
        r.fork.forks,
        r.fork.idle_pss_mib
    ));
    if let Some(e) = &r.fork.error {
        r.notes.push(format!("fork: {e}"));
    }

    r.warm_claim = warm_claims(opts, log).await?;

    if opts.baseline {
        let mut b = Vec::new();
        for i in 0..opts.samples.clamp(1, 3) {
            let d = baseline_boot(qemu, image, work, i).await?;
            log(&format!("baseline boot {i}: {:.0} ms", ms(d)));
            b.push(d);
        }
        r.baseline_boot = Some(LatencySummary::of(&b));
    }
    r.baseline = "qemu-system-x86_64 -M pc (SeaBIOS), bzImage, same initramfs and root disk, \
                  virtio-serial-pci, cmdline `console=ttyS0 panic=-1`, TCG, 256 MiB: to guest-agent ready"
        .into();

    if opts.idle_target > 0 {
        r.density = Some(density(p, &snap, opts.idle_target, log).await);
    }
    Ok(())
}

async fn warm_claims(
    opts: &BenchOptions,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<LatencySummary> {
    let mut cfg = MicrovmConfig::new(&opts.home)
        .with_image(&opts.image)
        .with_warm_pool(1);
    cfg.accel = opts.accel;
    cfg.shutdown_grace = Duration::ZERO;
    let pool = MicrovmProvider::new(cfg)?;
    let mut claims = Vec::new();
    let res: Result<()> = async {
        for i in 0..opts.samples.max(1) {
            pool.fill_pool().await?;
            let id = format!("bench-warm-{i}");
            let t = Instant::now();
            pool.spawn(&id, &SpawnSpec::default()).await?;
            claims.push(t.elapsed());
            pool.terminate(&id).await?;
        }
        Ok(())
    }
    .await;
    pool.shutdown(true).await;
    res?;
    let s = LatencySummary::of(&claims);
    log(&format!("warm claim p50 {:.1} ms", s.p50_ms));
    Ok(s)
}

/// Boot the same kernel, initramfs and disk with plain QEMU defaults.
async fn baseline_boot(
    qemu: &Path,
    image: &godel_image::ImageInfo,
    work: &Path,
    i: usize,
) -> Result<Duration> {
    let dir = work.join(format!("base-{i}"));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::io("create baseline dir", &e))?;
    let sock = dir.join("agent.sock");
    let t = Instant::now();
    let mut child = tokio::process::Command::new(qemu)
        .args(["-M", "pc", "-accel", "tcg", "-m", "256", "-smp", "1"])
        .args(["-display", "none", "-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(&image.kernel_bzimage.path)
        .arg("-initrd")
        .arg(&image.initrd.path)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent0,path={},server=on,wait=off",
            sock.display()
        ))
        .args(["-device", "virtio-serial-pci,id=vser0"])
        .args([
            "-device",
            "virtserialport,bus=vser0.0,chardev=agent0,name=agent",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=d0,snapshot=on",
            image.rootfs.path.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=d0"])
        .arg("-serial")
        .arg(format!("file:{}", dir.join("console.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io("start baseline qemu", &e))?;
    let ready = GuestClient::connect(&sock, Duration::from_secs(120)).await;
    let d = t.elapsed();
    let _ = child.kill().await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    ready.map(|_| d)
}

async fn density(
    p: &MicrovmProvider,
    snap: &SnapshotInfo,
    target: usize,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Density {
    let mut d = Density {
        target,
        ..Default::default()
    };
    let mem0 = mem_available_mib();
    let mut ids = Vec::new();
    for i in 0..target {
        if mem_available_mib() < 1024.0 {
            d.stopped_because = Some("host MemAvailable fell below 1 GiB".into());
            break;
        }
        let id = format!("bench-idle-{i}");
        match p.restore(&id, snap, &SpawnSpec::default()).await {
            Ok(_) => ids.push(id),
            Err(e) => {
                d.stopped_because = Some(format!("restore {i} failed: {e}"));
                break;
            }
        }
        if (i + 1) % 25 == 0 {
            log(&format!("{} idle VMs running", i + 1));
        }
    }
    d.started = ids.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<u32> = ids
        .iter()
        .filter_map(|id| p.vm(id).ok().map(|v| v.pid))
        .collect();
    let cpu0: f64 = pids.iter().filter_map(|pid| vm::cpu_seconds(*pid)).sum();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu1: f64 = pids.iter().filter_map(|pid| vm::cpu_seconds(*pid)).sum();
    d.idle_cpu_percent = (cpu1 - cpu0) / t.elapsed().as_secs_f64() * 100.0;
    d.total_pss_mib = pids
        .iter()
        .filter_map(|pid| vm::pss_bytes(*pid))
        .sum::<u64>() as f64
        / 1048576.0;
    d.host_mem_available_drop_mib = mem0 - mem_available_mib();
    let t = Instant::now();
    let answers = futures::future::join_all(ids.iter().map(|id| async move {
        let mut req = ExecRequest::new(["true"]);
        req.timeout_ms = Some(60_000);
        p.exec_collect(id, req).await.is_ok()
    }))
    .await;
    d.exec_all_ms = ms(t.elapsed());
    d.reached = answers.iter().filter(|ok| **ok).count();
    log(&format!(
        "{} of {} idle VMs answered exec in {:.0} ms; idle CPU {:.0} % of a core; PSS {:.0} MiB",
        d.reached, d.started, d.exec_all_ms, d.idle_cpu_percent, d.total_pss_mib
    ));
    for id in &ids {
        let _ = p.terminate(id).await;
    }
    d
}

impl BenchReport {
    /// Print the report: JSON, or a table with the baseline next to the figures.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        println!(
            "microvm benchmark: {} (QEMU {}, image {}, {} MiB guest)",
            self.accel, self.qemu_version, self.image, self.memory_mib
        );
        if let Some(b) = &self.baseline_boot {
            println!("{}", b.line("baseline: plain qemu boot to ready"));
        }
        println!("{}", self.cold_boot.line("cold boot to ready"));
        for l in self
            .restore_cold_vmm
            .lines("restore to ready, QEMU started")
        {
            println!("{l}");
        }
        for l in self
            .restore_breakdown
            .lines("restore to ready, pre-started QEMU")
        {
            println!("{l}");
        }
        println!("{}", self.warm_claim.line("warm-pool claim"));
        println!("{}", self.exec_rtt.line("exec round trip"));
        println!(
            "{:<40} {:.1} MiB",
            "idle pre-started QEMU PSS", self.idle_vmm_pss_mib
        );
        println!(
            "{:<40} {:.0} ms ({} bytes)",
            "snapshot of a cold-booted VM", self.snapshot_ms, self.snapshot_bytes
        );
        println!(
            "{:<40} {:.0} ms",
            "snapshot of a restored VM", self.snapshot_restored_ms
        );
        let f = &self.fork;
        println!(
            "{:<40} ready {:.0} ms, all answered exec {:.0} ms ({:.1} ms per fork), {} of {} answered, {} at once",
            format!("fork -n {}", f.forks),
            f.ready_ms,
            f.all_exec_ms,
            f.per_fork_ms,
            f.answered,
            f.forks,
            f.concurrency
        );
        println!("{}", f.restore.line("  each fork's restore to ready"));
        println!(
            "{:<40} {:.0} ms",
            "  QEMU CPU per fork (to answered exec)", f.cpu_ms_per_fork
        );
        println!(
            "{:<40} {:.1} MiB PSS, {:.1} MiB RSS ({:.0} MiB PSS in total)",
            "  idle fork memory (median)", f.idle_pss_mib, f.idle_rss_mib, f.total_pss_mib
        );
        println!(
            "{:<40} write {:.1} MiB/s, read {:.1} MiB/s",
            "files (50 MiB)", self.file_write_mib_s, self.file_read_mib_s
        );
        if let Some(d) = &self.density {
            println!(
                "{:<40} {} of {} answered in {:.0} ms",
                "idle VMs answering exec", d.reached, d.target, d.exec_all_ms
            );
        }
        for t in &self.targets {
            let mark = if t.met { "met" } else { "MISSED" };
            println!(
                "target {:<45} {:>12}  {:<28} {mark}",
                t.metric, t.value, t.target
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

fn targets(r: &BenchReport) -> Vec<Target> {
    let t = |metric: &str, target: &str, value: f64, limit: f64, unit: &str| Target {
        metric: metric.into(),
        target: format!("< {limit} {unit} ({target})"),
        value: format!("{value:.1} {unit}"),
        met: value < limit,
    };
    let mut v = vec![
        t(
            "cold boot to ready P95",
            "TCG",
            r.cold_boot.p95_ms,
            2000.0,
            "ms",
        ),
        t(
            "restore to ready P95 (pre-started QEMU)",
            "TCG",
            r.restore.p95_ms,
            80.0,
            "ms",
        ),
        t(
            "warm-pool claim P95",
            "TCG",
            r.warm_claim.p95_ms,
            15.0,
            "ms",
        ),
        t(
            &format!("{} forks all answering exec", r.forks),
            "TCG",
            r.fork.all_exec_ms,
            (r.forks as f64 * 120.0).max(1500.0),
            "ms",
        ),
        t(
            "idle fork PSS",
            "256 MiB guest",
            r.idle_fork_pss_mib,
            30.0,
            "MiB",
        ),
    ];
    if let Some(d) = &r.density {
        v.push(Target {
            metric: "idle VMs answering exec".into(),
            target: format!(">= {}", d.target),
            value: d.reached.to_string(),
            met: d.reached >= d.target,
        });
    }
    v
}
