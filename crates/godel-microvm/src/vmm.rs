//! Pre-started VMMs: QEMU processes already waiting in `-incoming defer` for
//! one snapshot, so a restore skips QEMU's start-up (~45 ms under TCG) and is
//! one `migrate-incoming` plus the guest's first reply.
//!
//! What is fixed when QEMU starts and what a restore can still choose:
//! - fixed at start: the machine (vCPUs, memory size), the guest RAM backend
//!   (`memory-backend-file` opens and maps `mem-path` during machine
//!   creation, before `-incoming defer` waits; no QMP command re-points it),
//!   and the root disk (virtio-mmio has no hot-plug). A restored VM's RAM is
//!   the snapshot's `ram` file mapped `share=off`, and its disk an overlay on
//!   the snapshot's `disk.qcow2`, so a pre-started VMM belongs to **one
//!   snapshot** (which also fixes the machine shape);
//! - chosen at restore: the migration stream (`migrate-incoming`), the
//!   migration capabilities, and the runtime's identity (id, hostname,
//!   entropy, clock: the guest's `restored` message).
//!
//! [`VmmPool`] keeps up to `per_snapshot` spare VMMs for each of the
//! `max_snapshots` most recently restored snapshots. A restore takes one if
//! there is one and the provider refills in the background. A spare is
//! written down in its VM directory as runtime `vmm-<key>`, so the reaper of
//! a later daemon stops it if this one dies. While a spare waits, the guest
//! agent's socket is already connected: the guest never sees the host go
//! away and come back, so its first reply skips the reconnect path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use parking_lot::Mutex;
use tokio::net::UnixStream;

use crate::disk;
use crate::launch::{self, LaunchSpec};
use crate::machine::{self, Host, SNAP_DISK, SNAP_RAM, SnapMeta};
use crate::qmp::Qmp;
use crate::vm::{self, VmMeta};

/// Runtime-id prefix of a spare VMM (reaped at start-up like pool VMs).
pub const SPARE_PREFIX: &str = "vmm-";

/// A QEMU process waiting in `-incoming defer` for one snapshot.
pub struct Vmm {
    pub run_dir: PathBuf,
    pub pid: u32,
    pub qmp: Qmp,
    /// What `vm.json` will say once restored (runtime id still `vmm-<key>`).
    pub meta: VmMeta,
    /// The guest agent's socket, connected while the VMM waits.
    pub agent: Option<UnixStream>,
    pub snap_dir: PathBuf,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("run_dir", &self.run_dir)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Vmm {
    /// Kill the process and remove its directory.
    pub async fn discard(self) {
        drop(self.agent);
        let _ = self.qmp.quit().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.qmp.closed()).await;
        machine::abort(&self.run_dir, Some(self.pid), None).await;
    }
}

/// Start a QEMU for a restore of `snap_dir`, waiting in `-incoming defer`
/// with `x-ignore-shared` set and the agent socket connected.
pub async fn start(host: &Host, snap_dir: &Path, sm: &SnapMeta) -> Result<Vmm> {
    let key = machine::new_key();
    let run_dir = host.vms_dir().join(&key);
    tokio::fs::create_dir_all(&run_dir)
        .await
        .map_err(|e| Error::io(format!("create {}", run_dir.display()), &e))?;
    let mut pid = None;
    let unfinished = machine::Unfinished::new(&run_dir, None);
    let res = start_in(host, snap_dir, sm, &key, &run_dir, &mut pid).await;
    unfinished.disarm();
    if let Err(e) = &res {
        let e = machine::with_console(e.clone(), &run_dir);
        machine::abort(&run_dir, pid, None).await;
        return Err(e);
    }
    res
}

async fn start_in(
    host: &Host,
    snap_dir: &Path,
    sm: &SnapMeta,
    key: &str,
    run_dir: &Path,
    pid: &mut Option<u32>,
) -> Result<Vmm> {
    let disk = run_dir.join("disk.qcow2");
    disk::create_overlay(&disk, &snap_dir.join(SNAP_DISK), "qcow2", sm.disk_mib).await?;
    let meta = VmMeta {
        key: key.to_string(),
        runtime_id: format!("{SPARE_PREFIX}{key}"),
        image: sm.image.clone(),
        accel: sm.accel,
        vcpus: sm.vcpus,
        mem_mib: sm.mem_mib,
        disk_mib: sm.disk_mib,
        ram_file: snap_dir.join(SNAP_RAM),
        ram_shared: false,
        disk: disk.clone(),
        base: sm.base.clone(),
        snapshot_base: Some(snap_dir.to_path_buf()),
        env: Default::default(),
        created_at: chrono::Utc::now(),
    };
    // Written first, so a daemon dying right here leaves a reapable spare.
    vm::write_meta(run_dir, &meta)?;
    let spec = LaunchSpec {
        qemu: host.qemu.clone(),
        accel: sm.accel,
        vcpus: sm.vcpus,
        mem_mib: sm.mem_mib,
        boot: None,
        ram_file: meta.ram_file.clone(),
        ram_shared: false,
        disk: Some(disk),
        run_dir: run_dir.to_path_buf(),
        incoming: true,
        start_paused: false,
        name: meta.process_name(),
    };
    *pid = Some(host.launcher.launch(&spec).await?);
    let qmp = Qmp::connect(&launch::qmp_socket(run_dir), Duration::from_secs(10)).await?;
    qmp.set_migration_capabilities(&[("x-ignore-shared", true), ("events", true)])
        .await?;
    // The chardev listens as soon as QEMU is up (`server=on,wait=off`).
    let agent = UnixStream::connect(launch::agent_socket(run_dir))
        .await
        .ok();
    Ok(Vmm {
        run_dir: run_dir.to_path_buf(),
        pid: pid.unwrap_or_default(),
        qmp,
        meta,
        agent,
        snap_dir: snap_dir.to_path_buf(),
    })
}

