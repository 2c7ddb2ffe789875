//! `NamespaceIsolator` (isolation `sandbox`), the daemon half: allocates a
//! slot (uid range, /30, veth name), creates the cgroups, starts the init
//! (see [`crate::init`]) and talks to it over its control socket (see
//! [`crate::proto`]). Exec is a connect + one message; the init forks.
//!
//! Host state per sandbox, all removed by `destroy`:
//! - `<run_dir>/<id>/` (`ctl.sock`, the `root` mount point; `run_dir` is
//!   `/run/godel-sandbox` by default, a tmpfs, so nothing stale survives a reboot);
//! - `<run_dir>/slots/<n>` (holds the id; slot `n` owns host uids
//!   `uid_base + n*65536 ..+65536` and the NAT /30 `10.200.0.0/14 + 4n`);
//! - `godel/<id>` in each cgroup hierarchy; in NAT mode the veth `gv<n>` and
//!   the nftables table `inet godel_<n>`;
//! - `handle.json` in the sandbox's `state_dir` (also returned by `handle()`).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use godel_core::{Availability, Error, EventSink, NetworkMode, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::cgroup::{CgroupLayout, JailCgroups};
use crate::hostops::{HostOps, RealHostOps};
use crate::init::{INIT_ENV, InitConfig, InitReady};
use crate::jail::{NamespaceJail, OomWatch};
use crate::launcher::{Isolator, Jail, JailConfig};
use crate::nat;

/// How the daemon starts a sandbox init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitProgram {
    /// A `godel-sandbox-init` binary.
    Path(PathBuf),
    /// Re-execute the current binary with `GODEL_SANDBOX_INIT=1`; the binary
    /// must call [`crate::maybe_run_init`] first thing in `main`.
    SelfExe,
}

impl InitProgram {
    /// Find `godel-sandbox-init`: `$GODEL_SANDBOX_INIT_BIN`, then next to the
    /// current executable, then one directory up (test binaries live in
    /// `target/<profile>/deps`), then `$PATH`; finally the current binary
    /// itself if it called [`crate::maybe_run_init`].
    pub fn discover() -> Option<InitProgram> {
        Self::discover_binary().or_else(|| {
            SELF_EXE_INIT
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(InitProgram::SelfExe)
        })
    }

    fn discover_binary() -> Option<InitProgram> {
        const NAME: &str = "godel-sandbox-init";
        if let Some(p) = std::env::var_os("GODEL_SANDBOX_INIT_BIN") {
            return Some(InitProgram::Path(p.into()));
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            for cand in [dir.join(NAME), dir.join("..").join(NAME)] {
                if cand.is_file() {
                    return Some(InitProgram::Path(cand));
                }
            }
        }
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(NAME))
                .find(|p| p.is_file())
                .map(InitProgram::Path)
        })
    }

    fn command(&self) -> tokio::process::Command {
        match self {
            InitProgram::Path(p) => tokio::process::Command::new(p),
            InitProgram::SelfExe => {
                let mut c = tokio::process::Command::new("/proc/self/exe");
                c.env(INIT_ENV, "1");
                c
            }
        }
    }
}

/// Set by [`crate::maybe_run_init`]: this binary can serve as its own init.
pub(crate) static SELF_EXE_INIT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Settings of the namespace isolator.
#[derive(Clone)]
pub struct NamespaceOptions {
    /// The init to run; `None` = [`InitProgram::discover`].
    pub init: Option<InitProgram>,
    /// Host directory for control sockets, root mount points and slots.
    pub run_dir: PathBuf,
    /// Receives `oom` events (with the runtime id).
    pub events: EventSink,
    /// First host uid handed to sandboxes; slot `n` gets `uid_base + n*65536`.
    pub uid_base: u32,
    /// Host uid/gid every sandbox's agent user (uid 1000 inside) maps to.
    /// Sharing it lets the worktree runtime build each shared checkout once,
    /// owned by the agent, instead of chowning (copying up) every file of an
    /// overlay workspace per spawn. Agents still cannot reach each other:
    /// each sees only its own mount, PID, IPC and network namespaces (see
    /// docs/threat-model.md). `None`: each sandbox's own `uid_base + 1000`.
    pub shared_agent_uid: Option<u32>,
    pub max_slots: u32,
    /// Pids limit when the caller sets none (fork bombs are contained by default).
    pub default_pids: u32,
    /// Size of `/tmp` when the caller sets no disk limit.
    pub default_tmp_bytes: u64,
    /// `RLIMIT_NOFILE` of every process.
    pub nofile: u64,
    /// Use a user namespace: `None` = when the kernel allows it. Without one
    /// agents run directly as the unprivileged host uid `uid_base + n*65536 + 1000`.
    pub user_namespace: Option<bool>,
    /// Jails kept made ahead (namespaces, init, cgroups, root view; no
    /// workspace) for sandboxes in network mode `none`; a create claims one
    /// and attaches its workspace (see [`crate::pool`]). 0 turns the pool off.
    pub warm_pool: usize,
    pub ops: Arc<dyn HostOps>,
}

