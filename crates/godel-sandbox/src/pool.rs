//! The warm pool of the namespace isolator: jails made ahead of demand,
//! each a complete sandbox (slot, cgroups, init in its new user, mount, PID,
//! IPC, UTS, network and cgroup namespaces, the pivoted read-only root,
//! `/tmp`, `/dev`, `/proc`) except for the workspace. Creating a sandbox in
//! network mode `none` claims one instead of making one:
//!
//! 1. the claimed jail's cgroups get the sandbox's limits;
//! 2. the daemon clones the workspace as a detached mount
//!    (`open_tree(OPEN_TREE_CLONE)`) and idmaps it with a user namespace it
//!    made once (on-disk 0 → the agent's host uid), or, where the filesystem
//!    cannot be idmapped, hands the tree to the agent as the cold path does;
//! 3. a `Claim` message carries the mount fd over the init's control socket;
//!    the init attaches it at `/home/user` (`move_mount`), sets the hostname
//!    and `/etc/hostname`/`/etc/hosts`, resizes `/tmp`, and from then on
//!    serves `Exec` (it refuses `Exec` before).
//!
//! After each claim a background task tops the pool up. A warm jail's
//! host-side state keeps its pool name (`warm-<daemon pid>-<n>`, see
//! [`JailHandle::host_name`]); its run directory holds `pool.json` until it
//! is claimed, so a restarted daemon reaps the unclaimed jails a crash left
//! behind (their creator's pid is gone), and a dropped isolator kills its own.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use godel_core::{Error, NetworkMode, Result};
use parking_lot::Mutex;

use crate::cgroup::JailCgroups;
use crate::launcher::{JailConfig, JailLimits};
use crate::namespace::{Core, JailHandle, init_alive, release, wait_empty};
use crate::proto::{self, Reply, Request};

/// Marker file in an unclaimed warm jail's run directory (its handle).
const MARKER: &str = "pool.json";
/// Prefix of warm jails' host names.
const PREFIX: &str = "warm-";

/// How long after a claim the refill starts.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// Names are unique per process even with several isolators.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// One jail made ahead.
struct Warm {
    name: String,
    handle: JailHandle,
    cgroups: JailCgroups,
}

/// The warm jails of one isolator.
pub(crate) struct Pool {
    target: usize,
    ready: Mutex<Vec<Warm>>,
    filling: AtomicBool,
    reaped: AtomicBool,
    /// Set by [`drain`]: no warm jail is made after it.
    closed: AtomicBool,
    fill_lock: tokio::sync::Mutex<()>,
    /// Idmapping user namespaces by host id, made once.
    userns: Mutex<HashMap<u32, Arc<OwnedFd>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("ready", &self.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(target: usize) -> Pool {
        Pool {
            target,
            ready: Mutex::new(Vec::new()),
            filling: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            fill_lock: tokio::sync::Mutex::new(()),
            userns: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ready.lock().len()
    }
}

/// Whether the pool is on and can serve `cfg` (loopback-only network, user
/// namespaces: NAT jails need their per-slot veth and allowlist at creation).
pub(crate) fn serves(core: &Core, cfg: &JailConfig) -> bool {
    enabled(core)
        && cfg.network.mode == NetworkMode::None
        && cfg.network.dns.is_empty()
        && cfg.volumes.is_empty()
}

fn enabled(core: &Core) -> bool {
    !core.pool.closed.load(Ordering::SeqCst)
        && core.pool.target > 0
        && core.init.is_some()
        && core.user_namespace()
}

/// Top the pool up in the background (one filler at a time).
pub(crate) fn refill(core: &Arc<Core>) {
    if !enabled(core)
        || core.pool.len() >= core.pool.target
        || core.pool.filling.swap(true, Ordering::SeqCst)
    {
        return;
    }
    let c = core.clone();
    tokio::spawn(async move {
        // Let the spawn that claimed finish first: on a small machine the
        // new init would otherwise take the CPU from it.
        tokio::time::sleep(REFILL_DELAY).await;
        fill(&c).await;
        c.pool.filling.store(false, Ordering::SeqCst);
    });
}

/// Top the pool up and wait. The first call reaps what a crashed daemon left.
pub(crate) async fn fill(core: &Arc<Core>) {
    if !enabled(core) {
        return;
    }
    let _one = core.pool.fill_lock.lock().await;
    if !core.pool.reaped.swap(true, Ordering::SeqCst) {
        reap_stale(core).await;
    }
    while enabled(core) && core.pool.len() < core.pool.target {
        match make(core).await {
            Ok(w) => core.pool.ready.lock().push(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a warm sandbox jail");
                break;
            }
        }
    }
}

/// Make one warm jail.
async fn make(core: &Core) -> Result<Warm> {
    let name = format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let layout = core.layout()?;
    let slot = core.claim_slot(&name)?;
    let cgroups = JailCgroups::new(layout, &name, core.opts.ops.clone());
    let cfg = JailConfig {
        id: name.clone(),
        // Not used by a pooled init; any existing directory.
        workspace: core.opts.run_dir.clone(),
        state_dir: core.opts.run_dir.join(&name),
        limits: JailLimits::default(),
        network: Default::default(),
        env: Default::default(),
        volumes: Vec::new(),
    };
    // Marked before the init starts: a fill cancelled half-way (daemon
    // shutdown) leaves a jail the next daemon can still find and reap.
    let dir = core.opts.run_dir.join(&name);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(MARKER), "{}");
    let handle = match core.start(&cfg, &name, slot, &cgroups, true, None).await {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(MARKER));
            core.cleanup(&name, slot, &cgroups);
            return Err(e);
        }
    };
    if let Ok(json) = serde_json::to_vec(&handle) {
        let _ = std::fs::write(handle.dir.join(MARKER), json);
    }
    Ok(Warm {
        name,
        handle,
        cgroups,
    })
}