struct Spares {
    vmms: Vec<Vmm>,
    used: Instant,
    /// Starts under way (so concurrent refills do not overshoot).
    starting: usize,
}

/// Spare VMMs per snapshot directory.
pub struct VmmPool {
    per_snapshot: usize,
    max_snapshots: usize,
    spares: Mutex<HashMap<PathBuf, Spares>>,
}

impl std::fmt::Debug for VmmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmPool")
            .field("per_snapshot", &self.per_snapshot)
            .field("ready", &self.ready_total())
            .finish()
    }
}

impl VmmPool {
    /// Keep `per_snapshot` spares for each of the `max_snapshots` most
    /// recently used snapshots (`per_snapshot` 0 = off).
    pub fn new(per_snapshot: usize, max_snapshots: usize) -> Self {
        VmmPool {
            per_snapshot,
            max_snapshots: max_snapshots.max(1),
            spares: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_snapshot(&self) -> usize {
        self.per_snapshot
    }

    /// Spares waiting for `snap`.
    pub fn ready(&self, snap: &Path) -> usize {
        self.spares.lock().get(snap).map_or(0, |s| s.vmms.len())
    }

    /// Spares being started for `snap`.
    pub fn starting(&self, snap: &Path) -> usize {
        self.spares.lock().get(snap).map_or(0, |s| s.starting)
    }

    /// QEMU pids of the spares waiting for `snap`.
    pub fn pids(&self, snap: &Path) -> Vec<u32> {
        self.spares
            .lock()
            .get(snap)
            .map(|s| s.vmms.iter().map(|v| v.pid).collect())
            .unwrap_or_default()
    }

    /// Spares waiting in total.
    pub fn ready_total(&self) -> usize {
        self.spares.lock().values().map(|s| s.vmms.len()).sum()
    }

    /// Take a live spare for `snap` and mark the snapshot as used. Dead
    /// spares met on the way are returned too, to be discarded.
    pub fn take(&self, snap: &Path) -> (Option<Vmm>, Vec<Vmm>) {
        let mut all = self.spares.lock();
        let s = all.entry(snap.to_path_buf()).or_insert_with(|| Spares {
            vmms: Vec::new(),
            used: Instant::now(),
            starting: 0,
        });
        s.used = Instant::now();
        let mut dead = Vec::new();
        while let Some(v) = s.vmms.pop() {
            if vm::pid_alive(v.pid) && !v.qmp.is_closed() {
                return (Some(v), dead);
            }
            dead.push(v);
        }
        (None, dead)
    }

    /// Mark `snap` as used without taking a spare (so a refill keeps it).
    pub fn take_none(&self, snap: &Path) -> usize {
        let mut all = self.spares.lock();
        let s = all.entry(snap.to_path_buf()).or_insert_with(|| Spares {
            vmms: Vec::new(),
            used: Instant::now(),
            starting: 0,
        });
        s.used = Instant::now();
        s.vmms.len()
    }

    /// How many spares to start for `snap` now (and count them as starting),
    /// plus the spares of snapshots pushed out of the most-recent set.
    pub fn plan_refill(&self, snap: &Path) -> (usize, Vec<Vmm>) {
        let mut all = self.spares.lock();
        let mut evicted = Vec::new();
        while all.len() > self.max_snapshots {
            let oldest = all
                .iter()
                .filter(|(k, _)| k.as_path() != snap)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            if let Some(s) = all.remove(&k) {
                evicted.extend(s.vmms);
            }
        }
        let Some(s) = all.get_mut(snap) else {
            return (0, evicted);
        };
        let want = self.per_snapshot.saturating_sub(s.vmms.len() + s.starting);
        s.starting += want;
        (want, evicted)
    }

    /// A started spare arrives (or `None`: the start failed). Returns the
    /// VMM back when its snapshot was dropped meanwhile.
    pub fn arrived(&self, snap: &Path, vmm: Option<Vmm>) -> Option<Vmm> {
        let mut all = self.spares.lock();
        match all.get_mut(snap) {
            Some(s) => {
                s.starting = s.starting.saturating_sub(1);
                if let Some(v) = vmm {
                    s.vmms.push(v);
                }
                None
            }
            None => vmm,
        }
    }

    /// Forget `snap` and hand back its spares (snapshot deletion).
    pub fn drain(&self, snap: &Path) -> Vec<Vmm> {
        self.spares
            .lock()
            .remove(snap)
            .map(|s| s.vmms)
            .unwrap_or_default()
    }

    /// Hand back every spare (shutdown).
    pub fn drain_all(&self) -> Vec<Vmm> {
        self.spares
            .lock()
            .drain()
            .flat_map(|(_, s)| s.vmms)
            .collect()
    }
}
