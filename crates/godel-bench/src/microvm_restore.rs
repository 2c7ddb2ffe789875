//! The restore half of `godel bench microvm`: restore to ready with and
//! without a pre-started QEMU and where its time goes (QEMU start, incoming
//! migration, the guest's first reply, `restored`), the memory of an idle
//! pre-started QEMU, the snapshot of a VM that was itself restored, and a
//! fork of N VMs from one snapshot (total, per fork, all answering exec,
//! idle PSS per fork).

use std::path::Path;
use std::time::{Duration, Instant};

use godel_core::{ExecRequest, Result, RuntimeProvider, SnapshotInfo, SnapshotTarget, SpawnSpec};
use godel_microvm::MicrovmProvider;
use godel_microvm::vm::{self, RestoreTimings};
use serde::{Deserialize, Serialize};

use crate::{LatencySummary, ms};

/// Restore to ready and its phases (each phase on its own, not cumulative).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreBreakdown {
    /// From the call to the guest answering `restored`, as the caller sees it.
    pub total: LatencySummary,
    /// QEMU started with `-incoming defer` and QMP up (≈0 when pre-started).
    pub vmm: LatencySummary,
    /// `migrate-incoming` of the device state until the vCPUs run.
    pub migrate: LatencySummary,
    /// The guest agent's first reply (the channel's sync).
    pub first_reply: LatencySummary,
    /// `restored`: entropy, clock and hostname, acknowledged.
    pub restored: LatencySummary,
}

impl RestoreBreakdown {
    fn of(total: &[Duration], t: &[RestoreTimings]) -> Self {
        let d = |f: &dyn Fn(&RestoreTimings) -> f64| -> LatencySummary {
            let v: Vec<Duration> = t
                .iter()
                .map(|x| Duration::from_secs_f64(f(x).max(0.0) / 1e3))
                .collect();
            LatencySummary::of(&v)
        };
        RestoreBreakdown {
            total: LatencySummary::of(total),
            vmm: d(&|x| x.vmm_ms),
            migrate: d(&|x| x.incoming_ms - x.vmm_ms),
            first_reply: d(&|x| x.sync_ms - x.incoming_ms),
            restored: d(&|x| x.ready_ms - x.sync_ms),
        }
    }

    /// Table rows under `name`.
    pub fn lines(&self, name: &str) -> Vec<String> {
        vec![
            self.total.line(name),
            self.vmm.line("  QEMU start (-incoming defer, QMP)"),
            self.migrate.line("  migrate-incoming (device state)"),
            self.first_reply.line("  guest first reply (sync)"),
            self.restored.line("  restored (entropy, clock, host)"),
        ]
    }
}

/// The fork of N VMs from one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForkReport {
    pub forks: usize,
    /// Until every fork was ready (each `restore` returned).
    pub ready_ms: f64,
    /// Until every fork had also answered one exec.
    pub all_exec_ms: f64,
    pub per_fork_ms: f64,
    /// Forks that answered the exec.
    pub answered: usize,
    /// Restores running at once (the provider paces the rest).
    pub concurrency: usize,
    /// Median PSS of an idle fork, and all forks together.
    pub idle_pss_mib: f64,
    pub idle_rss_mib: f64,
    pub total_pss_mib: f64,
    /// CPU used per fork by its QEMU process from its start until it had
    /// answered the exec (guest and device model; QEMU's own start-up
    /// before `-daemonize` returns, ~55-60 ms, is not included): on 2 cores
    /// the floor of the total is `forks × cpu_ms_per_fork / 2`.
    #[serde(default)]
    pub cpu_ms_per_fork: f64,
    /// Each fork's own restore to ready.
    pub restore: LatencySummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Restores of `snap` one after the other; with `prestarted` the spare QEMU
/// is made ready before each sample (outside the timed part), else `p` must
/// be a provider without spares.
pub async fn restores(
    p: &MicrovmProvider,
    snap: &SnapshotInfo,
    samples: usize,
    prestarted: bool,
) -> Result<RestoreBreakdown> {
    let mut total = Vec::new();
    let mut timings = Vec::new();
    for i in 0..samples.max(1) {
        if prestarted {
            p.prepare_restores(snap).await?;
        }
        let id = format!("bench-restore-{i}");
        let t = Instant::now();
        p.restore(&id, snap, &SpawnSpec::default()).await?;
        total.push(t.elapsed());
        if let Some(tm) = *p.vm(&id)?.restore_timings.lock() {
            timings.push(tm);
        }
        p.exec_collect(&id, ExecRequest::new(["true"])).await?;
        p.terminate(&id).await?;
    }
    Ok(RestoreBreakdown::of(&total, &timings))
}

