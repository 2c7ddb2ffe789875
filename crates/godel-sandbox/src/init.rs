//! The sandbox init, in two stages, run as its own single-threaded process
//! (the `godel-sandbox-init` binary, or the `godel` binary re-executed with
//! `GODEL_SANDBOX_INIT=1`, see [`crate::maybe_run_init`]). The daemon never
//! forks its own multi-threaded self.
//!
//! Stage 1 (host root, host namespaces), driven by [`stage1_main`]:
//! 1. reads an [`InitConfig`] (JSON) from stdin, drops supplementary groups,
//!    binds the control socket, clones a detached copy of the workspace mount
//!    and joins the sandbox's cgroups;
//! 2. `clone`s stage 2 into new user, mount, PID, IPC, UTS, network and cgroup
//!    namespaces, writes its uid/gid maps (`0 <base> 65536`, `setgroups`
//!    deny) and its `oom_score_adj` (-1000, so the OOM killer takes agents,
//!    not the init), idmaps the workspace clone so files owned by host root on
//!    disk belong to the agent (`user`, uid 1000) inside, sets up NAT if asked;
//! 3. releases stage 2, waits for "ready", prints an [`InitReady`] and exits.
//!    Stage 2 is then parented by the host's init, not by the daemon: it
//!    outlives daemon restarts.
//!
//! Stage 2 (PID 1 of the sandbox) builds the root from [`crate::mounts`],
//! pivots, brings `lo` up, becomes uid 0 of its namespace (an unprivileged
//! host uid), drops its capability bounding set, and serves exec requests
//! (see [`crate::initserve`]).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use crate::mounts::{self, AGENT_UID, HostView, MountAttr, PlanInput, WorkspaceSource};

/// Environment variable that turns a binary into the init (see [`crate::maybe_run_init`]).
pub const INIT_ENV: &str = "GODEL_SANDBOX_INIT";

/// Network setup stage 1 performs for NAT mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NatSetup {
    /// Host-side veth name.
    pub host_if: String,
    /// Host-side address (the agent's gateway), e.g. `10.201.0.1`.
    pub host_ip: String,
    /// Agent address inside, e.g. `10.201.0.2`.
    pub agent_ip: String,
    pub prefix_len: u8,
}

/// What stage 1 reads on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub id: String,
    pub workspace: PathBuf,
    /// Per-sandbox run directory: holds `ctl.sock` and the `root` mount point.
    pub dir: PathBuf,
    pub uid_base: u32,
    pub uid_count: u32,
    /// Use a user namespace (uid maps, idmapped workspace). Without one the
    /// init stays host root in the other namespaces and agents run directly
    /// as the unprivileged host uid `uid_base + 1000`.
    #[serde(default = "yes")]
    pub user_namespace: bool,
    pub cgroup_procs: Vec<PathBuf>,
    pub hostname: String,
    pub tmp_bytes: u64,
    pub nofile: u64,
    #[serde(default)]
    pub dns: Option<Vec<String>>,
    #[serde(default)]
    pub nat: Option<NatSetup>,
    /// Host uid/gid the agent (`user`, uid 1000 inside) maps to when it is
    /// shared by every sandbox (see `NamespaceOptions::shared_agent_uid`);
    /// `None`: `uid_base + 1000`, the sandbox's own.
    #[serde(default)]
    pub shared_agent_uid: Option<u32>,
    /// Made ahead for the warm pool (see [`crate::pool`]): no workspace yet
    /// (`workspace` is ignored; `/home/user` stays an empty directory of the
    /// read-only root), and the init refuses `Exec` until a `Claim` brings
    /// the workspace, the hostname and the size of `/tmp`.
    #[serde(default)]
    pub pooled: bool,
    /// Host pid of the daemon that made a pooled jail: until claimed, the
    /// init exits when that process does (an unclaimed jail never outlives
    /// its daemon; the next daemon removes what is left).
    #[serde(default)]
    pub creator_pid: Option<u32>,
    /// Host directories mounted read-write (volumes), idmapped like the workspace.
    #[serde(default)]
    pub volumes: Vec<crate::launcher::JailVolume>,
    /// A root from template layers (see [`crate::launcher::JailRoot`]).
    #[serde(default)]
    pub root: Option<crate::launcher::JailRoot>,
}