impl std::fmt::Debug for NamespaceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceOptions")
            .field("init", &self.init)
            .field("run_dir", &self.run_dir)
            .field("uid_base", &self.uid_base)
            .finish_non_exhaustive()
    }
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            init: None,
            run_dir: PathBuf::from("/run/godel-sandbox"),
            events: godel_core::null_sink(),
            uid_base: 1_000_000,
            shared_agent_uid: Some(999_000),
            max_slots: 16_384,
            default_pids: 1024,
            default_tmp_bytes: 512 << 20,
            nofile: 8192,
            user_namespace: None,
            warm_pool: 2,
            ops: Arc::new(RealHostOps),
        }
    }
}

/// The `sandbox` isolator: namespaces, cgroups, seccomp, pivot_root.
#[derive(Debug)]
pub struct NamespaceIsolator {
    core: Arc<Core>,
}

/// What the isolator and its warm pool's refill task share.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) opts: NamespaceOptions,
    pub(crate) init: Option<InitProgram>,
    pub(crate) pool: crate::pool::Pool,
    /// Set once the first create started [`crate::reap`]'s sweep.
    swept: std::sync::atomic::AtomicBool,
}

/// What `handle()` returns and `adopt` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JailHandle {
    pub isolator: String,
    pub init_pid: u32,
    pub start_time: u64,
    pub slot: u32,
    pub uid_base: u32,
    pub dir: PathBuf,
    pub idmapped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap_error: Option<String>,
    pub cgroup_version: u8,
    /// Host-side veth in `nat` mode (traffic counters are read from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth: Option<String>,
    /// Host uid of the agent user (absent in handles of older versions: `uid_base + 1000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_host_uid: Option<u32>,
    /// Name of the host-side state (run directory, cgroups, slot owner) when
    /// it is not the sandbox id: a jail made ahead in the warm pool keeps its
    /// pool name (`warm-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
}

impl JailHandle {
    /// The name of this jail's run directory, cgroups and slot (`id` unless pooled).
    pub fn host_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.host_name.as_deref().unwrap_or(id)
    }
}

impl NamespaceIsolator {
    pub fn new(opts: NamespaceOptions) -> Self {
        let init = opts.init.clone().or_else(InitProgram::discover);
        let pool = crate::pool::Pool::new(opts.warm_pool);
        NamespaceIsolator {
            core: Arc::new(Core {
                opts,
                init,
                pool,
                swept: Default::default(),
            }),
        }
    }

    /// Fill the warm pool now (the first create would start that in the
    /// background) and wait for it. Returns how many jails are warm.
    pub async fn prewarm(&self) -> usize {
        crate::pool::fill(&self.core).await;
        self.core.pool.len()
    }

    /// Destroy the warm pool's jails and make no more (they are also killed when the isolator
    /// is dropped, and a restarted daemon reaps any a crash left behind).
    pub async fn drain(&self) {
        crate::pool::drain(&self.core).await;
    }

