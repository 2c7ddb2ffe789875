//! `MicrovmProvider`: the `microvm` runtime behind `godel_core::RuntimeProvider`.
//!
//! How a call flows:
//! 1. `spawn` claims a warm-pool VM when the spec has the pool's shape,
//!    otherwise cold-boots one ([`crate::machine::cold_boot`]).
//! 2. exec and file calls go to the guest agent over its virtio-serial
//!    channel ([`godel_guest::GuestClient`]); the spec's environment is
//!    merged under each exec's own.
//! 3. `snapshot`/`restore` go through [`crate::machine`]; a fork is N
//!    concurrent restores, each with its own QEMU, overlay and identity.
//! 4. The handle returned to the control plane names the VM directory, so
//!    `adopt` can find the QEMU again (pid file + process name + QMP socket)
//!    after a daemon restart: QEMU runs in its own session and outlives us.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use godel_core::{
    Availability, Capabilities, Error, EventSink, ExecHandle, ExecRequest, FileEntry, Result,
    RuntimeProvider, SandboxStatus, SnapshotArtifact, SnapshotInfo, SnapshotRequest,
    SnapshotTarget, SpawnSpec, Spawned, null_sink,
};
use godel_image::ImageInfo;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::accel::{AccelVerdict, detect_accel};
use crate::launch::{self, Accel, Launcher, QemuLauncher};
use crate::machine::{self, Host, VmParams};
use crate::pool::{PoolShape, WarmPool};
use crate::vm::{self, Life, Vm};
use crate::vmm::{self as vmm_mod, VmmPool};

mod inner;

/// Default guest memory when the spec gives none.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Smallest guest memory accepted.
pub const MIN_MEMORY_MIB: u64 = 128;
/// Most vCPUs per VM.
pub const MAX_VCPUS: u32 = 16;

/// How to build a [`MicrovmProvider`].
#[derive(Clone)]
pub struct MicrovmConfig {
    /// `$GODEL_HOME`: images under `images/`, VMs under `microvm/`.
    pub home: PathBuf,
    /// Image used when the spec names none.
    pub image: String,
    /// VMs kept ready in the warm pool (0 = off).
    pub warm_pool: usize,
    pub events: EventSink,
    /// Force an accelerator; `None` probes (see [`crate::accel`]).
    /// The environment variable `GODEL_MICROVM_ACCEL=kvm|tcg` also forces it.
    pub accel: Option<Accel>,
    /// `qemu-system-x86_64` to use (else looked up in `PATH`).
    pub qemu: Option<PathBuf>,
    /// Where cold-booted VMs keep their RAM file (default `/dev/shm` when
    /// writable, else `microvm/ram`).
    pub ram_dir: Option<PathBuf>,
    pub default_vcpus: u32,
    pub default_memory_mib: u64,
    /// How long a cold boot or restore may take to reach the guest agent.
    pub boot_timeout: Duration,
    /// How long `terminate` waits for a graceful guest power-off.
    pub shutdown_grace: Duration,
    /// Spare QEMU processes kept waiting per recently restored snapshot
    /// ([`crate::vmm`]; 0 = off). Each costs one idle QEMU (see docs/microvm.md).
    pub prestart_per_snapshot: usize,
    /// How many recently restored snapshots keep spares.
    pub prestart_snapshots: usize,
    /// Restores (and forks) made at once; more wait their turn. Under TCG a
    /// restoring guest's first replies are CPU-bound, so a fork of 50 on two
    /// cores finishes sooner paced than all at once.
    pub restore_concurrency: usize,
}

