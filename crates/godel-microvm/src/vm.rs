//! One live VM: its QEMU process, QMP session, guest-agent connection,
//! on-disk layout and supervision.
//!
//! Layout: `$GODEL_HOME/microvm/vms/<key>/` holds `vm.json` (this VM's
//! [`VmMeta`]), `qemu.pid`, `qmp.sock`, `agent.sock`, `console.log` and the
//! root disk overlay `disk.qcow2`. The guest RAM file of a cold-booted VM
//! lives in the RAM directory (tmpfs when available) as `<key>.ram`; a
//! restored VM maps its snapshot's `ram` file privately instead.
//!
//! Supervision: a task waits for the QMP socket to close. If that happens
//! while nobody asked the VM to stop, QEMU died (killed, crashed, guest
//! powered off): the VM turns `error` with a reason and a `died` event goes
//! to the event sink.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use godel_core::{Error, Event, EventSink, Result, SandboxState};
use godel_guest::GuestClient;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::launch::{self, Accel};
use crate::qmp::Qmp;

/// What is persisted about a VM (`vm.json`), enough to re-adopt it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmMeta {
    /// Internal key: names the VM directory and the QEMU process.
    pub key: String,
    /// The runtime id it serves (`pool-<key>` while it waits in the warm pool).
    pub runtime_id: String,
    pub image: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub disk_mib: Option<u64>,
    pub ram_file: PathBuf,
    pub ram_shared: bool,
    pub disk: PathBuf,
    /// The image's read-only root file system (the bottom of the disk chain).
    pub base: PathBuf,
    /// The snapshot directory this VM was restored from (its RAM and disk depend on it).
    #[serde(default)]
    pub snapshot_base: Option<PathBuf>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl VmMeta {
    /// The QEMU process name, used to recognise the process on adopt.
    pub fn process_name(&self) -> String {
        format!("godel-vm-{}", self.key)
    }
}

/// Where the time of one restore went (milliseconds from the start of the
/// restore call; each field is cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreTimings {
    /// QEMU started and its QMP socket answered (≈0 for a pre-started VMM).
    pub vmm_ms: f64,
    /// The incoming migration finished and the vCPUs run.
    pub incoming_ms: f64,
    /// The guest agent answered the channel's sync.
    pub sync_ms: f64,
    /// The guest acknowledged `restored` (new entropy, clock, hostname): ready.
    pub ready_ms: f64,
    /// The QEMU process was taken from the pre-started VMM pool.
    pub prestarted: bool,
}

/// Where a VM is in its life, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Life {
    Running,
    Paused,
    /// QEMU is gone and nobody asked for it.
    Dead(String),
    Terminated,
}