fn yes() -> bool {
    true
}

impl InitConfig {
    /// The agent's uid as its processes see it.
    pub fn agent_uid(&self) -> u32 {
        if self.building() {
            0
        } else if self.user_namespace {
            AGENT_UID
        } else {
            self.uid_base + AGENT_UID
        }
    }
    /// The host uid the agent's files and processes have.
    pub fn agent_host_uid(&self) -> u32 {
        match self.shared_agent_uid {
            Some(s) if self.user_namespace => s,
            _ => self.uid_base + AGENT_UID,
        }
    }

    /// The uid/gid map of the sandbox's user namespace: the sandbox's own
    /// range, with the agent's uid mapped to the shared one when set.
    pub fn id_map(&self) -> String {
        match self.shared_agent_uid {
            Some(shared) if AGENT_UID < self.uid_count => format!(
                "0 {} {}\n{} {} 1\n{} {} {}\n",
                self.uid_base,
                AGENT_UID,
                AGENT_UID,
                shared,
                AGENT_UID + 1,
                self.uid_base + AGENT_UID + 1,
                self.uid_count - AGENT_UID - 1
            ),
            _ => format!("0 {} {}\n", self.uid_base, self.uid_count),
        }
    }

    /// A template build: processes run as root of the user namespace.
    pub fn building(&self) -> bool {
        self.user_namespace && self.root.as_ref().is_some_and(|r| r.upper.is_some())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }
    pub fn root_path(&self) -> PathBuf {
        self.dir.join("root")
    }
}

/// What stage 1 prints on stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum InitReady {
    Ok {
        /// Host pid of the init.
        pid: u32,
        /// Its start time (clock ticks since boot), to tell a reused pid apart.
        start_time: u64,
        /// Whether the workspace is an idmapped mount (else it was chowned).
        idmapped: bool,
        /// Why the workspace could not be idmapped (e.g. overlayfs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idmap_error: Option<String>,
    },
    Error {
        message: String,
    },
}

/// Entry point of the init binary: run stage 1 and exit.
pub fn stage1_main() -> ! {
    let mut input = String::new();
    let ready = match std::io::stdin().read_to_string(&mut input) {
        Err(e) => InitReady::Error {
            message: format!("cannot read the init config: {e}"),
        },
        Ok(_) => match serde_json::from_str::<InitConfig>(&input) {
            Err(e) => InitReady::Error {
                message: format!("bad init config: {e}"),
            },
            Ok(cfg) => match stage1(&cfg) {
                Ok(r) => r,
                Err(message) => InitReady::Error { message },
            },
        },
    };
    let code = i32::from(!matches!(ready, InitReady::Ok { .. }));
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, &ready);
    let _ = out.flush();
    std::process::exit(code)
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn write_file(path: &Path, s: &str) -> Result<(), String> {
    std::fs::write(path, s).map_err(|e| err(&format!("write {}", path.display()), e))
}

/// A pidfd of `pid` (close-on-exec), readable once the process exits.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers; on success the kernel returns
    // a new descriptor that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Start time (field 22 of `/proc/<pid>/stat`).
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    // Fields after the command: state is field 3, start time field 22.
    after.split(' ').nth(19)?.parse().ok()
}