impl MicrovmConfig {
    /// Defaults for `$GODEL_HOME` = `home`: image `default`, no warm pool,
    /// 1 vCPU, 256 MiB, accelerator probed.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        MicrovmConfig {
            home: home.into(),
            image: godel_image::DEFAULT_IMAGE.to_string(),
            warm_pool: 0,
            events: null_sink(),
            accel: None,
            qemu: None,
            ram_dir: None,
            default_vcpus: 1,
            default_memory_mib: DEFAULT_MEMORY_MIB,
            boot_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_millis(500),
            prestart_per_snapshot: 1,
            prestart_snapshots: 4,
            restore_concurrency: default_restore_concurrency(),
        }
    }
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }
    pub fn with_warm_pool(mut self, size: usize) -> Self {
        self.warm_pool = size;
        self
    }
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = Some(accel);
        self
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: MicrovmConfig,
    launcher: Arc<dyn Launcher>,
    vms: Mutex<HashMap<String, Arc<Vm>>>,
    verdict: OnceCell<AccelVerdict>,
    tsc_khz: Option<u64>,
    pub(crate) pool: WarmPool,
    pub(crate) fill_lock: tokio::sync::Mutex<()>,
    pub(crate) vmms: VmmPool,
    restore_gate: tokio::sync::Semaphore,
}

/// The `microvm` runtime provider. Cheap to clone.
#[derive(Clone)]
pub struct MicrovmProvider {
    pub(crate) inner: Arc<Inner>,
}

fn root(home: &Path) -> PathBuf {
    home.join("microvm")
}

impl MicrovmProvider {
    /// Build the provider. Creates `$GODEL_HOME/microvm/`, stops VMs a dead
    /// daemon left in its warm pool, and (inside a Tokio runtime, when
    /// `warm_pool > 0`) starts the background refill.
    pub fn new(cfg: MicrovmConfig) -> Result<Self> {
        Self::with_launcher(cfg, Arc::new(QemuLauncher))
    }

    /// Like [`MicrovmProvider::new`] with another way to start QEMU.
    pub fn with_launcher(cfg: MicrovmConfig, launcher: Arc<dyn Launcher>) -> Result<Self> {
        let vms = root(&cfg.home).join("vms");
        std::fs::create_dir_all(&vms)
            .map_err(|e| Error::io(format!("create {}", vms.display()), &e))?;
        let ram_dir = cfg
            .ram_dir
            .clone()
            .unwrap_or_else(|| default_ram_dir(&root(&cfg.home)));
        crate::pool::reap_orphans(&vms, &ram_dir);
        for f in crate::pool::reap_ram_files(&ram_dir, Duration::from_secs(60)) {
            tracing::info!(file = %f.display(), "removed the RAM file of a VM that is gone");
        }
        let shape = PoolShape {
            image: cfg.image.clone(),
            vcpus: cfg.default_vcpus.max(1),
            mem_mib: cfg.default_memory_mib,
            disk_mib: None,
        };
        let pool = WarmPool::new(cfg.warm_pool, shape);
        let inner = Arc::new(Inner {
            launcher,
            vms: Mutex::new(HashMap::new()),
            verdict: OnceCell::new(),
            tsc_khz: crate::tsc::host_tsc_khz().or_else(godel_image::host_tsc_khz),
            pool,
            fill_lock: tokio::sync::Mutex::new(()),
            vmms: VmmPool::new(cfg.prestart_per_snapshot, cfg.prestart_snapshots),
            restore_gate: tokio::sync::Semaphore::new(cfg.restore_concurrency.max(1)),
            cfg,
        });
        if inner.cfg.warm_pool > 0 && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(crate::pool::refill_task(
                Arc::downgrade(&inner),
                inner.pool.wake.clone(),
            ));
            inner.pool.wake.notify_one();
        }
        Ok(MicrovmProvider { inner })
    }

    /// The warm pool (size 0 when off).
    pub fn pool(&self) -> &WarmPool {
        &self.inner.pool
    }

    /// Wait until the warm pool is full (or a refill fails).
    pub async fn fill_pool(&self) -> Result<()> {
        crate::pool::fill_pool(&self.inner).await
    }

    /// The accelerator verdict (probing once if needed).
    pub async fn accel_verdict(&self) -> Result<AccelVerdict> {
        let image = self.inner.image(None)?;
        Ok(self.inner.verdict(&image).await?.clone())
    }

    /// The host TSC frequency passed to guests as `tsc_early_khz`.
    pub fn tsc_khz(&self) -> Option<u64> {
        self.inner.tsc_khz
    }

    /// The live VM behind a runtime id (benchmarks read its pid).
    pub fn vm(&self, id: &str) -> Result<Arc<Vm>> {
        self.inner.get(id)
    }

    /// The pool of pre-started QEMU processes.
    pub fn vmms(&self) -> &VmmPool {
        &self.inner.vmms
    }

    /// Start the spare QEMU processes of `snapshot` now and wait for them
    /// (restores of it then skip QEMU's start-up).
    pub async fn prepare_restores(&self, snapshot: &SnapshotInfo) -> Result<()> {
        let i = &self.inner;
        let deadline = tokio::time::Instant::now() + i.cfg.boot_timeout;
        loop {
            i.vmms.take_none(&snapshot.dir);
            refill_spares(i, &snapshot.dir).await?;
            // A background refill may still be starting one.
            if i.vmms.ready(&snapshot.dir) >= i.vmms.per_snapshot()
                || i.vmms.starting(&snapshot.dir) == 0
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop the spare QEMU processes of `snapshot`.
    pub async fn drop_spares(&self, snapshot: &SnapshotInfo) {
        for v in self.inner.vmms.drain(&snapshot.dir) {
            v.discard().await;
        }
    }

    /// Restores made at once (see [`MicrovmConfig::restore_concurrency`]).
    pub fn restore_concurrency(&self) -> usize {
        self.inner.cfg.restore_concurrency.max(1)
    }

    /// Stop the warm pool's VMs and forget (`stop_runtimes = false`) or stop
    /// every runtime. Daemon shutdown calls it with `false`: runtimes keep
    /// running and are adopted by the next daemon.
    pub async fn shutdown(&self, stop_runtimes: bool) {
        self.inner.pool.close();
        // Wait for an in-flight refill so it cannot add a VM after the drain.
        let _fill = self.inner.fill_lock.lock().await;
        let pooled = self.inner.pool.drain();
        for vm in pooled {
            vm.terminate(Duration::ZERO).await;
        }
        for v in self.inner.vmms.drain_all() {
            v.discard().await;
        }
        let vms: Vec<Arc<Vm>> = self.inner.vms.lock().drain().map(|(_, v)| v).collect();
        for vm in vms {
            if stop_runtimes {
                vm.terminate(self.inner.cfg.shutdown_grace).await;
            } else {
                vm.detach();
            }
        }
    }
}

/// Two restores per host core, at least four.
fn default_restore_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).max(4)
}