    /// Remove what dead jails left on the host (run directories, slots,
    /// cgroups) that is older than `min_age` and used by no process; the
    /// names removed. The first create of an isolator does this in the
    /// background with a minute's grace.
    pub async fn reap_dead(&self, min_age: Duration) -> Vec<String> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || crate::reap::reap_dead(&core, min_age))
            .await
            .unwrap_or_default()
    }

    fn sweep_once(&self) {
        if !self
            .core
            .swept
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let core = self.core.clone();
            tokio::task::spawn_blocking(move || {
                let gone = crate::reap::reap_dead(&core, Duration::from_secs(60));
                if !gone.is_empty() {
                    tracing::info!(count = gone.len(), names = ?gone, "removed what dead sandboxes left on the host");
                }
            });
        }
    }

    /// How many warm jails are ready.
    pub fn warm(&self) -> usize {
        self.core.pool.len()
    }

    /// A jail made now (not claimed from the warm pool), with the host's
    /// system dirs or a template's layers as its root.
    async fn create_cold(
        &self,
        cfg: JailConfig,
        root: Option<&crate::launcher::JailRoot>,
    ) -> Result<Arc<dyn Jail>> {
        let layout = self.core.layout()?;
        let slot = self.core.claim_slot(&cfg.id)?;
        let cg = JailCgroups::new(layout, &cfg.id, self.core.opts.ops.clone());
        let handle = match self.core.start(&cfg, &cfg.id, slot, &cg, false, root).await {
            Ok(h) => h,
            Err(e) => {
                self.core.cleanup(&cfg.id, slot, &cg);
                return Err(e.with_runtime(cfg.id.clone()));
            }
        };
        recorded(&self.core, cfg, handle, cg, false).await
    }

    /// Defaults, with OOM events going to `events`.
    pub fn with_events(events: EventSink) -> Self {
        Self::new(NamespaceOptions {
            events,
            ..Default::default()
        })
    }
}

impl Core {
    pub(crate) fn user_namespace(&self) -> bool {
        self.opts.user_namespace.unwrap_or_else(userns_enabled)
    }

    pub(crate) fn layout(&self) -> Result<CgroupLayout> {
        CgroupLayout::detect_host(&*self.opts.ops).map_err(Error::unavailable)
    }

    fn slots_dir(&self) -> PathBuf {
        self.opts.run_dir.join("slots")
    }