fn stage1(cfg: &InitConfig) -> Result<InitReady, String> {
    nix::unistd::setgroups(&[]).map_err(|e| err("drop supplementary groups", e))?;
    let host = HostView::probe();

    // The control socket, bound on the host side so only host root reaches it.
    let sock_path = cfg.socket_path();
    let _ = std::fs::remove_file(&sock_path);
    let listen_fd = crate::proto::seqpacket_socket().map_err(|e| err("socket", e))?;
    let addr = nix::sys::socket::UnixAddr::new(&sock_path).map_err(|e| err("socket path", e))?;
    nix::sys::socket::bind(listen_fd.as_raw_fd(), &addr).map_err(|e| err("bind", e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("chmod ctl.sock", e))?;
    }
    nix::sys::socket::listen(
        &listen_fd,
        nix::sys::socket::Backlog::new(128).map_err(|e| err("backlog", e))?,
    )
    .map_err(|e| err("listen", e))?;

    std::fs::create_dir_all(cfg.root_path()).map_err(|e| err("mkdir root", e))?;
    let creator = match cfg.creator_pid.filter(|_| cfg.pooled) {
        Some(pid) => Some(pidfd_open(pid).map_err(|e| err("pidfd_open the daemon", e))?),
        None => None,
    };
    let ws_fd = if cfg.pooled {
        None
    } else {
        mounts::open_tree_clone(&cfg.workspace).ok()
    };
    let volumes = open_volumes(cfg)?;
    let layered = match &cfg.root {
        Some(root) => Some(crate::layers::open(root, &host, &cfg.dir.join("stage"))?),
        None => None,
    };

    let me = std::process::id().to_string();
    for f in &cfg.cgroup_procs {
        write_file(f, &me)?;
    }

    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    let userns = if cfg.user_namespace {
        libc::CLONE_NEWUSER
    } else {
        0
    };
    let flags = userns
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like
    // fork(2). This process is single-threaded, so the child may run any code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(err(
            "clone into new namespaces",
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(go_w);
        drop(ready_r);
        let ws = match &ws_fd {
            Some(fd) => WorkspaceSource::Detached(fd.as_raw_fd()),
            None => WorkspaceSource::Path(&cfg.workspace),
        };
        let vols: Vec<(RawFd, PathBuf)> = volumes
            .iter()
            .map(|(fd, target)| (fd.as_raw_fd(), target.clone()))
            .collect();
        let root = layered.as_ref().map(|l| &l.plan);
        let e = match stage2(
            cfg, &host, go_r, &ready_w, listen_fd, ws, creator, &vols, root,
        ) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let _ = nix::unistd::write(&ready_w, e.as_bytes());
        // SAFETY: ending the child without unwinding into stage 1's frames.
        unsafe { libc::_exit(1) }
    }
    let pid = pid as u32;
    drop(go_r);
    drop(ready_w);
    drop(listen_fd);
    let root_fds = layered.as_ref().map(|l| l.fds.as_slice()).unwrap_or(&[]);
    let outcome = stage1_parent(cfg, pid, ws_fd.as_ref(), root_fds, &go_w, ready_r);
    if outcome.is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }
    let (idmapped, idmap_error) = outcome?;
    Ok(InitReady::Ok {
        pid,
        start_time: proc_start_time(pid).unwrap_or(0),
        idmapped,
        idmap_error,
    })
}

/// What stage 1 does to the freshly cloned init from the outside. The real
/// implementation acts on `/proc/<pid>` and the host; tests use a recording
/// fake to check the sequence (maps before release, `setgroups` before
/// `gid_map`, chown only when idmapping fails, network before release).
pub trait ChildSetup {
    fn write(&self, path: &Path, contents: &str) -> Result<(), String>;
    /// Idmap the detached workspace so on-disk 0 is `host_id`.
    fn idmap_workspace(&self, host_id: u32) -> Result<(), String>;
    fn chown_tree(&self, root: &Path, id: u32) -> Result<(), String>;
    /// Idmap a build's layer clones with the init's user namespace.
    fn idmap_root(&self, pid: u32) -> Result<(), String>;
    fn setup_veth(&self, nat: &NatSetup, pid: u32) -> Result<(), String>;
    /// Let the child go on and wait for its verdict (`ok` or an error message).
    fn release_and_wait(&self) -> Result<String, String>;
}

struct RealChildSetup<'a> {
    ws_fd: Option<&'a OwnedFd>,
    root_fds: &'a [OwnedFd],
    go_w: &'a OwnedFd,
    ready_r: std::cell::RefCell<Option<OwnedFd>>,
}