/// Claim a warm jail for `cfg`. `None` when the pool is empty or the claim
/// failed (the jail is then destroyed and the caller makes one cold).
pub(crate) async fn claim(core: &Core, cfg: &JailConfig) -> Option<(JailHandle, JailCgroups)> {
    let warm = core.pool.ready.lock().pop()?;
    match claim_warm(core, &warm, cfg).await {
        Ok(handle) => Some((handle, warm.cgroups)),
        Err(e) => {
            tracing::warn!(id = %cfg.id, error = %e, "claiming a warm sandbox jail failed; making one");
            destroy(core, warm).await;
            None
        }
    }
}

async fn claim_warm(core: &Core, warm: &Warm, cfg: &JailConfig) -> Result<JailHandle> {
    let mut limits = cfg.limits.clone();
    limits.pids = Some(limits.pids.unwrap_or(core.opts.default_pids));
    warm.cgroups
        .set_limits(&limits)
        .map_err(|e| Error::io("set the sandbox's cgroup limits", &e))?;
    let agent = warm
        .handle
        .agent_host_uid
        .unwrap_or(warm.handle.uid_base + crate::mounts::AGENT_UID);
    let userns = userns_for(core, agent)?;
    let workspace = cfg.workspace.clone();
    let sock = warm.handle.dir.join("ctl.sock");
    let hostname: String = cfg.id.chars().take(63).collect();
    let tmp_bytes = cfg.limits.disk_bytes.unwrap_or(core.opts.default_tmp_bytes);
    let (idmapped, idmap_error) = tokio::task::spawn_blocking(move || {
        attach(&workspace, agent, &userns, &sock, hostname, tmp_bytes)
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))??;
    Ok(JailHandle {
        idmapped,
        idmap_error,
        host_name: Some(warm.name.clone()),
        ..warm.handle.clone()
    })
}

/// A claimed jail, recorded as its sandbox's: no longer the pool's to reap.
pub(crate) fn unmark(handle: &JailHandle) {
    let _ = std::fs::remove_file(handle.dir.join(MARKER));
}

/// The cached idmapping user namespace for `host_id`.
fn userns_for(core: &Core, host_id: u32) -> Result<Arc<OwnedFd>> {
    let mut cache = core.pool.userns.lock();
    if let Some(fd) = cache.get(&host_id) {
        return Ok(fd.clone());
    }
    let fd = Arc::new(crate::init::idmap_userns(host_id).map_err(Error::spawn)?);
    cache.insert(host_id, fd.clone());
    Ok(fd)
}

