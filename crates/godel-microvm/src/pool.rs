//! The warm pool: VMs restored from a template snapshot and kept ready, so a
//! `spawn` of the pool's shape claims one in milliseconds instead of cold
//! booting (seconds under TCG).
//!
//! 1. The first fill cold-boots one VM of the pool's shape and snapshots it
//!    into `$GODEL_HOME/microvm/templates/<image>-<build>-<accel>-<vcpus>c-<mem>m/`
//!    (published by an atomic rename, reused by later daemons).
//! 2. Pool VMs are restores of that template (~60 ms each under TCG, and
//!    cheap in memory: their RAM maps the template's file copy-on-write).
//!    They wait running, idle, under the runtime id `pool-<key>`.
//! 3. A claim pops one, tells the guest `restored(entropy, time, hostname)`
//!    so it takes the new runtime's identity and fresh randomness, and wakes
//!    the background refill.
//! 4. Templates of older image builds are deleted once no VM (live or
//!    waiting for adoption) maps their files ([`gc_templates`]).
//! 5. Pool VMs are not known to the control plane: they are stopped when the
//!    provider shuts down, and reaped at start-up if a daemon died with some.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use godel_core::{Error, Result, SpawnSpec};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::launch;
use crate::machine;
use crate::provider::{Inner, hostname_for};
use crate::vm::{self, Vm};

/// The VM shape a pool serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PoolShape {
    pub image: String,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: Option<u64>,
}

/// Counters of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub size: usize,
    pub ready: usize,
    pub claims: u64,
    /// Spawns of the pool's shape that found the pool empty.
    pub misses: u64,
    pub refills: u64,
    pub refill_errors: u64,
}

/// K ready VMs of one shape.
pub struct WarmPool {
    size: usize,
    shape: PoolShape,
    ready: Mutex<VecDeque<Arc<Vm>>>,
    template: Mutex<Option<PathBuf>>,
    /// Wakes the refill task.
    pub(crate) wake: Arc<Notify>,
    /// Wakes waiters of `fill`.
    pub(crate) filled: Notify,
    closed: std::sync::atomic::AtomicBool,
    claims: AtomicU64,
    misses: AtomicU64,
    refills: AtomicU64,
    refill_errors: AtomicU64,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("shape", &self.shape)
            .field("stats", &self.stats())
            .finish()
    }
}

impl WarmPool {
    /// A pool keeping `size` VMs of `shape` (0 = off).
    pub fn new(size: usize, shape: PoolShape) -> Self {
        WarmPool {
            size,
            shape,
            ready: Mutex::new(VecDeque::new()),
            template: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            filled: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            claims: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refills: AtomicU64::new(0),
            refill_errors: AtomicU64::new(0),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn shape(&self) -> &PoolShape {
        &self.shape
    }

    /// How many VMs wait ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().len()
    }

    /// Whether the pool is full.
    pub fn is_full(&self) -> bool {
        self.ready() >= self.size
    }

    /// Take a ready VM (dead ones are dropped on the way). The caller wakes
    /// the refill once its claim is done, so the refill's QEMU start does not
    /// compete with the claim for the CPU.
    pub fn take(&self) -> Option<Arc<Vm>> {
        let vm = loop {
            let next = self.ready.lock().pop_front();
            match next {
                Some(vm) if vm.ensure_live().is_ok() => break Some(vm),
                Some(_) => continue,
                None => break None,
            }
        };
        match vm {
            Some(_) => self.claims.fetch_add(1, Ordering::Relaxed),
            None => {
                self.wake.notify_one();
                self.misses.fetch_add(1, Ordering::Relaxed)
            }
        };
        vm
    }

    pub(crate) fn push(&self, vm: Arc<Vm>) {
        self.ready.lock().push_back(vm);
        self.refills.fetch_add(1, Ordering::Relaxed);
        self.filled.notify_waiters();
    }

    pub(crate) fn refill_failed(&self) {
        self.refill_errors.fetch_add(1, Ordering::Relaxed);
        self.filled.notify_waiters();
    }

    /// Stop refilling for good (provider shutdown).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Remove every ready VM (to stop them).
    pub(crate) fn drain(&self) -> Vec<Arc<Vm>> {
        self.ready.lock().drain(..).collect()
    }

    pub(crate) fn template(&self) -> Option<PathBuf> {
        self.template.lock().clone()
    }

    pub(crate) fn set_template(&self, dir: PathBuf) {
        *self.template.lock() = Some(dir);
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            ready: self.ready(),
            claims: self.claims.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            refills: self.refills.load(Ordering::Relaxed),
            refill_errors: self.refill_errors.load(Ordering::Relaxed),
        }
    }
}