impl ChildSetup for RealChildSetup<'_> {
    fn write(&self, path: &Path, contents: &str) -> Result<(), String> {
        write_file(path, contents)
    }
    fn idmap_workspace(&self, host_id: u32) -> Result<(), String> {
        match self.ws_fd {
            Some(fd) => idmap(fd, host_id),
            None => Err("open_tree is not available".to_string()),
        }
    }
    fn chown_tree(&self, root: &Path, id: u32) -> Result<(), String> {
        chown_tree(root, id)
    }
    fn idmap_root(&self, pid: u32) -> Result<(), String> {
        crate::layers::idmap_all(self.root_fds, pid)
    }
    fn setup_veth(&self, nat: &NatSetup, pid: u32) -> Result<(), String> {
        crate::nat::setup_veth(nat, pid)
    }
    fn release_and_wait(&self) -> Result<String, String> {
        nix::unistd::write(self.go_w, b"g").map_err(|e| err("release init", e))?;
        let ready = self
            .ready_r
            .borrow_mut()
            .take()
            .ok_or_else(|| "released twice".to_string())?;
        let mut msg = String::new();
        std::fs::File::from(ready)
            .read_to_string(&mut msg)
            .map_err(|e| err("wait for init", e))?;
        Ok(msg)
    }
}

/// Detached clones of the volumes, each owned by the agent inside: idmapped
/// (on-disk root becomes the agent's host uid, as for the workspace), or,
/// where the host cannot idmap, handed to the agent's host uid.
fn open_volumes(cfg: &InitConfig) -> Result<Vec<(OwnedFd, PathBuf)>, String> {
    let mut out = Vec::new();
    for v in &cfg.volumes {
        let what = format!("volume {}", v.source.display());
        mounts::check_volume_target(&v.target)?;
        let fd = mounts::open_tree_clone(&v.source).map_err(|e| err(&what, e))?;
        let host_id = cfg.agent_host_uid();
        let mapped = cfg.user_namespace && idmap(&fd, host_id).is_ok();
        if !mapped {
            chown_tree(&v.source, host_id)?;
        }
        out.push((fd, v.target.clone()));
    }
    Ok(out)
}

fn stage1_parent(
    cfg: &InitConfig,
    pid: u32,
    ws_fd: Option<&OwnedFd>,
    root_fds: &[OwnedFd],
    go_w: &OwnedFd,
    ready_r: OwnedFd,
) -> Result<(bool, Option<String>), String> {
    let real = RealChildSetup {
        ws_fd,
        root_fds,
        go_w,
        ready_r: std::cell::RefCell::new(Some(ready_r)),
    };
    prepare_child(cfg, pid, &real)
}

/// The outside half of the init's setup. Returns (idmapped, why not).
pub fn prepare_child(
    cfg: &InitConfig,
    pid: u32,
    ops: &dyn ChildSetup,
) -> Result<(bool, Option<String>), String> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if cfg.user_namespace {
        let map = cfg.id_map();
        ops.write(&proc.join("setgroups"), "deny")?;
        ops.write(&proc.join("uid_map"), &map)?;
        ops.write(&proc.join("gid_map"), &map)?;
    }
    // Best effort: lowering needs CAP_SYS_RESOURCE, which some hosts withhold.
    // The OOM killer picks the largest task anyway, which is never the init.
    let _ = ops.write(&proc.join("oom_score_adj"), "-1000");

    let agent_host_id = cfg.agent_host_uid();
    let idmapped = if cfg.pooled {
        // The workspace arrives with the claim, idmapped by the daemon.
        Ok(())
    } else if cfg.user_namespace {
        ops.idmap_workspace(agent_host_id)
    } else {
        Err("user namespaces are off".to_string())
    };
    let idmap_error = idmapped.err();
    if idmap_error.is_some() && !cfg.pooled {
        // Fallback: hand the tree to the agent's host uid (on overlayfs this
        // copies up every file; mount it with metacopy=on to copy metadata only).
        ops.chown_tree(&cfg.workspace, agent_host_id)?;
    }
    if cfg.building() {
        ops.idmap_root(pid)?;
    }
    if let Some(nat) = &cfg.nat {
        ops.setup_veth(nat, pid)?;
    }
    let msg = ops.release_and_wait()?;
    if msg == "ok" {
        Ok((idmap_error.is_none(), idmap_error))
    } else if msg.is_empty() {
        Err("the sandbox init died during setup".into())
    } else {
        Err(msg)
    }
}