    /// Claim a free slot for `id` (O_EXCL files; stale ones reclaimed).
    pub(crate) fn claim_slot(&self, id: &str) -> Result<u32> {
        let dir = self.slots_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the slots directory", &e))?;
        let n = self.opts.max_slots.max(1);
        let start = id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % n;
        for i in 0..n {
            let slot = (start + i) % n;
            let path = dir.join(slot.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(id.as_bytes())
                        .map_err(|e| Error::io("write the slot file", &e))?;
                    return Ok(slot);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Reclaim a slot whose sandbox directory is gone.
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    if !owner.is_empty()
                        && owner != id
                        && !self.opts.run_dir.join(&owner).exists()
                        && std::fs::remove_file(&path).is_ok()
                    {
                        return self.claim_slot(id);
                    }
                }
                Err(e) => return Err(Error::io("claim a sandbox slot", &e)),
            }
        }
        Err(Error::exhausted(
            "no free sandbox slot (uid range / network)",
        ))
    }

    pub(crate) fn cleanup(&self, id: &str, slot: u32, cg: &JailCgroups) {
        let _ = cg.remove();
        release(&*self.opts.ops, &self.opts.run_dir, id, slot);
    }

    pub(crate) fn sandbox(
        &self,
        cfg: JailConfig,
        handle: JailHandle,
        cgroups: JailCgroups,
    ) -> Arc<dyn Jail> {
        let oom = Arc::new(OomWatch::new(
            cfg.id.clone(),
            cgroups.clone(),
            self.opts.events.clone(),
        ));
        Arc::new(NamespaceJail::new(
            cfg,
            handle,
            cgroups,
            oom,
            self.opts.ops.clone(),
            self.opts.run_dir.clone(),
        ))
    }

    /// Make the cgroups, the network and the init of a jail. `name` names its
    /// host-side state (the sandbox id, or a warm-pool name with `pooled`).
    pub(crate) async fn start(
        &self,
        cfg: &JailConfig,
        name: &str,
        slot: u32,
        cg: &JailCgroups,
        pooled: bool,
        root: Option<&crate::launcher::JailRoot>,
    ) -> Result<JailHandle> {
        let layout = cg.layout().clone();
        let init = self
            .init
            .as_ref()
            .ok_or_else(|| Error::unavailable("godel-sandbox-init not found"))?;
        let mut limits = cfg.limits.clone();
        limits.pids = Some(limits.pids.unwrap_or(self.opts.default_pids));
        cg.create(&limits)
            .map_err(|e| Error::io("create the sandbox cgroups", &e))?;
        let nat_setup = match cfg.network.mode {
            NetworkMode::None => None,
            NetworkMode::Nat => {
                let rules = nat::Rules::of(&cfg.network)?;
                let setup = nat::nat_setup(slot);
                nat::install(&*self.opts.ops, slot, &setup, &rules)?;
                Some(setup)
            }
            NetworkMode::Host => {
                return Err(Error::invalid(
                    "network mode 'host' is not available with isolation 'sandbox'",
                ));
            }
        };
        let dir = self.opts.run_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the sandbox directory", &e))?;
        // The init looks its root mount point up as an unprivileged host uid.
        for d in [&self.opts.run_dir, &dir] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod the sandbox directory", &e))?;
        }
        let uid_base = self.opts.uid_base + slot * 65536;
        let init_cfg = InitConfig {
            id: cfg.id.clone(),
            workspace: cfg.workspace.clone(),
            dir: dir.clone(),
            uid_base,
            uid_count: 65536,
            user_namespace: self.user_namespace(),
            cgroup_procs: cg.procs_files(),
            hostname: cfg.id.chars().take(63).collect(),
            tmp_bytes: cfg.limits.disk_bytes.unwrap_or(self.opts.default_tmp_bytes),
            nofile: self.opts.nofile,
            dns: (!cfg.network.dns.is_empty()).then(|| cfg.network.dns.clone()),
            nat: nat_setup,
            shared_agent_uid: self.opts.shared_agent_uid,
            pooled,
            creator_pid: pooled.then(std::process::id),
            volumes: cfg.volumes.clone(),
            root: root.cloned(),
        };
        let input = serde_json::to_vec(&init_cfg).map_err(|e| Error::internal(e.to_string()))?;
        let mut child = init
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start the sandbox init {init:?}"), &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means the init already died; its output says why.
            let _ = stdin.write_all(&input).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| Error::io("wait for the sandbox init", &e))?;
        let ready: InitReady = serde_json::from_slice(&out.stdout).map_err(|_| {
            Error::spawn(format!(
                "the sandbox init failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
        match ready {
            InitReady::Ok {
                pid,
                start_time,
                idmapped,
                idmap_error,
            } => Ok(JailHandle {
                isolator: "sandbox".into(),
                init_pid: pid,
                start_time,
                slot,
                uid_base,
                dir,
                idmapped,
                idmap_error,
                cgroup_version: layout.version(),
                veth: init_cfg.nat.as_ref().map(|n| n.host_if.clone()),
                agent_host_uid: Some(init_cfg.agent_host_uid()),
                host_name: (name != cfg.id).then(|| name.to_string()),
            }),
            InitReady::Error { message } => Err(Error::spawn(format!(
                "cannot create sandbox {}: {message}",
                cfg.id
            ))),
        }
    }
}

/// Write a jail's handle as `sandbox.json` in its state directory: what
/// finds the jail again when the daemon is killed before the runtime's own
/// handle is stored.
fn record(cfg: &JailConfig, handle: &JailHandle) -> Result<()> {
    let json = serde_json::to_vec_pretty(handle)
        .map_err(|e| Error::internal(format!("cannot encode the sandbox handle: {e}")))?;
    std::fs::create_dir_all(&cfg.state_dir)
        .and_then(|()| std::fs::write(cfg.state_dir.join("sandbox.json"), json))
        .map_err(|e| Error::io(format!("record sandbox {}", cfg.id), &e))
}

/// Record a jail made now and hand it out. One that cannot be recorded
/// could not be found after a daemon crash: it is destroyed instead. A
/// claimed warm jail (`pooled`) loses its pool marker only once recorded,
/// so a daemon killed in between leaves a jail one of the two finds.
async fn recorded(
    core: &Core,
    cfg: JailConfig,
    handle: JailHandle,
    cg: JailCgroups,
    pooled: bool,
) -> Result<Arc<dyn Jail>> {
    let written = record(&cfg, &handle);
    if pooled {
        crate::pool::unmark(&handle);
    }
    let id = cfg.id.clone();
    let jail = core.sandbox(cfg, handle, cg);
    match written {
        Ok(()) => Ok(jail),
        Err(e) => {
            let _ = jail.destroy().await;
            Err(e.with_runtime(id))
        }
    }
}

/// Release what a sandbox held by slot: its network, run directory and the
/// slot itself, but only while the slot is still this sandbox's (a stale
/// handle must never tear down a newer sandbox that reuses the slot).
pub(crate) fn release(ops: &dyn HostOps, run_dir: &Path, id: &str, slot: u32) {
    let slot_file = run_dir.join("slots").join(slot.to_string());
    if std::fs::read_to_string(&slot_file).is_ok_and(|owner| owner == id) {
        nat::remove(ops, slot);
        let _ = std::fs::remove_file(&slot_file);
    }
    let dir = run_dir.join(id);
    let _ = std::fs::remove_file(dir.join("ctl.sock"));
    let _ = std::fs::remove_dir(dir.join("root"));
    let _ = std::fs::remove_dir(dir.join("stage"));
    let _ = std::fs::remove_dir(&dir);
}

/// Whether the kernel lets us create user namespaces.
pub fn userns_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Whether `pid` is the same live (non-zombie) process that started at `start_time`.
pub fn init_alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
    let state = rest.first().copied().unwrap_or("Z");
    let st: u64 = rest.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
    state != "Z" && state != "X" && (start_time == 0 || st == start_time)
}

#[async_trait]
impl Isolator for NamespaceIsolator {
    fn name(&self) -> &str {
        "sandbox"
    }

    fn agent_owner(&self) -> Option<(u32, u32)> {
        let uid = self
            .core
            .opts
            .shared_agent_uid
            .filter(|_| self.core.user_namespace())?;
        Some((uid, uid))
    }

    async fn available(&self) -> Availability {
        if !nix::unistd::geteuid().is_root() {
            return Availability::no(
                "the process sandbox needs root (it writes uid maps, cgroups and idmapped mounts); run the daemon as root or use --isolation none for trusted local use",
            );
        }
        let layout = match self.core.layout() {
            Ok(l) => l,
            Err(e) => return Availability::no(e.message),
        };
        let Some(init) = &self.core.init else {
            return Availability::no(
                "cannot find godel-sandbox-init: install it next to godel, set GODEL_SANDBOX_INIT_BIN, or re-execute godel itself (InitProgram::SelfExe)",
            );
        };
        Availability::yes("namespaces (user, mount, pid, net, ipc, uts, cgroup), cgroups, seccomp")
            .detail("cgroup_version", layout.version().to_string())
            .detail("init", format!("{init:?}"))
            .detail(
                "warm_pool",
                format!(
                    "{} of {} jails ready (network mode none; made ahead, claimed by creates)",
                    self.warm(),
                    self.core.opts.warm_pool
                ),
            )
            .detail("run_dir", self.core.opts.run_dir.display().to_string())
            .detail(
                "user_namespace",
                if self.core.user_namespace() {
                    "on (agents are uid 1000 of their own user namespace)"
                } else {
                    "off (user namespaces unavailable: agents run as a dedicated unprivileged host uid)"
                },
            )
    }

    async fn create(&self, cfg: JailConfig) -> Result<Arc<dyn Jail>> {
        self.sweep_once();
        if !cfg.workspace.is_dir() {
            return Err(Error::invalid(format!(
                "workspace {} is not a directory",
                cfg.workspace.display()
            )));
        }
        if crate::pool::serves(&self.core, &cfg) {
            let claimed = crate::pool::claim(&self.core, &cfg).await;
            crate::pool::refill(&self.core);
            if let Some((handle, cg)) = claimed {
                return recorded(&self.core, cfg, handle, cg, true).await;
            }
        }
        self.create_cold(cfg, None).await
    }

    async fn create_rooted(
        &self,
        cfg: JailConfig,
        root: crate::launcher::JailRoot,
    ) -> Result<Arc<dyn Jail>> {
        self.sweep_once();
        if !cfg.workspace.is_dir() {
            return Err(Error::invalid(format!(
                "workspace {} is not a directory",
                cfg.workspace.display()
            )));
        }
        if !self.core.user_namespace() {
            return Err(Error::unavailable(
                "templates need user namespaces (their layers are mounted with overlayfs inside the jail's user namespace)",
            ));
        }
        // Never from the warm pool: its jails were made with the host's root.
        self.create_cold(cfg, Some(&root)).await
    }

    async fn stop(&self) {
        self.drain().await;
    }

    async fn adopt(
        &self,
        cfg: JailConfig,
        handle: &serde_json::Value,
    ) -> Result<Option<Arc<dyn Jail>>> {
        let parsed: JailHandle = match serde_json::from_value(handle.clone()) {
            Ok(h) => h,
            Err(_) => {
                // Fall back to the copy in state_dir.
                let path = cfg.state_dir.join("sandbox.json");
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                {
                    Some(h) => h,
                    None => {
                        // No record: a create cut off (the daemon killed)
                        // before it wrote one. Whatever runs in the group
                        // named after the sandbox cannot be reached: kill it.
                        if let Ok(layout) = self.core.layout() {
                            let cg = JailCgroups::new(layout, &cfg.id, self.core.opts.ops.clone());
                            kill_group(&cg).await;
                            let run_dir = &self.core.opts.run_dir;
                            let slot = crate::reap::slot_of(run_dir, &cfg.id).unwrap_or(u32::MAX);
                            self.core.cleanup(&cfg.id, slot, &cg);
                        }
                        return Ok(None);
                    }
                }
            }
        };
        let name = parsed.host_name(&cfg.id).to_string();
        let cg = JailCgroups::new(self.core.layout()?, &name, self.core.opts.ops.clone());
        let sock = parsed.dir.join("ctl.sock");
        let mut alive = init_alive(parsed.init_pid, parsed.start_time) && ping(&sock).await.is_ok();
        // A daemon killed while the group was frozen (mid-snapshot, or a
        // paused sandbox) leaves it frozen: a frozen init cannot answer.
        // Thaw and ask again; the caller freezes it again if it is paused.
        if !alive && cg.frozen() && cg.freeze(false).is_ok() {
            alive = init_alive(parsed.init_pid, parsed.start_time) && ping(&sock).await.is_ok();
        }
        if !alive {
            // Nothing of it may stay behind (a process in a frozen group
            // would also catch the next init put there).
            kill_group(&cg).await;
            self.core.cleanup(&name, parsed.slot, &cg);
            return Ok(None);
        }
        Ok(Some(self.core.sandbox(cfg, parsed, cg)))
    }
}

/// Thaw a group and SIGKILL everything in it; wait (bounded) until empty.
async fn kill_group(cg: &JailCgroups) {
    let _ = cg.freeze(false);
    for p in cg.pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_empty(cg, Duration::from_secs(2)).await;
}

/// Ask an init whether it answers.
pub async fn ping(sock: &Path) -> std::io::Result<i32> {
    let sock = sock.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let fd: OwnedFd = crate::proto::connect(&sock)?;
        let tv = nix::sys::time::TimeVal::new(2, 0);
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
        crate::proto::send_msg(fd.as_raw_fd(), &crate::proto::Request::Ping, &[])?;
        match crate::proto::recv_msg(fd.as_raw_fd(), nix::sys::socket::MsgFlags::empty())? {
            Some(m) => match crate::proto::parse(&m.data)? {
                crate::proto::Reply::Pong { pid } => Ok(pid),
                other => Err(std::io::Error::other(format!("unexpected reply {other:?}"))),
            },
            None => Err(std::io::Error::other("init closed the connection")),
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Wait (bounded) until a cgroup has no processes.
pub(crate) async fn wait_empty(cg: &JailCgroups, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if cg.pids().is_empty() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The default environment of every sandboxed process.
pub fn default_env(id: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", godel_core::WORKSPACE_MOUNT),
        ("USER", "user"),
        ("LOGNAME", "user"),
        ("SHELL", "/bin/bash"),
        ("LANG", "C.UTF-8"),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    env.insert("HOSTNAME".into(), id.chars().take(63).collect());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostops::{HostOp, RecordingHostOps};
    use crate::launcher::JailLimits;
    use godel_core::NetworkConfig;

    #[tokio::test]
    async fn a_failed_start_undoes_everything_it_made() {
        // No root needed: the host is a recording fake and the "init" fails.
        let ops = Arc::new(
            RecordingHostOps::new()
                .with_file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids"),
        );
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let iso = NamespaceIsolator::new(NamespaceOptions {
            init: Some(InitProgram::Path("/bin/false".into())),
            run_dir: tmp.path().join("run"),
            ops: ops.clone(),
            ..Default::default()
        });
        let cfg = JailConfig {
            id: "fails".into(),
            workspace: ws,
            state_dir: tmp.path().join("state"),
            limits: JailLimits {
                memory_bytes: Some(1 << 30),
                ..Default::default()
            },
            network: NetworkConfig {
                mode: NetworkMode::Nat,
                allow: vec!["10.0.0.0/8:443".into()],
                ..Default::default()
            },
            env: Default::default(),
            volumes: Vec::new(),
        };
        let err = iso.create(cfg).await.err().unwrap();
        assert_eq!(err.code, godel_core::ErrorCode::SpawnError, "{err}");
        assert_eq!(err.runtime_id.as_deref(), Some("fails"));
        let rec = ops.recorded();
        let pos = |op: &HostOp| rec.iter().position(|o| o == op);
        // Every cgroup directory made is removed again, after it was made.
        let made: Vec<PathBuf> = rec
            .iter()
            .filter_map(|o| match o {
                HostOp::MkdirAll(p) if p.ends_with("fails") => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert!(!made.is_empty(), "{rec:?}");
        for d in &made {
            let rm = pos(&HostOp::RemoveDir(d.clone())).expect("cgroup left behind");
            assert!(pos(&HostOp::MkdirAll(d.clone())).unwrap() < rm);
        }
        // The default pids limit was applied.
        assert!(
            rec.iter().any(
                |o| matches!(o, HostOp::Write(p, v) if p.ends_with("pids.max") && v == "1024")
            )
        );
        // The nftables table was installed with the allowlist, then deleted with the veth.
        let install = rec
            .iter()
            .position(|o| matches!(o, HostOp::Run(a) if a.len() == 2 && a[1].contains("ip daddr 10.0.0.0/8 tcp dport 443 accept")))
            .expect("allowlist installed");
        let deletes: Vec<usize> = rec
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, HostOp::Run(a) if a[1] == "delete" || a[..2] == ["ip", "link"]))
            .map(|(i, _)| i)
            .collect();
        assert!(deletes.iter().any(|&i| i > install), "{rec:?}");
        // The slot and the run directory are released.
        let slots = tmp.path().join("run/slots");
        assert_eq!(std::fs::read_dir(&slots).unwrap().count(), 0);
        assert!(!tmp.path().join("run/fails").exists());
    }

    #[tokio::test]
    async fn host_network_mode_is_refused() {
        let ops = Arc::new(
            RecordingHostOps::new()
                .with_file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids"),
        );
        let tmp = tempfile::tempdir().unwrap();
        let iso = NamespaceIsolator::new(NamespaceOptions {
            init: Some(InitProgram::Path("/bin/false".into())),
            run_dir: tmp.path().join("run"),
            ops,
            ..Default::default()
        });
        let mut cfg = JailConfig {
            id: "hostnet".into(),
            workspace: tmp.path().to_path_buf(),
            state_dir: tmp.path().join("state"),
            limits: Default::default(),
            network: Default::default(),
            env: Default::default(),
            volumes: Vec::new(),
        };
        cfg.network.mode = NetworkMode::Host;
        let err = iso.create(cfg).await.err().unwrap();
        assert_eq!(err.code, godel_core::ErrorCode::InvalidArgument, "{err}");
    }
}
