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
//!      a restored VM (private copy-on-write RAM) migrates in full to a
//!      scratch stream, which a paused helper QEMU loads into a new
//!      `share=on` file and re-saves with `x-ignore-shared`: every snapshot
//!      has the same `ram` + `state` + `disk.qcow2` shape;
//!   3. the disk overlay is copied and rebased onto the image base;
//!   4. `cont` if it was running.
//! - **Restore**: QEMU with `-incoming defer`, RAM mapped `share=off` from
//!   the snapshot's `ram`, a new overlay on the snapshot's `disk.qcow2`,
//!   `x-ignore-shared` + `migrate-incoming exec:cat state`; then the guest
//!   is told `restored(entropy, time, hostname)` over a freshly synced channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use godel_core::{Error, EventSink, Result, SnapshotArtifact};
use godel_guest::GuestClient;
use godel_image::ImageInfo;
use serde::{Deserialize, Serialize};

use crate::disk;
use crate::launch::{self, Accel, Boot, LaunchSpec, Launcher};
use crate::qmp::{Qmp, shell_quote};
use crate::vm::{self, Vm, VmMeta};

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

fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn io(ctx: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(ctx, &e)
}

/// Kill a half-made VM and remove its files.
async fn abort(run_dir: &Path, pid: Option<u32>, ram: Option<&Path>) {
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

fn with_console(e: Error, run_dir: &Path) -> Error {
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
    let res = cold_boot_in(host, image, p, &key, &run_dir, &ram_file).await;
    match res {
        Ok(vm) => Ok(vm),
        Err((e, pid)) => {
            let e = with_console(e, &run_dir);
            abort(&run_dir, pid, Some(&ram_file)).await;
            Err(e)
        }
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

/// Restore a new VM from a snapshot directory.
pub async fn restore(host: &Host, snap_dir: &Path, p: &VmParams) -> Result<Arc<Vm>> {
    let sm = read_snap_meta(snap_dir)?;
    let key = new_key();
    let run_dir = host.vms_dir().join(&key);
    tokio::fs::create_dir_all(&run_dir)
        .await
        .map_err(io(format!("create {}", run_dir.display())))?;
    match restore_in(host, snap_dir, &sm, p, &key, &run_dir).await {
        Ok(vm) => Ok(vm),
        Err((e, pid)) => {
            let e = with_console(e, &run_dir);
            abort(&run_dir, pid, None).await;
            Err(e)
        }
    }
}

async fn restore_in(
    host: &Host,
    snap_dir: &Path,
    sm: &SnapMeta,
    p: &VmParams,
    key: &str,
    run_dir: &Path,
) -> std::result::Result<Arc<Vm>, (Error, Option<u32>)> {
    let disk = run_dir.join("disk.qcow2");
    disk::create_overlay(&disk, &snap_dir.join(SNAP_DISK), "qcow2", sm.disk_mib)
        .await
        .map_err(|e| (e, None))?;
    let meta = VmMeta {
        key: key.to_string(),
        runtime_id: p.runtime_id.clone(),
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
        env: p.env.clone(),
        created_at: chrono::Utc::now(),
    };
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
    let t0 = std::time::Instant::now();
    let pid = host.launcher.launch(&spec).await.map_err(|e| (e, None))?;
    let t_launch = t0.elapsed();
    let fail = |e: Error| (e, Some(pid));
    let qmp = Qmp::connect(&launch::qmp_socket(run_dir), Duration::from_secs(10))
        .await
        .map_err(fail)?;
    qmp.set_migration_capabilities(&[("x-ignore-shared", true)])
        .await
        .map_err(fail)?;
    let state = snap_dir.join(SNAP_STATE);
    let uri = format!("exec:cat {}", shell_quote(&state.display().to_string()));
    qmp.migrate_incoming(&uri).await.map_err(fail)?;
    let st = qmp
        .wait_incoming(Duration::from_secs(60))
        .await
        .map_err(fail)?;
    if st != "running" {
        qmp.cont().await.map_err(fail)?;
    }
    let t_incoming = t0.elapsed();
    let guest = GuestClient::connect(launch::agent_socket(run_dir), host.boot_timeout)
        .await
        .map_err(|e| {
            let e = Error::spawn(format!("restored guest did not answer: {}", e.message));
            (e, Some(pid))
        })?;
    let t_sync = t0.elapsed();
    let entropy: [u8; 64] = rand::random();
    guest
        .restored(&entropy, SystemTime::now(), Some(&p.hostname))
        .await
        .map_err(fail)?;
    tracing::debug!(
        launch_ms = t_launch.as_millis() as u64,
        incoming_ms = t_incoming.as_millis() as u64,
        sync_ms = t_sync.as_millis() as u64,
        ready_ms = t0.elapsed().as_millis() as u64,
        "restored {}",
        p.runtime_id
    );
    vm::write_meta(run_dir, &meta).map_err(fail)?;
    Ok(Vm::new(
        run_dir.to_path_buf(),
        pid,
        qmp,
        meta,
        Some(guest),
        host.events.clone(),
    ))
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
    // Private copy-on-write RAM: migrate everything, then re-home it in a shared file.
    let full = target.join("state.full");
    vm.qmp
        .set_migration_capabilities(&[("x-ignore-shared", false)])
        .await?;
    vm.qmp.migrate(&to_file(&full)).await?;
    vm.qmp.wait_migration(Duration::from_secs(300)).await?;
    disk::freeze_overlay(&meta.disk, &target.join(SNAP_DISK), &meta.base).await?;
    let res = rehome_ram(host, meta, target, &full).await;
    let _ = tokio::fs::remove_file(&full).await;
    res
}

/// Load a full migration stream into a paused helper QEMU whose RAM is a
/// new `share=on` file in `target`, then save its device state only.
async fn rehome_ram(host: &Host, meta: &VmMeta, target: &Path, full: &Path) -> Result<()> {
    let key = new_key();
    let run_dir = host.vms_dir().join(format!("{key}-helper"));
    tokio::fs::create_dir_all(&run_dir)
        .await
        .map_err(io("create helper dir"))?;
    let mut pid = None;
    let res = async {
        let disk = run_dir.join("disk.qcow2");
        disk::create_overlay(&disk, &target.join(SNAP_DISK), "qcow2", None).await?;
        let spec = LaunchSpec {
            qemu: host.qemu.clone(),
            accel: meta.accel,
            vcpus: meta.vcpus,
            mem_mib: meta.mem_mib,
            boot: None,
            ram_file: target.join(SNAP_RAM),
            ram_shared: true,
            disk: Some(disk),
            run_dir: run_dir.clone(),
            incoming: true,
            start_paused: true,
            name: format!("godel-vm-{key}-helper"),
        };
        pid = Some(host.launcher.launch(&spec).await?);
        let qmp = Qmp::connect(&launch::qmp_socket(&run_dir), Duration::from_secs(10)).await?;
        let uri = format!("exec:cat {}", shell_quote(&full.display().to_string()));
        qmp.migrate_incoming(&uri).await?;
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
        Ok(())
    }
    .await;
    abort(&run_dir, pid, None).await;
    res
}