/// A live VM.
pub struct Vm {
    pub run_dir: PathBuf,
    pub pid: u32,
    pub qmp: Qmp,
    meta: Mutex<VmMeta>,
    guest: tokio::sync::Mutex<Option<GuestClient>>,
    life: Mutex<Life>,
    stopping: AtomicBool,
    /// Serialises lifecycle operations (snapshot, pause, terminate) on this VM.
    pub op: tokio::sync::Mutex<()>,
    /// How the restore that made this VM spent its time (restored VMs only).
    pub restore_timings: Mutex<Option<RestoreTimings>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("run_dir", &self.run_dir)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Vm {
    /// Wrap a started QEMU and start supervising it.
    pub fn new(
        run_dir: PathBuf,
        pid: u32,
        qmp: Qmp,
        meta: VmMeta,
        guest: Option<GuestClient>,
        events: EventSink,
    ) -> Arc<Vm> {
        let vm = Arc::new(Vm {
            run_dir,
            pid,
            qmp,
            meta: Mutex::new(meta),
            guest: tokio::sync::Mutex::new(guest),
            life: Mutex::new(Life::Running),
            stopping: AtomicBool::new(false),
            op: tokio::sync::Mutex::new(()),
            restore_timings: Mutex::new(None),
        });
        let closed = vm.qmp.closed_signal();
        let weak: Weak<Vm> = Arc::downgrade(&vm);
        tokio::spawn(async move {
            let mut closed = closed;
            let _ = closed.wait_for(|c| *c).await;
            let Some(vm) = weak.upgrade() else {
                return;
            };
            vm.on_qemu_exit(&events);
        });
        vm
    }

    fn on_qemu_exit(&self, events: &EventSink) {
        if self.stopping.load(Ordering::SeqCst) {
            *self.life.lock() = Life::Terminated;
            return;
        }
        let tail = console_tail(&self.run_dir, 5);
        let reason = if tail.is_empty() {
            format!("QEMU process {} exited unexpectedly", self.pid)
        } else {
            format!(
                "QEMU process {} exited unexpectedly; console: {}",
                self.pid,
                tail.replace('\n', " | ")
            )
        };
        tracing::warn!(pid = self.pid, "{reason}");
        *self.life.lock() = Life::Dead(reason.clone());
        let id = self.runtime_id();
        if !id.starts_with("pool-") {
            events(
                Event::new(godel_core::EventKind::Died)
                    .runtime(id)
                    .data(serde_json::json!({"pid": self.pid, "reason": reason})),
            );
        }
    }

    pub fn meta(&self) -> VmMeta {
        self.meta.lock().clone()
    }

    pub fn update_meta(&self, f: impl FnOnce(&mut VmMeta)) -> Result<()> {
        let meta = {
            let mut m = self.meta.lock();
            f(&mut m);
            m.clone()
        };
        write_meta(&self.run_dir, &meta)
    }

    pub fn runtime_id(&self) -> String {
        self.meta.lock().runtime_id.clone()
    }

    pub fn life(&self) -> Life {
        self.life.lock().clone()
    }

    pub fn set_life(&self, l: Life) {
        let mut cur = self.life.lock();
        if matches!(*cur, Life::Running | Life::Paused) {
            *cur = l;
        }
    }

    /// The runtime state this VM is in.
    pub fn state(&self) -> SandboxState {
        match self.life() {
            Life::Running => SandboxState::Running,
            Life::Paused => SandboxState::Paused,
            Life::Dead(_) => SandboxState::Error,
            Life::Terminated => SandboxState::Terminated,
        }
    }

    /// Fail unless the VM can take exec and file calls.
    pub fn ensure_live(&self) -> Result<()> {
        match self.life() {
            Life::Running => Ok(()),
            Life::Paused => Err(Error::conflict(format!(
                "runtime {} is paused; resume it first",
                self.runtime_id()
            ))),
            Life::Dead(r) => Err(Error::unavailable(r).retryable(false)),
            Life::Terminated => Err(Error::not_found(format!(
                "runtime {} is terminated",
                self.runtime_id()
            ))),
        }
    }

    /// The guest connection, reconnecting (and re-syncing) if it broke.
    pub async fn guest(&self) -> Result<GuestClient> {
        self.ensure_live()?;
        let mut g = self.guest.lock().await;
        if let Some(c) = g.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        *g = None;
        let c = GuestClient::connect(launch::agent_socket(&self.run_dir), Duration::from_secs(10))
            .await
            .map_err(|e| e.with_runtime(self.runtime_id()))?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Drop the guest connection (before a snapshot's RAM copy, or on detach).
    pub async fn drop_guest(&self) {
        *self.guest.lock().await = None;
    }

    /// Stop the VM: graceful guest power-off within `grace`, then QMP `quit`,
    /// then SIGKILL. Removes the VM directory and its private RAM file.
    pub async fn terminate(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        if !self.qmp.is_closed() && grace > Duration::ZERO {
            let c = self.guest.lock().await.clone();
            if let Some(c) = c
                && !c.is_closed()
                && matches!(self.life(), Life::Running)
            {
                let _ = tokio::time::timeout(grace, c.shutdown(true)).await;
                let _ = tokio::time::timeout(grace, self.qmp.closed()).await;
            }
        }
        if !self.qmp.is_closed() {
            let _ = self.qmp.quit().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), self.qmp.closed()).await;
        }
        // QEMU unlinks its sockets and pid file as it exits: let it finish
        // before the directory goes, killing it if it lingers.
        for i in 0..300 {
            if !pid_alive(self.pid) {
                break;
            }
            if i == 100 {
                kill9(self.pid);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *self.life.lock() = Life::Terminated;
        *self.guest.lock().await = None;
        let meta = self.meta();
        if meta.ram_shared {
            let _ = tokio::fs::remove_file(&meta.ram_file).await;
        }
        for _ in 0..3 {
            match tokio::fs::remove_dir_all(&self.run_dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => break,
            }
        }
    }

    /// Forget the VM without stopping it (daemon shutdown): the supervisor
    /// will not report the closing connections as a death.
    pub fn detach(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// Write `vm.json` atomically.
pub fn write_meta(run_dir: &Path, meta: &VmMeta) -> Result<()> {
    let p = run_dir.join("vm.json");
    let tmp = run_dir.join("vm.json.tmp");
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(&tmp, json)
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| Error::io(format!("write {}", p.display()), &e))
}

/// Read `vm.json`.
pub fn read_meta(run_dir: &Path) -> Result<VmMeta> {
    let p = run_dir.join("vm.json");
    let text = std::fs::read(&p).map_err(|e| Error::io(format!("read {}", p.display()), &e))?;
    serde_json::from_slice(&text).map_err(|e| Error::internal(format!("{}: {e}", p.display())))
}

/// The last `n` non-empty lines of the VM's serial console.
pub fn console_tail(run_dir: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(launch::console_log(run_dir)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// Whether process `pid` is the QEMU named `name` (guards against pid reuse).
pub fn pid_is_vm(pid: u32, name: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg == name.as_bytes()))
        .unwrap_or(false)
}

/// SIGKILL a process.
pub fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Proportional set size of a process in bytes (`/proc/PID/smaps_rollup`).
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Resident set size of a process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU seconds a process has used (user + system).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((ut + st) / hz)
}
