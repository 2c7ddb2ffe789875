//! Making VMs: cold boot, snapshot and restore.
//!
//! - **Cold boot**: a new qcow2 overlay on the image's root file system, a
//!   fresh `share=on` RAM file, QEMU with kernel + initramfs, then wait for
//!   the guest agent to answer the protocol's sync.
//! - **Snapshot** (into the control plane's staging directory):
//!   1. `stop` the vCPUs (QEMU flushes the block layer);
//!   2. a VM with `share=on` RAM migrates with `x-ignore-shared`, so the
//!      state file holds only device state (~60 KiB) and the RAM file is
//!      copied sparsely next to it as `ram`;
//!      a restored VM (private copy-on-write RAM) migrates in full over a
//!      Unix socket straight into a paused helper QEMU whose RAM is a new
//!      `share=on` file, which re-saves with `x-ignore-shared`: every
//!      snapshot has the same `ram` + `state` + `disk.qcow2` shape;
//!   3. the disk overlay is copied and rebased onto the image base;
//!   4. `cont` if it was running.
//! - **Restore**: a QEMU waiting with `-incoming defer` (pre-started, see
//!   [`crate::vmm`], or started now), RAM mapped `share=off` from the
//!   snapshot's `ram`, a new overlay on the snapshot's `disk.qcow2`;
//!   `x-ignore-shared` + `migrate-incoming unix:` fed the `state` file; then
//!   the guest is synced and told `restored(entropy, time, hostname)` in one
//!   round trip.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use godel_core::{Error, EventSink, Result, SnapshotArtifact};
use godel_guest::GuestClient;
use godel_image::ImageInfo;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::disk;
use crate::launch::{self, Accel, Boot, LaunchSpec, Launcher};
use crate::qmp::{Qmp, shell_quote};
use crate::vm::{self, Vm, VmMeta};
use crate::vmm::{self, Vmm};

/// Snapshot format version written to `microvm.json`.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// File names inside a snapshot directory.
pub const SNAP_META: &str = "microvm.json";
pub const SNAP_RAM: &str = "ram";
pub const SNAP_STATE: &str = "state";
pub const SNAP_DISK: &str = "disk.qcow2";

/// What the host side needs to make VMs.
#[derive(Clone)]
pub struct Host {
    /// `$GODEL_HOME/microvm`.
    pub root: PathBuf,
    pub qemu: PathBuf,
    pub launcher: Arc<dyn Launcher>,
    pub events: EventSink,
    /// Where private RAM files of cold-booted VMs live (tmpfs when available).
    pub ram_dir: PathBuf,
    pub boot_timeout: Duration,
    pub tsc_khz: Option<u64>,
}

impl Host {
    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }
}

/// The shape of a VM to make.
#[derive(Debug, Clone)]
pub struct VmParams {
    pub runtime_id: String,
    pub hostname: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: Option<u64>,
    pub env: std::collections::BTreeMap<String, String>,
}

/// `microvm.json` of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapMeta {
    pub format: u32,
    pub image: String,
    /// The image root file system the snapshot's disk backs on.
    pub base: PathBuf,
    pub accel: Accel,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: Option<u64>,
    pub source_runtime: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Read a snapshot's `microvm.json`.
pub fn read_snap_meta(dir: &Path) -> Result<SnapMeta> {
    let p = dir.join(SNAP_META);
    let text = std::fs::read(&p).map_err(|e| {
        let mut err = Error::io(format!("read {}", p.display()), &e);
        if e.kind() == std::io::ErrorKind::NotFound {
            err.message = format!("{} is not a microvm snapshot", dir.display());
        }
        err
    })?;
    let m: SnapMeta = serde_json::from_slice(&text)
        .map_err(|e| Error::internal(format!("{}: {e}", p.display())))?;
    if m.format != SNAPSHOT_FORMAT {
        return Err(Error::invalid(format!(
            "snapshot format {} is not supported (expected {SNAPSHOT_FORMAT})",
            m.format
        )));
    }
    Ok(m)
}

pub(crate) fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn io(ctx: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(ctx, &e)
}