/// Make the detached workspace mount map on-disk uid/gid 0 to `host_id`.
fn idmap(ws_fd: &OwnedFd, host_id: u32) -> Result<(), String> {
    let userns = idmap_userns(host_id)?;
    idmap_with(ws_fd, &userns)
}

/// Make a detached mount map on-disk uid/gid 0 as `userns` (an
/// [`idmap_userns`]) says.
pub fn idmap_with(ws_fd: &OwnedFd, userns: &OwnedFd) -> Result<(), String> {
    let attr = MountAttr {
        attr_set: mounts::MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..Default::default()
    };
    let empty = std::ffi::CString::default();
    mounts::mount_setattr(
        ws_fd.as_raw_fd(),
        &empty,
        libc::AT_EMPTY_PATH as libc::c_uint,
        &attr,
    )
    .map_err(|e| err("idmap the workspace", e))
}

/// A user namespace mapping id 0 to `host_id` (one id), held by its fd.
/// Safe to call from a multi-threaded process (the daemon caches one for
/// warm-pool claims): the cloned child only makes raw syscalls.
pub fn idmap_userns(host_id: u32) -> Result<OwnedFd, String> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    // SAFETY: the child (a fork-like clone) only calls read(2), close(2) and
    // _exit(2), all async-signal-safe, so this holds in a multi-threaded
    // parent too; it allocates nothing and touches no lock.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(err(
            "clone a user namespace",
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(w);
        let mut b = [0u8; 1];
        // Wait until the parent has opened our namespace and closed the pipe.
        let _ = nix::unistd::read(&r, &mut b);
        // SAFETY: leave the helper child immediately.
        unsafe { libc::_exit(0) }
    }
    drop(r);
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let map = format!("0 {host_id} 1\n");
    let res = (|| {
        write_file(&proc.join("setgroups"), "deny")?;
        write_file(&proc.join("uid_map"), &map)?;
        write_file(&proc.join("gid_map"), &map)?;
        let f = std::fs::File::open(proc.join("ns/user")).map_err(|e| err("open userns", e))?;
        Ok(OwnedFd::from(f))
    })();
    drop(w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    res
}

/// Fallback when the host cannot idmap: hand the workspace to the agent's host uid.
/// A workspace whose root already belongs to the agent was prepared that way
/// by its runtime (the worktree runtime builds its shared checkouts owned by
/// the shared agent uid): nothing to walk.
pub(crate) fn chown_tree(root: &Path, id: u32) -> Result<(), String> {
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(root)
            && m.uid() == id
            && m.gid() == id
        {
            return Ok(());
        }
    }
    fn walk(p: &Path, id: u32) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(p)?;
        // Skip what is already the agent's: on overlayfs every chown copies up.
        if meta.uid() != id || meta.gid() != id {
            std::os::unix::fs::lchown(p, Some(id), Some(id))?;
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), id)?;
            }
        }
        Ok(())
    }
    walk(root, id).map_err(|e| err("chown the workspace", e))
}