/// Stop VMs of a dead daemon's warm pool, spare VMMs, template builds and
/// snapshot helpers (whose RAM file is `godel-<dir name>.ram` in `ram_dir`).
pub(crate) fn reap_orphans(vms_dir: &Path, ram_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(vms_dir) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = vm::read_meta(&dir).ok();
        let internal = match &meta {
            Some(m) => {
                m.runtime_id.starts_with("pool-")
                    || m.runtime_id.starts_with("template-")
                    || m.runtime_id.starts_with(crate::vmm::SPARE_PREFIX)
            }
            None => name.ends_with("-helper"),
        };
        if !internal {
            continue;
        }
        let pname = match &meta {
            Some(m) => m.process_name(),
            None => format!("godel-vm-{name}"),
        };
        if let Ok(pid) = std::fs::read_to_string(launch::pid_file(&dir))
            && let Ok(pid) = pid.trim().parse::<u32>()
            && vm::pid_is_vm(pid, &pname)
        {
            vm::kill9(pid);
        }
        match &meta {
            Some(m) if m.ram_shared => {
                let _ = std::fs::remove_file(&m.ram_file);
            }
            Some(_) => {}
            None => {
                let _ = std::fs::remove_file(ram_dir.join(format!("godel-{name}.ram")));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Remove `godel-*.ram` files in `ram_dir` that no process maps or holds
/// open and that are older than `min_age`: RAM files of VMs whose QEMU died
/// with their daemon (SIGKILL) before anyone could remove them. `ram_dir`
/// (`/dev/shm`) is shared by every godel on the host, so a file is only
/// garbage when no QEMU uses it; the age keeps a VM starting now safe.
/// Returns the files removed.
pub(crate) fn reap_ram_files(ram_dir: &Path, min_age: Duration) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(ram_dir) else {
        return Vec::new();
    };
    let old: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("godel-") && name.ends_with(".ram")
        })
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= min_age))
        })
        .map(|e| e.path())
        .collect();
    if old.is_empty() {
        return old;
    }
    let used = ram_files_in_use(ram_dir);
    old.into_iter()
        .filter(|p| !used.contains(p))
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

/// Paths under `dir` that some process maps or has open.
fn ram_files_in_use(dir: &Path) -> std::collections::HashSet<PathBuf> {
    let mut used = std::collections::HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return used;
    };
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(maps) = std::fs::read_to_string(p.path().join("maps")) {
            used.extend(maps.lines().filter_map(|l| mapped_path(l, dir)));
        }
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path())
                    && target.starts_with(dir)
                {
                    used.insert(target);
                }
            }
        }
    }
    used
}

/// The file under `dir` a `/proc/PID/maps` line maps, if any.
fn mapped_path(line: &str, dir: &Path) -> Option<PathBuf> {
    let path = line.split_whitespace().nth(5)?;
    let path = Path::new(path);
    path.starts_with(dir).then(|| path.to_path_buf())
}

/// Claim a warm-pool VM for `id`, if the pool has one.
pub(crate) async fn claim(inner: &Inner, id: &str, spec: &SpawnSpec) -> Option<Arc<Vm>> {
    while let Some(vm) = inner.pool.take() {
        let c = match vm.guest().await {
            Ok(c) => c,
            Err(_) => {
                vm.terminate(Duration::ZERO).await;
                continue;
            }
        };
        let entropy: [u8; 64] = rand::random();
        let ok = c
            .restored(
                &entropy,
                std::time::SystemTime::now(),
                Some(&hostname_for(id)),
            )
            .await
            .is_ok()
            && vm
                .update_meta(|m| {
                    m.runtime_id = id.to_string();
                    m.env = spec.env.clone();
                })
                .is_ok();
        inner.pool.wake.notify_one();
        if ok {
            return Some(vm);
        }
        vm.terminate(Duration::ZERO).await;
    }
    None
}

async fn ensure_template(inner: &Inner) -> Result<PathBuf> {
    if let Some(t) = inner.pool.template() {
        return Ok(t);
    }
    let shape = inner.pool.shape().clone();
    let image = inner.image(Some(&shape.image))?;
    let accel = inner.verdict(&image).await?.to_accel();
    let host = inner.host().await?;
    let name = format!(
        "{}-{}-{}-{}c-{}m",
        image.name,
        image.build_id,
        accel.as_str(),
        shape.vcpus,
        shape.mem_mib
    );
    let dir = host.root.join("templates").join(&name);
    if machine::read_snap_meta(&dir).is_ok() {
        inner.pool.set_template(dir.clone());
        gc_templates(&host.root, &dir);
        return Ok(dir);
    }
    let staging = host
        .root
        .join("templates")
        .join(format!(".staging-{name}-{}", std::process::id()));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let mut params = inner
        .params("template-build", &shape, &SpawnSpec::default())
        .await?;
    params.hostname = "godel".into();
    let vm = machine::cold_boot(&host, &image, &params).await?;
    let res = machine::snapshot(&host, &vm, &staging).await;
    vm.terminate(Duration::ZERO).await;
    res?;
    tokio::fs::rename(&staging, &dir)
        .await
        .map_err(|e| Error::io("publish template", &e))?;
    inner.pool.set_template(dir.clone());
    gc_templates(&host.root, &dir);
    Ok(dir)
}