/// Clone and idmap the workspace, send it with the claim, read the verdict.
/// Returns (idmapped, why not).
fn attach(
    workspace: &std::path::Path,
    agent: u32,
    userns: &OwnedFd,
    sock: &std::path::Path,
    hostname: String,
    tmp_bytes: u64,
) -> Result<(bool, Option<String>)> {
    let ws = crate::mounts::open_tree_clone(workspace)
        .map_err(|e| Error::io("clone the workspace mount", &e))?;
    let idmap_error = crate::init::idmap_with(&ws, userns).err();
    if idmap_error.is_some() {
        // As the cold path: the tree must belong to the agent's host uid.
        crate::init::chown_tree(workspace, agent).map_err(Error::spawn)?;
    }
    let conn = proto::connect(sock).map_err(|e| Error::io("connect to a warm sandbox", &e))?;
    let tv = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| Error::io("set a timeout", &e.into()))?;
    let req = Request::Claim {
        hostname,
        tmp_bytes,
    };
    proto::send_msg(conn.as_raw_fd(), &req, &[ws.as_raw_fd()])
        .map_err(|e| Error::io("send the claim", &e))?;
    let reply = proto::recv_msg(conn.as_raw_fd(), nix::sys::socket::MsgFlags::empty())
        .map_err(|e| Error::io("read the claim's answer", &e))?
        .ok_or_else(|| Error::spawn("the warm sandbox closed the connection"))?;
    match proto::parse::<Reply>(&reply.data).map_err(|e| Error::io("parse the answer", &e))? {
        Reply::Claimed => Ok((idmap_error.is_none(), idmap_error)),
        Reply::Failed { message } => Err(Error::spawn(format!("claim refused: {message}"))),
        other => Err(Error::spawn(format!("unexpected answer {other:?}"))),
    }
}

/// Kill a warm jail and remove what it held.
async fn destroy(core: &Core, warm: Warm) {
    kill_init(&warm.handle);
    kill_all(&warm.cgroups);
    wait_empty(&warm.cgroups, Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(core.opts.run_dir.join(&warm.name).join(MARKER));
    core.cleanup(&warm.name, warm.handle.slot, &warm.cgroups);
}

/// SIGKILL whatever is in the jail's cgroups (an init whose pid was never
/// recorded, when a fill was cancelled half-way).
fn kill_all(cg: &JailCgroups) {
    for p in cg.pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn kill_init(h: &JailHandle) {
    if init_alive(h.init_pid, h.start_time) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(h.init_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Destroy every warm jail of this pool and make no more: a fill under way
/// finishes its current jail first, which is then destroyed too.
pub(crate) async fn drain(core: &Core) {
    core.pool.closed.store(true, Ordering::SeqCst);
    let _no_fill = core.pool.fill_lock.lock().await;
    let all: Vec<Warm> = std::mem::take(&mut *core.pool.ready.lock());
    for w in all {
        destroy(core, w).await;
    }
}

/// Unclaimed warm jails whose creator is gone (a daemon killed before it
/// could drain its pool): kill and remove them.
async fn reap_stale(core: &Core) {
    let Ok(rd) = std::fs::read_dir(&core.opts.run_dir) else {
        return;
    };
    let Ok(layout) = core.layout() else {
        return;
    };
    let stale: Vec<(String, JailHandle)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let creator: u32 = name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()?;
            if PathBuf::from(format!("/proc/{creator}")).exists() {
                return None;
            }
            let marker = std::fs::read(e.path().join(MARKER)).ok()?;
            // "{}": the init was being made when its daemon went away.
            let h = serde_json::from_slice(&marker).unwrap_or_else(|_| JailHandle {
                isolator: "sandbox".into(),
                init_pid: 0,
                start_time: 0,
                slot: crate::reap::slot_of(&core.opts.run_dir, &name).unwrap_or(u32::MAX),
                uid_base: 0,
                dir: e.path(),
                idmapped: false,
                idmap_error: None,
                cgroup_version: 0,
                veth: None,
                agent_host_uid: None,
                host_name: None,
            });
            Some((name, h))
        })
        .collect();
    for (name, handle) in stale {
        let cgroups = JailCgroups::new(layout.clone(), &name, core.opts.ops.clone());
        destroy(
            core,
            Warm {
                name,
                handle,
                cgroups,
            },
        )
        .await;
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let all: Vec<Warm> = std::mem::take(&mut *self.pool.ready.lock());
        for w in &all {
            kill_init(&w.handle);
        }
        // A killed init takes its PID namespace along within milliseconds;
        // then the cgroups can go. Bounded: what is left, the next daemon reaps.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        for w in all {
            while !w.cgroups.pids().is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if w.cgroups.remove().is_ok() {
                let _ = std::fs::remove_file(w.handle.dir.join(MARKER));
                release(&*self.opts.ops, &self.opts.run_dir, &w.name, w.handle.slot);
            }
        }
    }
}