/// Stage 2: PID 1 of the sandbox. Returns only on a setup error.
// Each argument is a descriptor or view stage 1 prepared for this one call.
#[allow(clippy::too_many_arguments)]
fn stage2(
    cfg: &InitConfig,
    host: &HostView,
    go_r: OwnedFd,
    ready_w: &OwnedFd,
    listen_fd: OwnedFd,
    ws: WorkspaceSource<'_>,
    creator: Option<OwnedFd>,
    volumes: &[(RawFd, PathBuf)],
    root: Option<&crate::layers::RootPlan>,
) -> Result<std::convert::Infallible, String> {
    let mut b = [0u8; 1];
    match nix::unistd::read(&go_r, &mut b) {
        Ok(1) => {}
        _ => return Err("stage 1 went away".into()),
    }
    drop(go_r);
    // Become root of the new user namespace first: an unprivileged uid on
    // the host (files of host root are no longer ours), and one the mounts
    // made in this namespace can represent.
    let zero_g = nix::unistd::Gid::from_raw(0);
    let zero_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(zero_g, zero_g, zero_g).map_err(|e| err("setresgid", e))?;
    nix::unistd::setresuid(zero_u, zero_u, zero_u).map_err(|e| err("setresuid", e))?;
    let new_root = cfg.root_path();
    let plan = mounts::plan(
        host,
        &PlanInput {
            new_root: &new_root,
            hostname: &cfg.hostname,
            tmp_bytes: cfg.tmp_bytes,
            agent_uid: cfg.agent_uid(),
            dns: cfg.dns.as_deref(),
            workspace: !cfg.pooled && !cfg.building(),
            volumes,
            root,
        },
    );
    for op in &plan {
        mounts::apply(op, ws).map_err(|e| e.to_string())?;
    }
    nix::unistd::sethostname(&cfg.hostname).map_err(|e| err("sethostname", e))?;
    loopback_up().map_err(|e| err("bring up lo", e))?;
    // A template build runs as root of its user namespace, with the
    // capabilities it has there (none on the host).
    if !cfg.building() {
        drop_bounding_set();
    }
    // One descriptor per live exec connection: allow as many as the hard limit.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let filters = crate::seccomp::build()?;
    // stdio: nothing of the daemon's or stage 1's may stay open here.
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(|e| err("open /dev/null", e))?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(err("dup2", std::io::Error::last_os_error()));
        }
    }
    drop(null);
    let mut server =
        crate::initserve::Server::new(listen_fd, filters, cfg.nofile, cfg.agent_uid())?;
    if cfg.pooled {
        server = server.unclaimed(cfg.tmp_bytes, creator);
    }
    nix::unistd::write(ready_w, b"ok").map_err(|e| err("report ready", e))?;
    // SAFETY: `ready_w` is ours; closing it tells stage 1 we are ready. The
    // OwnedFd is not used again (we never return on success).
    unsafe { libc::close(ready_w.as_raw_fd()) };
    server.run()
}

/// Drop every capability from the bounding set: nothing executed later can
/// regain one, whatever its uid or file capabilities.
fn drop_bounding_set() {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments; EINVAL past the last capability.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
        {
            break;
        }
    }
}