/// Remove templates other than `keep` that no VM on this host depends on
/// (every `vms/*/vm.json` is read, so VMs a new daemon has not adopted yet
/// keep theirs).
pub fn gc_templates(root: &Path, keep: &Path) -> usize {
    let mut used = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(root.join("vms")) {
        for e in rd.flatten() {
            if let Ok(m) = vm::read_meta(&e.path())
                && let Some(b) = m.snapshot_base
            {
                used.insert(b);
            }
        }
    }
    let mut removed = 0;
    let Ok(rd) = std::fs::read_dir(root.join("templates")) else {
        return 0;
    };
    for e in rd.flatten() {
        let p = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if hidden || p == keep || used.contains(&p) {
            continue;
        }
        if std::fs::remove_dir_all(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

pub(crate) async fn fill_pool(inner: &Inner) -> Result<()> {
    let _g = inner.fill_lock.lock().await;
    while !inner.pool.is_full() && !inner.pool.is_closed() {
        let r = async {
            let template = ensure_template(inner).await?;
            let host = inner.host().await?;
            let key = uuid::Uuid::new_v4().simple().to_string();
            let id = format!("pool-{}", &key[..12]);
            let shape = inner.pool.shape().clone();
            let mut params = inner.params(&id, &shape, &SpawnSpec::default()).await?;
            params.hostname = "godel".into();
            let vm = machine::restore(&host, &template, &params).await?;
            // The guest finishes `restored` after its reply (the hostname
            // file): one more round trip lets that happen here, not in a claim.
            if let Err(e) = vm.guest().await?.sync(Duration::from_secs(10)).await {
                vm.terminate(Duration::ZERO).await;
                return Err(e);
            }
            Ok(vm)
        }
        .await;
        match r {
            Ok(vm) => inner.pool.push(vm),
            Err(e) => {
                inner.pool.refill_failed();
                tracing::warn!("warm pool refill failed: {e}");
                return Err(e);
            }
        }
    }
    Ok(())
}

pub(crate) async fn refill_task(inner: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        if i.pool.is_closed() {
            return;
        }
        let failed = !i.pool.is_full() && fill_pool(&i).await.is_err();
        // Wait without holding the provider alive.
        drop(i);
        if failed {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_files_are_reaped_only_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        for n in ["godel-dead.ram", "godel-open.ram", "other.ram"] {
            std::fs::write(p(n), vec![0u8; 4096]).unwrap();
        }
        let _open = std::fs::File::open(p("godel-open.ram")).unwrap();
        // Too young: nothing goes.
        assert!(reap_ram_files(dir.path(), Duration::from_secs(3600)).is_empty());
        let gone = reap_ram_files(dir.path(), Duration::ZERO);
        assert_eq!(gone, vec![p("godel-dead.ram")]);
        for n in ["godel-open.ram", "other.ram"] {
            assert!(p(n).exists(), "{n} was removed");
        }
    }

    #[test]
    fn mapped_paths_are_read_from_maps_lines() {
        let dir = Path::new("/dev/shm");
        let line = "7f1c00000000-7f1c08000000 rw-s 00000000 00:1a 123   /dev/shm/godel-ab12.ram";
        assert_eq!(
            mapped_path(line, dir),
            Some(PathBuf::from("/dev/shm/godel-ab12.ram"))
        );
        let deleted = format!("{line} (deleted)");
        assert_eq!(
            mapped_path(&deleted, dir),
            Some(PathBuf::from("/dev/shm/godel-ab12.ram"))
        );
        assert_eq!(
            mapped_path("7f1c-7f1d r-xp 0 00:1a 9 /usr/lib/libc.so.6", dir),
            None
        );
    }

    #[test]
    fn template_gc_keeps_the_current_and_the_used() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("templates");
        for n in ["cur", "old-used", "old-free", ".staging-x"] {
            std::fs::create_dir_all(t.join(n)).unwrap();
        }
        let vm_dir = root.path().join("vms/k1");
        std::fs::create_dir_all(&vm_dir).unwrap();
        let meta = vm::VmMeta {
            key: "k1".into(),
            runtime_id: "rt-1".into(),
            image: "default".into(),
            accel: crate::launch::Accel::Tcg,
            vcpus: 1,
            mem_mib: 256,
            disk_mib: None,
            ram_file: t.join("old-used/ram"),
            ram_shared: false,
            disk: vm_dir.join("disk.qcow2"),
            base: "/base".into(),
            snapshot_base: Some(t.join("old-used")),
            env: Default::default(),
            created_at: chrono::Utc::now(),
        };
        vm::write_meta(&vm_dir, &meta).unwrap();
        assert_eq!(gc_templates(root.path(), &t.join("cur")), 1);
        assert!(
            t.join("cur").exists() && t.join("old-used").exists() && t.join(".staging-x").exists()
        );
        assert!(!t.join("old-free").exists());
    }
}