/// PSS of one idle pre-started QEMU (MiB).
pub async fn idle_vmm_pss_mib(p: &MicrovmProvider, snap: &SnapshotInfo) -> Result<f64> {
    p.prepare_restores(snap).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(p.vmms()
        .pids(&snap.dir)
        .iter()
        .filter_map(|pid| vm::pss_bytes(*pid))
        .map(|b| b as f64 / 1048576.0)
        .fold(0.0, f64::max))
}

/// Snapshot a VM restored from `snap` (after it changed some memory).
pub async fn snapshot_of_restored(
    p: &MicrovmProvider,
    snap: &SnapshotInfo,
    work: &Path,
) -> Result<f64> {
    let id = "bench-resnap";
    p.restore(id, snap, &SpawnSpec::default()).await?;
    p.exec_collect(
        id,
        ExecRequest::new(["sh", "-c", "head -c 16777216 /dev/urandom > /tmp/x"]),
    )
    .await?;
    let target = SnapshotTarget {
        snapshot_id: "bench-resnap".into(),
        dir: work.join("resnap"),
    };
    let t = Instant::now();
    let res = p.snapshot(id, &Default::default(), &target).await;
    let d = t.elapsed();
    p.terminate(id).await?;
    let _ = tokio::fs::remove_dir_all(&target.dir).await;
    res.map(|_| ms(d))
}

/// Fork `n` VMs from `snap` at once, have each answer an exec, measure idle memory.
pub async fn fork(p: &MicrovmProvider, snap: &SnapshotInfo, n: usize) -> ForkReport {
    let mut r = ForkReport {
        forks: n,
        concurrency: p.restore_concurrency(),
        ..Default::default()
    };
    let ids: Vec<String> = (0..n).map(|i| format!("bench-fork-{i}")).collect();
    let spec = SpawnSpec::default();
    let t = Instant::now();
    let res = futures::future::join_all(ids.iter().map(|id| {
        let spec = &spec;
        async move {
            let t = Instant::now();
            p.restore(id, snap, spec).await.map(|_| t.elapsed())
        }
    }))
    .await;
    r.ready_ms = ms(t.elapsed());
    let mut each = Vec::new();
    for x in res {
        match x {
            Ok(d) => each.push(d),
            Err(e) => {
                r.error.get_or_insert(e.to_string());
            }
        }
    }
    r.restore = LatencySummary::of(&each);
    let answers = futures::future::join_all(ids.iter().map(|id| async move {
        p.exec_collect(id, ExecRequest::new(["true"]))
            .await
            .is_ok_and(|o| o.exit_code == 0)
    }))
    .await;
    r.all_exec_ms = ms(t.elapsed());
    r.answered = answers.iter().filter(|ok| **ok).count();
    let cpu: Vec<f64> = ids
        .iter()
        .filter_map(|id| p.vm(id).ok().and_then(|v| vm::cpu_seconds(v.pid)))
        .collect();
    if !cpu.is_empty() {
        r.cpu_ms_per_fork = cpu.iter().sum::<f64>() * 1e3 / cpu.len() as f64;
    }
    r.per_fork_ms = if n > 0 { r.all_exec_ms / n as f64 } else { 0.0 };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pss = Vec::new();
    let mut rss = Vec::new();
    for id in &ids {
        if let Ok(v) = p.vm(id) {
            pss.push(vm::pss_bytes(v.pid).unwrap_or(0) as f64 / 1048576.0);
            rss.push(vm::rss_bytes(v.pid).unwrap_or(0) as f64 / 1048576.0);
        }
    }
    r.total_pss_mib = pss.iter().sum();
    pss.sort_by(|a, b| a.total_cmp(b));
    rss.sort_by(|a, b| a.total_cmp(b));
    r.idle_pss_mib = pss.get(pss.len() / 2).copied().unwrap_or(0.0);
    r.idle_rss_mib = rss.get(rss.len() / 2).copied().unwrap_or(0.0);
    for id in &ids {
        let _ = p.terminate(id).await;
    }
    r
}