/// `ip link set lo up` with one ioctl pair.
fn loopback_up() -> std::io::Result<()> {
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills `req`, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS wrote.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Wrap a raw fd we were handed (used by the exec child).
///
/// # Safety
/// `fd` must be open and owned by nobody else.
pub unsafe fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
        idmap_fails: bool,
        verdict: String,
    }

    impl Fake {
        fn log(&self, s: String) {
            self.log.lock().push(s);
        }
        fn entries(&self) -> Vec<String> {
            self.log.lock().clone()
        }
    }

    impl ChildSetup for Fake {
        fn write(&self, path: &Path, contents: &str) -> Result<(), String> {
            self.log(format!("write {} {}", path.display(), contents.trim()));
            Ok(())
        }
        fn idmap_workspace(&self, host_id: u32) -> Result<(), String> {
            self.log(format!("idmap {host_id}"));
            if self.idmap_fails {
                Err("EINVAL".into())
            } else {
                Ok(())
            }
        }
        fn idmap_root(&self, pid: u32) -> Result<(), String> {
            self.log(format!("idmap root {pid}"));
            Ok(())
        }
        fn chown_tree(&self, root: &Path, id: u32) -> Result<(), String> {
            self.log(format!("chown {} {id}", root.display()));
            Ok(())
        }
        fn setup_veth(&self, nat: &NatSetup, pid: u32) -> Result<(), String> {
            self.log(format!("veth {} {pid}", nat.host_if));
            Ok(())
        }
        fn release_and_wait(&self) -> Result<String, String> {
            self.log("release".into());
            Ok(self.verdict.clone())
        }
    }

    fn cfg() -> InitConfig {
        InitConfig {
            id: "a".into(),
            workspace: "/ws".into(),
            dir: "/run/g/a".into(),
            uid_base: 2_000_000,
            uid_count: 65536,
            user_namespace: true,
            cgroup_procs: vec![],
            hostname: "a".into(),
            tmp_bytes: 1 << 20,
            nofile: 1024,
            dns: None,
            nat: Some(crate::nat::nat_setup(2)),
            shared_agent_uid: None,
            pooled: false,
            creator_pid: None,
            volumes: Vec::new(),
            root: None,
        }
    }

    #[test]
    fn maps_then_idmap_then_network_then_release() {
        let fake = Fake {
            verdict: "ok".into(),
            ..Default::default()
        };
        let r = prepare_child(&cfg(), 42, &fake).unwrap();
        assert_eq!(r, (true, None));
        assert_eq!(
            fake.entries(),
            vec![
                "write /proc/42/setgroups deny",
                "write /proc/42/uid_map 0 2000000 65536",
                "write /proc/42/gid_map 0 2000000 65536",
                "write /proc/42/oom_score_adj -1000",
                "idmap 2001000",
                "veth gv2 42",
                "release",
            ]
        );
    }

    #[test]
    fn chown_only_when_idmap_fails_and_errors_surface() {
        let fake = Fake {
            idmap_fails: true,
            verdict: "mount proc: EPERM".into(),
            ..Default::default()
        };
        let err = prepare_child(&cfg(), 7, &fake).unwrap_err();
        assert_eq!(err, "mount proc: EPERM");
        let log = fake.entries();
        let idmap = log.iter().position(|l| l == "idmap 2001000").unwrap();
        let chown = log.iter().position(|l| l == "chown /ws 2001000").unwrap();
        assert!(idmap < chown && chown < log.len() - 1);

        // Without a user namespace: no maps, no idmap attempt, chown.
        let mut c = cfg();
        c.user_namespace = false;
        c.nat = None;
        let fake = Fake {
            verdict: "ok".into(),
            ..Default::default()
        };
        let r = prepare_child(&c, 7, &fake).unwrap();
        assert_eq!(r, (false, Some("user namespaces are off".into())));
        assert_eq!(
            fake.entries(),
            vec![
                "write /proc/7/oom_score_adj -1000",
                "chown /ws 2001000",
                "release",
            ]
        );
        // An init that died says so.
        let fake = Fake::default();
        assert!(prepare_child(&c, 7, &fake).unwrap_err().contains("died"));
    }

    #[test]
    fn a_pooled_init_gets_maps_but_no_workspace_work() {
        let mut c = cfg();
        c.pooled = true;
        c.nat = None;
        let fake = Fake {
            idmap_fails: true,
            verdict: "ok".into(),
            ..Default::default()
        };
        // The workspace (idmap or chown) comes with the claim, not here.
        let r = prepare_child(&c, 9, &fake).unwrap();
        assert_eq!(r, (true, None));
        assert_eq!(
            fake.entries(),
            vec![
                "write /proc/9/setgroups deny",
                "write /proc/9/uid_map 0 2000000 65536",
                "write /proc/9/gid_map 0 2000000 65536",
                "write /proc/9/oom_score_adj -1000",
                "release",
            ]
        );
    }
}

#[cfg(test)]
mod id_map_tests {
    use super::*;

    fn cfg(shared: Option<u32>, userns: bool) -> InitConfig {
        InitConfig {
            id: "a".into(),
            workspace: "/ws".into(),
            dir: "/run/x".into(),
            uid_base: 2_000_000,
            uid_count: 65536,
            user_namespace: userns,
            cgroup_procs: vec![],
            hostname: "a".into(),
            tmp_bytes: 1,
            nofile: 1,
            dns: None,
            nat: None,
            shared_agent_uid: shared,
            pooled: false,
            creator_pid: None,
            volumes: Vec::new(),
            root: None,
        }
    }

    #[test]
    fn the_agent_maps_to_the_shared_uid_and_the_rest_to_the_slot() {
        let c = cfg(Some(999_000), true);
        assert_eq!(
            c.id_map(),
            "0 2000000 1000\n1000 999000 1\n1001 2001001 64535\n"
        );
        assert_eq!(c.agent_host_uid(), 999_000);
        let c = cfg(None, true);
        assert_eq!(c.id_map(), "0 2000000 65536\n");
        assert_eq!(c.agent_host_uid(), 2_001_000);
        // Without a user namespace the agent runs as the slot's own host uid.
        assert_eq!(cfg(Some(999_000), false).agent_host_uid(), 2_001_000);
    }
}