/// Kill a half-made VM and remove its files.
pub(crate) async fn abort(run_dir: &Path, pid: Option<u32>, ram: Option<&Path>) {
    if let Some(pid) = pid
        && vm::pid_alive(pid)
    {
        vm::kill9(pid);
        for _ in 0..100 {
            if !vm::pid_alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Some(r) = ram {
        let _ = tokio::fs::remove_file(r).await;
    }
    let _ = tokio::fs::remove_dir_all(run_dir).await;
}

pub(crate) fn with_console(e: Error, run_dir: &Path) -> Error {
    let tail = vm::console_tail(run_dir, 8);
    if tail.is_empty() {
        e
    } else {
        let mut e = e;
        e.message = format!("{}\nlast console lines:\n{tail}", e.message);
        e
    }
}

/// Cold-boot a VM from an image and wait until its agent answers.
pub async fn cold_boot(host: &Host, image: &ImageInfo, p: &VmParams) -> Result<Arc<Vm>> {
    let key = new_key();
    let run_dir = host.vms_dir().join(&key);
    tokio::fs::create_dir_all(&run_dir)
        .await
        .map_err(io(format!("create {}", run_dir.display())))?;
    let ram_file = host.ram_dir.join(format!("godel-{key}.ram"));
    let unfinished = Unfinished::new(&run_dir, Some(&ram_file));
    let res = cold_boot_in(host, image, p, &key, &run_dir, &ram_file).await;
    unfinished.disarm();
    match res {
        Ok(vm) => Ok(vm),
        Err((e, pid)) => {
            let e = with_console(e, &run_dir);
            abort(&run_dir, pid, Some(&ram_file)).await;
            Err(e)
        }
    }
}

/// A start of QEMU whose future is dropped half-way (a caller's deadline
/// cancels a boot or a restore) would leave a daemonized QEMU, its RAM file
/// and its directory behind: dropping this while armed kills the QEMU named
/// by the directory's pid file and removes both.
pub(crate) struct Unfinished {
    run_dir: PathBuf,
    ram_file: Option<PathBuf>,
    armed: bool,
}

impl Unfinished {
    pub(crate) fn new(run_dir: &Path, ram_file: Option<&Path>) -> Unfinished {
        Unfinished {
            run_dir: run_dir.to_path_buf(),
            ram_file: ram_file.map(Path::to_path_buf),
            armed: true,
        }
    }

    /// The start finished (or failed and cleaned up itself): keep everything.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let pid = std::fs::read_to_string(launch::pid_file(&self.run_dir))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid
            && vm::pid_alive(pid)
        {
            vm::kill9(pid);
        }
        if let Some(r) = &self.ram_file {
            let _ = std::fs::remove_file(r);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

async fn cold_boot_in(
    host: &Host,
    image: &ImageInfo,
    p: &VmParams,
    key: &str,
    run_dir: &Path,
    ram_file: &Path,
) -> std::result::Result<Arc<Vm>, (Error, Option<u32>)> {
    let disk = run_dir.join("disk.qcow2");
    disk::create_overlay(&disk, &image.rootfs.path, "raw", p.disk_mib)
        .await
        .map_err(|e| (e, None))?;
    let mut cmdline = image.cmdline.clone();
    if let Some(k) = host.tsc_khz {
        cmdline.push_str(&format!(" tsc_early_khz={k}"));
    }
    cmdline.push_str(&format!(" godel.hostname={}", p.hostname));
    let meta = VmMeta {
        key: key.to_string(),
        runtime_id: p.runtime_id.clone(),
        image: image.name.clone(),
        accel: p.accel,
        vcpus: p.vcpus,
        mem_mib: p.mem_mib,
        disk_mib: p.disk_mib,
        ram_file: ram_file.to_path_buf(),
        ram_shared: true,
        disk: disk.clone(),
        base: image.rootfs.path.clone(),
        snapshot_base: None,
        env: p.env.clone(),
        created_at: chrono::Utc::now(),
    };
    let spec = LaunchSpec {
        qemu: host.qemu.clone(),
        accel: p.accel,
        vcpus: p.vcpus,
        mem_mib: p.mem_mib,
        boot: Some(Boot {
            kernel: image.kernel.path.clone(),
            initrd: image.initrd.path.clone(),
            cmdline,
        }),
        ram_file: ram_file.to_path_buf(),
        ram_shared: true,
        disk: Some(disk),
        run_dir: run_dir.to_path_buf(),
        incoming: false,
        start_paused: false,
        name: meta.process_name(),
    };
    let pid = host.launcher.launch(&spec).await.map_err(|e| (e, None))?;
    let qmp = Qmp::connect(&launch::qmp_socket(run_dir), Duration::from_secs(10))
        .await
        .map_err(|e| (e, Some(pid)))?;
    let guest = GuestClient::connect(launch::agent_socket(run_dir), host.boot_timeout)
        .await
        .map_err(|e| {
            let e = Error::spawn(format!("guest agent did not come up: {}", e.message));
            (e, Some(pid))
        })?;
    vm::write_meta(run_dir, &meta).map_err(|e| (e, Some(pid)))?;
    Ok(Vm::new(
        run_dir.to_path_buf(),
        pid,
        qmp,
        meta,
        Some(guest),
        host.events.clone(),
    ))
}

/// Restore a new VM from a snapshot directory, starting its QEMU.
pub async fn restore(host: &Host, snap_dir: &Path, p: &VmParams) -> Result<Arc<Vm>> {
    restore_with(host, snap_dir, p, None).await
}

/// Restore a new VM from a snapshot directory into `spare`, a QEMU already
/// waiting for this snapshot ([`crate::vmm`]), or a new one when `None`.
pub async fn restore_with(
    host: &Host,
    snap_dir: &Path,
    p: &VmParams,
    spare: Option<Vmm>,
) -> Result<Arc<Vm>> {
    let t0 = Instant::now();
    let prestarted = spare.is_some();
    let vmm = match spare {
        Some(v) => v,
        None => {
            let sm = read_snap_meta(snap_dir)?;
            vmm::start(host, snap_dir, &sm).await?
        }
    };
    let vmm_ms = ms(t0.elapsed());
    let (run_dir, pid) = (vmm.run_dir.clone(), vmm.pid);
    let unfinished = Unfinished::new(&run_dir, None);
    let res = finish_restore(host, vmm, p, t0).await;
    unfinished.disarm();
    match res {
        Ok(vm) => {
            if let Some(t) = vm.restore_timings.lock().as_mut() {
                t.vmm_ms = vmm_ms;
                t.prestarted = prestarted;
            }
            Ok(vm)
        }
        Err(e) => {
            let e = with_console(e, &run_dir);
            abort(&run_dir, Some(pid), None).await;
            Err(e)
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Load the snapshot's device state into a waiting VMM and give the guest
/// its new identity.
async fn finish_restore(host: &Host, vmm: Vmm, p: &VmParams, t0: Instant) -> Result<Arc<Vm>> {
    let Vmm {
        run_dir,
        pid,
        qmp,
        mut meta,
        agent,
        snap_dir,
    } = vmm;
    meta.runtime_id = p.runtime_id.clone();
    meta.env = p.env.clone();
    meta.created_at = chrono::Utc::now();
    // The device state (~60 KiB) goes over a Unix socket QEMU listens on:
    // no `sh -c cat` to fork and exec on the critical path.
    let state = tokio::fs::read(snap_dir.join(SNAP_STATE))
        .await
        .map_err(io(format!("read {}", snap_dir.join(SNAP_STATE).display())))?;
    let mig = run_dir.join("mig.sock");
    let mut events = qmp.events();
    qmp.migrate_incoming(&format!("unix:{}", mig.display()))
        .await?;
    let mut sock = tokio::net::UnixStream::connect(&mig)
        .await
        .map_err(io("connect to the incoming migration socket"))?;
    sock.write_all(&state)
        .await
        .map_err(io("send the device state"))?;
    sock.shutdown().await.map_err(io("send the device state"))?;
    let st = qmp
        .wait_incoming_events(&mut events, Duration::from_secs(60))
        .await?;
    drop(sock);
    if st != "running" {
        qmp.cont().await?;
    }
    let incoming_ms = ms(t0.elapsed());
    let entropy: [u8; 64] = rand::random();
    let no_answer =
        |e: Error| Error::spawn(format!("restored guest did not answer: {}", e.message));
    let (guest, sync_ms) = match agent {
        // Connected while the VMM waited: the guest's port stayed open, no
        // byte can be lost, so `restored` rides right behind the first
        // `Sync` and the two replies cost one round trip.
        Some(stream) => {
            let guest = GuestClient::from_stream_unsynced(stream);
            let sync = async {
                let r = guest.sync(host.boot_timeout).await;
                (r, ms(t0.elapsed()))
            };
            let restored = async {
                tokio::task::yield_now().await;
                guest
                    .restored(&entropy, SystemTime::now(), Some(&p.hostname))
                    .await
            };
            let ((synced, sync_ms), restored) = tokio::join!(sync, restored);
            synced.map_err(no_answer)?;
            restored?;
            (guest, sync_ms)
        }
        None => {
            let guest = GuestClient::connect(launch::agent_socket(&run_dir), host.boot_timeout)
                .await
                .map_err(no_answer)?;
            let sync_ms = ms(t0.elapsed());
            guest
                .restored(&entropy, SystemTime::now(), Some(&p.hostname))
                .await?;
            (guest, sync_ms)
        }
    };
    let ready_ms = ms(t0.elapsed());
    tracing::debug!(incoming_ms, sync_ms, ready_ms, "restored {}", p.runtime_id);
    vm::write_meta(&run_dir, &meta)?;
    let vm = Vm::new(run_dir, pid, qmp, meta, Some(guest), host.events.clone());
    *vm.restore_timings.lock() = Some(vm::RestoreTimings {
        vmm_ms: 0.0,
        incoming_ms,
        sync_ms,
        ready_ms,
        prestarted: false,
    });
    Ok(vm)
}

/// Snapshot a VM into `target` (an empty directory). The VM keeps running
/// (or stays paused) afterwards.
pub async fn snapshot(host: &Host, vm: &Vm, target: &Path) -> Result<SnapshotArtifact> {
    let _op = vm.op.lock().await;
    vm.ensure_live().or_else(|e| match vm.life() {
        vm::Life::Paused => Ok(()),
        _ => Err(e),
    })?;
    let was_running = matches!(vm.life(), vm::Life::Running);
    let meta = vm.meta();
    tokio::fs::create_dir_all(target)
        .await
        .map_err(io(format!("create {}", target.display())))?;
    if was_running {
        vm.qmp.stop().await?;
    }
    let res = snapshot_stopped(host, vm, &meta, target).await;
    if was_running {
        // Resume whatever happened: a failed snapshot must not leave the VM frozen.
        let resumed = vm.qmp.cont().await;
        if res.is_ok() {
            resumed?;
        }
    }
    res?;
    let sm = SnapMeta {
        format: SNAPSHOT_FORMAT,
        image: meta.image.clone(),
        base: meta.base.clone(),
        accel: meta.accel,
        vcpus: meta.vcpus,
        mem_mib: meta.mem_mib,
        disk_mib: meta.disk_mib,
        source_runtime: meta.runtime_id.clone(),
        created_at: chrono::Utc::now(),
    };
    let json = serde_json::to_vec_pretty(&sm).map_err(|e| Error::internal(e.to_string()))?;
    tokio::fs::write(target.join(SNAP_META), json)
        .await
        .map_err(io("write snapshot manifest"))?;
    let size = [SNAP_RAM, SNAP_STATE, SNAP_DISK, SNAP_META]
        .iter()
        .map(|f| disk::allocated_bytes(&target.join(f)))
        .sum();
    let mut data = std::collections::BTreeMap::new();
    data.insert("format".into(), serde_json::json!("microvm-v1"));
    data.insert("image".into(), serde_json::json!(meta.image));
    data.insert("accel".into(), serde_json::json!(meta.accel.as_str()));
    data.insert("vcpus".into(), serde_json::json!(meta.vcpus));
    data.insert("memory_mib".into(), serde_json::json!(meta.mem_mib));
    Ok(SnapshotArtifact {
        size_bytes: size,
        kind: "vm".into(),
        data,
    })
}

async fn snapshot_stopped(host: &Host, vm: &Vm, meta: &VmMeta, target: &Path) -> Result<()> {
    let state = target.join(SNAP_STATE);
    let to_file = |p: &Path| format!("exec:cat > {}", shell_quote(&p.display().to_string()));
    if meta.ram_shared {
        vm.qmp
            .set_migration_capabilities(&[("x-ignore-shared", true)])
            .await?;
        vm.qmp.migrate(&to_file(&state)).await?;
        vm.qmp.wait_migration(Duration::from_secs(120)).await?;
        disk::sparse_copy(&meta.ram_file, &target.join(SNAP_RAM)).await?;
        disk::freeze_overlay(&meta.disk, &target.join(SNAP_DISK), &meta.base).await?;
        return Ok(());
    }
    // Private copy-on-write RAM: migrate everything straight into a paused
    // helper QEMU whose RAM is a new `share=on` file (no full stream written
    // to disk and read back), then save the helper's device state only.
    let frozen = target.join(SNAP_DISK);
    let (disk_res, ram_res) = tokio::join!(
        disk::freeze_overlay(&meta.disk, &frozen, &meta.base),
        rehome_ram(host, vm, meta, target)
    );
    disk_res?;
    ram_res
}

/// Move the RAM of `vm` (stopped) into `target/ram` through a helper QEMU
/// started with `-incoming defer -S`, then write `target/state` with
/// `x-ignore-shared` from the helper.
///
/// The helper's RAM file is in the RAM directory (`/dev/shm`), like a
/// cold-booted VM's, and is sparse-copied into the snapshot at the end: the
/// incoming side reads every page it is sent (zero pages too), and on a
/// disk file system each of those faults went through the file system's
/// page-fault and block-allocation paths (most of the helper's time).
async fn rehome_ram(host: &Host, vm: &Vm, meta: &VmMeta, target: &Path) -> Result<()> {
    let key = new_key();
    let run_dir = host.vms_dir().join(format!("{key}-helper"));
    let ram_file = host.ram_dir.join(format!("godel-{key}-helper.ram"));
    tokio::fs::create_dir_all(&run_dir)
        .await
        .map_err(io("create helper dir"))?;
    let mut pid = None;
    let res = async {
        let spec = LaunchSpec {
            qemu: host.qemu.clone(),
            accel: meta.accel,
            vcpus: meta.vcpus,
            mem_mib: meta.mem_mib,
            boot: None,
            ram_file: ram_file.clone(),
            ram_shared: true,
            // The helper never runs the guest: it needs the same devices
            // (a virtio-blk of the same size), not the disk's data, so a
            // throw-away overlay on the image base will do.
            disk: Some(run_dir.join("disk.qcow2")),
            run_dir: run_dir.clone(),
            incoming: true,
            start_paused: true,
            name: format!("godel-vm-{key}-helper"),
        };
        disk::create_overlay(
            &run_dir.join("disk.qcow2"),
            &meta.base,
            "raw",
            meta.disk_mib,
        )
        .await?;
        pid = Some(host.launcher.launch(&spec).await?);
        let qmp = Qmp::connect(&launch::qmp_socket(&run_dir), Duration::from_secs(10)).await?;
        let sock = run_dir.join("mig.sock");
        let uri = format!("unix:{}", sock.display());
        qmp.migrate_incoming(&uri).await?;
        vm.qmp
            .set_migration_capabilities(&[("x-ignore-shared", false)])
            .await?;
        vm.qmp.migrate(&uri).await?;
        vm.qmp.wait_migration(Duration::from_secs(300)).await?;
        qmp.wait_incoming(Duration::from_secs(300)).await?;
        qmp.set_migration_capabilities(&[("x-ignore-shared", true)])
            .await?;
        let state = target.join(SNAP_STATE);
        qmp.migrate(&format!(
            "exec:cat > {}",
            shell_quote(&state.display().to_string())
        ))
        .await?;
        qmp.wait_migration(Duration::from_secs(60)).await?;
        qmp.quit().await?;
        qmp.closed().await;
        disk::sparse_copy(&ram_file, &target.join(SNAP_RAM)).await
    }
    .await;
    abort(&run_dir, pid, Some(&ram_file)).await;
    res
}