fn default_ram_dir(root: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok() {
        shm.to_path_buf()
    } else {
        root.join("ram")
    }
}

/// A guest hostname from a runtime id (`[a-z0-9-]`, at most 63 characters).
pub(crate) fn hostname_for(id: &str) -> String {
    let h: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if h.is_empty() { "godel".into() } else { h }
}

/// Refuse what this runtime cannot give yet instead of silently ignoring it.
fn check_supported(spec: &SpawnSpec) -> Result<()> {
    if spec.network.mode != godel_core::NetworkMode::None {
        return Err(Error::invalid(
            "microvm guests have no network device yet: use network mode none",
        ));
    }
    if !spec.volumes.is_empty() {
        return Err(Error::invalid(format!(
            "volume {:?}: runtime microvm does not mount host directories; use the worktree runtime for volumes",
            spec.volumes[0].name
        )));
    }
    Ok(())
}

fn merge_env(vm: &Vm, mut req: ExecRequest) -> ExecRequest {
    let base = vm.meta().env;
    for (k, v) in base {
        req.env.entry(k).or_insert(v);
    }
    req
}

#[async_trait]
impl RuntimeProvider for MicrovmProvider {
    fn name(&self) -> &str {
        "microvm"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            memory_snapshots: true,
            workspace_snapshots: false,
            fork: true,
            pause: true,
            network_policy: false,
            streaming_exec: true,
            stdin: true,
            resource_limits: true,
            isolation: "vm".into(),
            survives_daemon_restart: true,
            host_bound: true,
        }
    }

    async fn available(&self) -> Availability {
        let i = &self.inner;
        let qemu = match i.qemu() {
            Ok(q) => q,
            Err(e) => return Availability::no(e.message),
        };
        if !crate::disk::have_qemu_img() {
            return Availability::no(
                "qemu-img is not installed (Debian: apt-get install qemu-utils)",
            );
        }
        let version = launch::qemu_version(&qemu).await.unwrap_or_default();
        let image = match i.image(None) {
            Ok(img) => img,
            Err(e) => {
                return Availability::no(format!(
                    "{} (image {:?} missing: run `godel image build`)",
                    e.message, i.cfg.image
                ))
                .detail("qemu", version);
            }
        };
        let verdict = match i.verdict(&image).await {
            Ok(v) => v.clone(),
            Err(e) => return Availability::no(e.message),
        };
        Availability::yes(format!(
            "QEMU {version}, image {} ({}), accelerator {}: {}",
            image.name, image.build_id, verdict.accel, verdict.reason
        ))
        .detail("qemu", version)
        .detail("image", image.name)
        .detail("accel", verdict.accel)
        .detail("accel_reason", verdict.reason)
        .detail("warm_pool", i.cfg.warm_pool.to_string())
    }

    async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned> {
        spec.validate()?;
        check_supported(spec)?;
        let i = &self.inner;
        if i.vms.lock().contains_key(id) {
            return Err(Error::conflict(format!("runtime {id} already exists")));
        }
        let shape = i.shape(spec)?;
        if i.pool.size() > 0
            && &shape == i.pool.shape()
            && let Some(vm) = crate::pool::claim(i, id, spec).await
        {
            return Ok(i.register(id, vm));
        }
        let params = i.params(id, &shape, spec).await?;
        let image = i.image(Some(&shape.image))?;
        let mut host = i.host().await?;
        if let Some(t) = spec.timeout_secs {
            host.boot_timeout = Duration::from_secs(t.max(1));
        }
        let vm = machine::cold_boot(&host, &image, &params)
            .await
            .map_err(|e| e.with_runtime(id))?;
        Ok(i.register(id, vm))
    }

    async fn adopt(&self, id: &str, spec: &SpawnSpec, handle: &Spawned) -> Result<Option<Spawned>> {
        let _ = spec;
        let i = &self.inner;
        if let Ok(vm) = i.get(id) {
            return Ok(Some(Spawned {
                handle: handle.handle.clone(),
                pid: Some(vm.pid),
            }));
        }
        let Some(dir) = handle.handle.get("vm_dir").and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        let dir = PathBuf::from(dir);
        let Ok(meta) = vm::read_meta(&dir) else {
            return Ok(None);
        };
        let pid = launch::read_pid_file(&launch::pid_file(&dir)).await.ok();
        let alive = pid.filter(|p| vm::pid_alive(*p) && vm::pid_is_vm(*p, &meta.process_name()));
        let Some(pid) = alive else {
            if meta.ram_shared {
                let _ = tokio::fs::remove_file(&meta.ram_file).await;
            }
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Ok(None);
        };
        let qmp = match crate::qmp::Qmp::connect(&launch::qmp_socket(&dir), Duration::from_secs(5))
            .await
        {
            Ok(q) => q,
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "QEMU {pid} of runtime {id} is alive but its QMP socket does not answer: {}",
                    e.message
                )));
            }
        };
        let status = qmp.status().await?;
        let vm = Vm::new(dir, pid, qmp, meta, None, i.cfg.events.clone());
        match status.as_str() {
            "running" => {
                if let Err(e) = vm.guest().await {
                    vm.terminate(Duration::ZERO).await;
                    tracing::warn!("runtime {id}: guest does not answer after adopt: {e}");
                    return Ok(None);
                }
            }
            _ => vm.set_life(Life::Paused),
        }
        Ok(Some(i.register(id, vm)))
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        let vm = self.inner.vms.lock().remove(id);
        if let Some(vm) = vm {
            let _op = vm.op.lock().await;
            vm.terminate(self.inner.cfg.shutdown_grace).await;
        }
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<SandboxStatus> {
        let vm = self.inner.get(id)?;
        let meta = vm.meta();
        let mut st = SandboxStatus::new(vm.state());
        st.pid = Some(vm.pid);
        if let Life::Dead(r) = vm.life() {
            st.reason = Some(r);
        }
        let d = &mut st.details;
        d.insert("accel".into(), json!(meta.accel.as_str()));
        d.insert("qmp_socket".into(), json!(launch::qmp_socket(&vm.run_dir)));
        d.insert(
            "agent_socket".into(),
            json!(launch::agent_socket(&vm.run_dir)),
        );
        d.insert(
            "console_log".into(),
            json!(launch::console_log(&vm.run_dir)),
        );
        d.insert("vm_dir".into(), json!(vm.run_dir));
        d.insert("memory_file".into(), json!(meta.ram_file));
        d.insert("memory_shared".into(), json!(meta.ram_shared));
        d.insert("disk".into(), json!(meta.disk));
        d.insert("vcpus".into(), json!(meta.vcpus));
        d.insert("memory_mib".into(), json!(meta.mem_mib));
        d.insert("image".into(), json!(meta.image));
        if let Some(b) = &meta.snapshot_base {
            d.insert("snapshot_base".into(), json!(b));
        }
        if let Some(p) = vm::pss_bytes(vm.pid) {
            d.insert("host_pss_bytes".into(), json!(p));
        }
        if matches!(vm.life(), Life::Running)
            && let Ok(c) = vm.guest().await
            && let Ok(Ok(u)) = tokio::time::timeout(Duration::from_secs(2), c.usage()).await
        {
            let mut usage = u.to_resource_usage();
            if let Some(cpu) = vm::cpu_seconds(vm.pid) {
                st.details.insert("host_cpu_seconds".into(), json!(cpu));
            }
            usage.disk_bytes = u.disk_used_bytes;
            st.usage = Some(usage);
        }
        Ok(st)
    }

    async fn shutdown(&self) {
        MicrovmProvider::shutdown(self, false).await;
    }

    async fn list(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.inner.vms.lock().keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let vm = self.inner.get(id)?;
        let _op = vm.op.lock().await;
        match vm.life() {
            Life::Paused => Ok(()),
            Life::Running => {
                vm.qmp.stop().await?;
                vm.set_life(Life::Paused);
                Ok(())
            }
            _ => Err(vm.ensure_live().unwrap_err_or_conflict(id)),
        }
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let vm = self.inner.get(id)?;
        let _op = vm.op.lock().await;
        match vm.life() {
            Life::Running => Ok(()),
            Life::Paused => {
                vm.qmp.cont().await?;
                vm.set_life(Life::Running);
                Ok(())
            }
            _ => Err(vm.ensure_live().unwrap_err_or_conflict(id)),
        }
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        let vm = self.inner.live(id)?;
        let req = merge_env(&vm, req);
        vm.guest()
            .await?
            .exec(req)
            .await
            .map_err(|e| e.with_runtime(id))
    }

    /// Through the guest agent: a bridge exec'd in the guest connects to
    /// the port on the guest's loopback (the VM has no network device).
    async fn connect_port(&self, id: &str, port: u16) -> Result<godel_core::PortStream> {
        godel_core::port_exec::via_exec(self, id, port).await
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes> {
        self.inner.live(id)?.guest().await?.read_file(path).await
    }

    async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()> {
        self.inner
            .live(id)?
            .guest()
            .await?
            .write_file(path, data)
            .await
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        self.inner.live(id)?.guest().await?.list_dir(path).await
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileEntry> {
        self.inner.live(id)?.guest().await?.stat(path).await
    }

    async fn make_dir(&self, id: &str, path: &str) -> Result<()> {
        self.inner.live(id)?.guest().await?.make_dir(path).await
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        self.inner.live(id)?.guest().await?.rename(from, to).await
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.inner
            .live(id)?
            .guest()
            .await?
            .remove(path, recursive)
            .await
    }

    async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()> {
        self.inner
            .live(id)?
            .guest()
            .await?
            .upload_tar(path, tar)
            .await
    }

    async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes> {
        self.inner.live(id)?.guest().await?.download_tar(path).await
    }

    async fn snapshot(
        &self,
        id: &str,
        req: &SnapshotRequest,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact> {
        let _ = req;
        let vm = self.inner.get(id)?;
        let host = self.inner.host().await?;
        machine::snapshot(&host, &vm, &target.dir)
            .await
            .map_err(|e| e.with_runtime(id))
    }

    async fn restore(
        &self,
        id: &str,
        snapshot: &SnapshotInfo,
        spec: &SpawnSpec,
    ) -> Result<Spawned> {
        let i = &self.inner;
        if i.vms.lock().contains_key(id) {
            return Err(Error::conflict(format!("runtime {id} already exists")));
        }
        let sm = machine::read_snap_meta(&snapshot.dir)?;
        let host = i.host().await?;
        let params = VmParams {
            runtime_id: id.to_string(),
            hostname: hostname_for(id),
            accel: sm.accel,
            vcpus: sm.vcpus,
            mem_mib: sm.mem_mib,
            disk_mib: sm.disk_mib,
            env: spec.env.clone(),
        };
        let _turn = i
            .restore_gate
            .acquire()
            .await
            .map_err(|_| Error::unavailable("the microvm provider is shutting down"))?;
        let (spare, dead) = i.vmms.take(&snapshot.dir);
        for v in dead {
            v.discard().await;
        }
        let res = machine::restore_with(&host, &snapshot.dir, &params, spare).await;
        if i.vmms.per_snapshot() > 0 {
            let inner = self.inner.clone();
            let dir = snapshot.dir.clone();
            tokio::spawn(async move {
                if let Err(e) = refill_spares(&inner, &dir).await {
                    tracing::warn!("pre-starting QEMU for {}: {e}", dir.display());
                }
            });
        }
        let vm = res.map_err(|e| e.with_runtime(id))?;
        Ok(i.register(id, vm))
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotInfo) -> Result<()> {
        for v in self.inner.vmms.drain(&snapshot.dir) {
            v.discard().await;
        }
        let users: Vec<String> = self
            .inner
            .vms
            .lock()
            .iter()
            .filter(|(_, vm)| {
                vm.meta()
                    .snapshot_base
                    .is_some_and(|b| same_dir(&b, &snapshot.dir))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if users.is_empty() {
            Ok(())
        } else {
            Err(Error::conflict(format!(
                "snapshot {} backs the memory and disk of running runtimes {}: terminate them first",
                snapshot.id,
                users.join(", ")
            )))
        }
    }
}

/// Start the spares `snap` lacks (one at a time: they compete with the
/// restores for the CPU) and stop those of snapshots no longer recent.
async fn refill_spares(inner: &Inner, snap: &Path) -> Result<()> {
    let (want, evicted) = inner.vmms.plan_refill(snap);
    for v in evicted {
        v.discard().await;
    }
    if want == 0 {
        return Ok(());
    }
    let started: Result<(crate::machine::Host, crate::machine::SnapMeta)> =
        async { Ok((inner.host().await?, machine::read_snap_meta(snap)?)) }.await;
    let (host, sm) = match started {
        Ok(x) => x,
        Err(e) => {
            for _ in 0..want {
                inner.vmms.arrived(snap, None);
            }
            return Err(e);
        }
    };
    let mut result = Ok(());
    for _ in 0..want {
        let v = if result.is_ok() {
            match vmm_mod::start(&host, snap, &sm).await {
                Ok(v) => Some(v),
                Err(e) => {
                    result = Err(e);
                    None
                }
            }
        } else {
            None
        };
        if let Some(v) = inner.vmms.arrived(snap, v) {
            v.discard().await;
        }
    }
    result
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

trait ErrOrConflict {
    fn unwrap_err_or_conflict(self, id: &str) -> Error;
}

impl ErrOrConflict for Result<()> {
    fn unwrap_err_or_conflict(self, id: &str) -> Error {
        match self {
            Err(e) => e,
            Ok(()) => Error::conflict(format!("runtime {id} is in no state to change")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::LaunchSpec;

    /// Records launches and fails them, as a QEMU that cannot start would.
    #[derive(Default)]
    struct FailingLauncher {
        seen: Mutex<Vec<LaunchSpec>>,
    }

    #[async_trait]
    impl Launcher for FailingLauncher {
        async fn launch(&self, spec: &LaunchSpec) -> Result<u32> {
            self.seen.lock().push(spec.clone());
            std::fs::write(launch::console_log(&spec.run_dir), "boot log line\n").unwrap();
            Err(Error::spawn("qemu failed to start: simulated"))
        }
    }

    fn fake_image(home: &Path) {
        let dir = home.join("images/default");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["vmlinux", "initrd.img", "rootfs.ext4"] {
            std::fs::write(dir.join(f), vec![0u8; 4096]).unwrap();
        }
        let art = |f: &str| json!({"path": dir.join(f), "sha256": "00", "size": 4096});
        let info = json!({
            "name": "default", "builder_version": 1, "build_id": "b1",
            "created_at": "2026-01-01T00:00:00Z",
            "kernel": art("vmlinux"), "kernel_format": "vmlinux-pvh",
            "kernel_bzimage": art("vmlinux"), "kernel_release": "6.1",
            "kernel_package": {"name": "k", "version": "1", "sha256": "00", "size": 1},
            "initrd": art("initrd.img"), "modules": [], "rootfs": art("rootfs.ext4"),
            "rootfs_size_mib": 1, "rootfs_contents": [], "agent_version": "0",
            "agent_sha256": "00", "cmdline": "console=ttyS0", "tsc_note": ""
        });
        std::fs::write(dir.join("image.json"), info.to_string()).unwrap();
    }

    #[tokio::test]
    async fn failed_launch_is_a_spawn_error_and_leaves_nothing_behind() {
        godel_testkit::require!(godel_testkit::Need::QemuImg);
        let home = tempfile::tempdir().unwrap();
        fake_image(home.path());
        let ram = home.path().join("ram");
        let mut cfg = MicrovmConfig::new(home.path()).with_accel(Accel::Tcg);
        cfg.qemu = Some("/bin/false".into());
        cfg.ram_dir = Some(ram.clone());
        let launcher = Arc::new(FailingLauncher::default());
        let p = MicrovmProvider::with_launcher(cfg, launcher.clone()).unwrap();
        let mut spec = SpawnSpec::default();
        spec.resources.memory = Some(godel_core::ByteQuantity(512 << 20));
        spec.resources.cpu = Some(godel_core::Cpu(1500));
        let e = p.spawn("rt-x", &spec).await.unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::SpawnError);
        assert!(e.message.contains("boot log line"), "{e}");
        let seen = launcher.seen.lock().clone();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!((s.vcpus, s.mem_mib, s.ram_shared), (2, 512, true));
        let cmdline = &s.boot.as_ref().unwrap().cmdline;
        assert!(cmdline.contains("godel.hostname=rt-x"), "{cmdline}");
        assert!(cmdline.contains("tsc_early_khz="), "{cmdline}");
        assert!(
            std::fs::read_dir(home.path().join("microvm/vms"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(std::fs::read_dir(&ram).unwrap().next().is_none());
        assert_eq!(p.list().await.unwrap(), Vec::<String>::new());
        // Unsupported requests are refused up front.
        let mut spec = SpawnSpec::default();
        spec.network.mode = godel_core::NetworkMode::Nat;
        let e = p.spawn("rt-y", &spec).await.unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
        let mut spec = SpawnSpec::default();
        spec.resources.memory = Some(godel_core::ByteQuantity(64 << 20));
        let e = p.spawn("rt-z", &spec).await.unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
    }

    #[test]
    fn hostnames_are_valid() {
        assert_eq!(hostname_for("rt-ABC_1"), "rt-abc-1");
        assert_eq!(hostname_for(&"x".repeat(100)).len(), 63);
        assert_eq!(hostname_for(""), "godel");
    }
}
