//! `NamespaceJail`: one live sandbox as the daemon holds it. `launch`
//! connects to the init, hands over a status socket and the stdio pipe ends,
//! reads the child's host pid (from its own credentials) and the outcome of
//! its exec from the status socket, and later `Exit` from the connection. Signals go to the init on the same connection, which signals the
//! child's whole process group. Usage comes from the cgroups; OOM kills are
//! observed by a small watcher (and right after any SIGKILL exit) and sent
//! to the event sink as `oom` events carrying the runtime id.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use godel_core::{Error, Event, EventSink, ResourceUsage, Result};
use nix::fcntl::OFlag;
use nix::sys::socket::MsgFlags;
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;

use crate::cgroup::JailCgroups;
use crate::hostops::HostOps;
use crate::launcher::{Jail, JailConfig, Process, ProcessExit, ProcessSpec};
use crate::namespace::{JailHandle, default_env, init_alive, wait_empty};
use crate::proto::{self, Reply, Request};

/// Watches a sandbox's OOM-kill counter and reports each new kill once.
pub struct OomWatch {
    id: String,
    cgroups: JailCgroups,
    events: EventSink,
    seen: AtomicU64,
}

impl OomWatch {
    pub fn new(id: String, cgroups: JailCgroups, events: EventSink) -> Self {
        let seen = cgroups.usage().oom_kills;
        OomWatch {
            id,
            cgroups,
            events,
            seen: AtomicU64::new(seen),
        }
    }

    /// Read the counter; emit one `oom` event per new kill. Returns the total.
    pub fn check(&self) -> u64 {
        let now = self.cgroups.usage().oom_kills;
        let before = self.seen.swap(now, Ordering::SeqCst);
        if now > before {
            (self.events)(
                Event::new(godel_core::EventKind::Oom)
                    .runtime(self.id.clone())
                    .data(serde_json::json!({
                        "oom_kills": now,
                        "new": now - before,
                        "message": "a process exceeded the sandbox memory limit and was killed",
                    })),
            );
        }
        now
    }
}

/// A live sandbox.
pub struct NamespaceJail {
    cfg: JailConfig,
    handle: JailHandle,
    cgroups: JailCgroups,
    oom: Arc<OomWatch>,
    ops: Arc<dyn HostOps>,
    run_dir: PathBuf,
    socket: PathBuf,
    destroyed: AtomicBool,
    over_disk: AtomicBool,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    disk: Mutex<Option<(Instant, u64)>>,
}

impl NamespaceJail {
    pub(crate) fn new(
        cfg: JailConfig,
        handle: JailHandle,
        cgroups: JailCgroups,
        oom: Arc<OomWatch>,
        ops: Arc<dyn HostOps>,
        run_dir: PathBuf,
    ) -> Self {
        let socket = handle.dir.join("ctl.sock");
        let w = oom.clone();
        let watcher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                w.check();
            }
        });
        NamespaceJail {
            cfg,
            handle,
            cgroups,
            oom,
            ops,
            run_dir,
            socket,
            destroyed: AtomicBool::new(false),
            over_disk: AtomicBool::new(false),
            watcher: Mutex::new(Some(watcher)),
            disk: Mutex::new(None),
        }
    }

    /// The host uid the agent (`user`, uid 1000 inside) runs as.
    pub fn agent_host_uid(&self) -> u32 {
        self.handle
            .agent_host_uid
            .unwrap_or(self.handle.uid_base + crate::mounts::AGENT_UID)
    }

    /// The workspace disk limit is reported, not enforced: emit one
    /// `disk_limit_exceeded` event each time usage crosses it.
    fn check_disk(&self, used: u64) {
        let Some(limit) = self.cfg.limits.disk_bytes else {
            return;
        };
        let over = used > limit;
        if self.over_disk.swap(over, Ordering::SeqCst) != over && over {
            (self.oom.events)(
                Event::new(godel_core::EventKind::DiskLimitExceeded)
                    .runtime(self.cfg.id.clone())
                    .data(serde_json::json!({ "disk_bytes": used, "limit_bytes": limit })),
            );
        }
    }

    fn stop_watcher(&self) {
        if let Some(w) = self.watcher.lock().take() {
            w.abort();
        }
    }

    async fn disk_bytes(&self) -> u64 {
        const TTL: Duration = Duration::from_secs(5);
        if let Some((at, v)) = *self.disk.lock()
            && at.elapsed() < TTL
        {
            return v;
        }
        let ws = self.cfg.workspace.clone();
        let v = tokio::task::spawn_blocking(move || du(&ws))
            .await
            .unwrap_or(0);
        *self.disk.lock() = Some((Instant::now(), v));
        v
    }
}

impl Drop for NamespaceJail {
    fn drop(&mut self) {
        self.stop_watcher();
    }
}

/// Allocated bytes under `root` (like `du -s`), not following symlinks or mounts.
pub fn du(root: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    let dev = meta.dev();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != dev {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

async fn recv(afd: &AsyncFd<OwnedFd>) -> std::io::Result<Option<proto::Received>> {
    loop {
        let mut guard = afd.readable().await?;
        match guard
            .try_io(|inner| proto::recv_msg(inner.get_ref().as_raw_fd(), MsgFlags::MSG_DONTWAIT))
        {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe", &e.into()))
}

/// Turn a child's `[stage, errno]` report into an error with the right code.
fn failed_error(stage: u8, errno: i32, prog: &str, cwd: &str) -> Error {
    use crate::initserve::{STAGE_CWD, STAGE_EXEC};
    let e = std::io::Error::from_raw_os_error(errno);
    match (stage, errno) {
        (STAGE_EXEC, libc::ENOENT) => Error::exec(format!("command not found: {prog}")),
        (STAGE_CWD, _) => Error::invalid(format!("cannot change to working directory {cwd}: {e}")),
        (_, libc::EAGAIN | libc::ENOMEM) => Error::exhausted(format!(
            "cannot start {prog}: {e} (the sandbox is at its process or memory limit)"
        )),
        (STAGE_EXEC, libc::EACCES | libc::EPERM) => {
            Error::denied(format!("cannot execute {prog}: {e}"))
        }
        (STAGE_EXEC, _) => Error::exec(format!("cannot execute {prog}: {e}")),
        _ => Error::exec(format!("cannot set up {prog}: {e}")),
    }
}

#[async_trait]
impl Jail for NamespaceJail {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn init_pid(&self) -> Option<u32> {
        Some(self.handle.init_pid)
    }

    async fn connect_port(&self, port: u16) -> Result<tokio::net::TcpStream> {
        crate::portfwd::connect_in_netns(self.handle.init_pid, port, &self.cfg.id).await
    }

    async fn update_network(&self, network: &godel_core::NetworkConfig) -> Result<()> {
        crate::nat::update(&*self.ops, &self.handle, &self.cfg, network)
    }

    fn workspace_view(&self) -> String {
        godel_core::WORKSPACE_MOUNT.to_string()
    }

    async fn launch(&self, spec: ProcessSpec) -> Result<Process> {
        if self.destroyed.load(Ordering::SeqCst) {
            return Err(Error::not_found(format!(
                "sandbox {} is destroyed",
                self.cfg.id
            )));
        }
        if spec.argv.is_empty() {
            return Err(Error::invalid("exec needs a command"));
        }
        // Relative paths are under the workspace. Other absolute paths are the
        // agent's own view (e.g. `/tmp`): harmless here, the chdir happens inside.
        let cwd = match spec.cwd.as_deref() {
            Some(c) if c.starts_with('/') && godel_core::workspace_relative(c).is_err() => {
                if c.contains('\0') {
                    return Err(Error::invalid("cwd contains a NUL byte"));
                }
                c.to_string()
            }
            other => {
                let rel = godel_core::workspace_relative(other.unwrap_or(""))?;
                if rel.is_empty() {
                    godel_core::WORKSPACE_MOUNT.to_string()
                } else {
                    format!("{}/{rel}", godel_core::WORKSPACE_MOUNT)
                }
            }
        };
        let mut env = default_env(&self.cfg.id);
        env.extend(self.cfg.env.clone());
        env.extend(spec.env.clone());
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin_pair = if spec.stdin { Some(pipe()?) } else { None };

        let sock = proto::connect(&self.socket).map_err(|e| {
            Error::unavailable(format!("sandbox {} does not answer: {e}", self.cfg.id))
        })?;
        // The child reports on this socket pair (see `proto`).
        let (status, status_child) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| Error::io("socketpair", &e.into()))?;
        nix::sys::socket::setsockopt(&status, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(|e| Error::io("SO_PASSCRED", &e.into()))?;
        let mut fds = vec![status_child.as_raw_fd()];
        if let Some((r, _)) = &stdin_pair {
            fds.push(r.as_raw_fd());
        }
        fds.push(out_w.as_raw_fd());
        fds.push(err_w.as_raw_fd());
        let prog = spec.argv[0].clone();
        let req = Request::Exec {
            argv: spec.argv.clone(),
            env: env.into_iter().collect(),
            cwd: cwd.clone(),
            stdin: spec.stdin,
        };
        proto::send_msg(sock.as_raw_fd(), &req, &fds)
            .map_err(|e| Error::io("send the exec request", &e))?;
        drop(status_child);
        drop(out_w);
        drop(err_w);
        let stdin_w = stdin_pair.map(|(r, w)| {
            drop(r);
            w
        });
        nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| Error::io("socket", &e.into()))?;
        let signal_fd = sock.try_clone().map_err(|e| Error::io("dup", &e))?;
        // SAFETY: each AsyncFd owns its OwnedFd: the descriptor stays open and
        // the same for the AsyncFd's whole life.
        let afd = unsafe { AsyncFd::register(sock) }
            .map_err(|e| Error::internal(format!("register the control socket: {e}")))?;
        // SAFETY: as above.
        let status = unsafe { AsyncFd::register(status) }
            .map_err(|e| Error::internal(format!("register the status socket: {e}")))?;

        // `Pid`, then a failure report or the close that means "executed".
        let mut host_pid = None;
        while let Some(msg) = recv(&status)
            .await
            .map_err(|e| Error::io("read from the sandbox init", &e))?
        {
            if msg.data.len() == 5 {
                let errno =
                    i32::from_ne_bytes([msg.data[1], msg.data[2], msg.data[3], msg.data[4]]);
                return Err(failed_error(msg.data[0], errno, &prog, &cwd));
            }
            if let Ok(Reply::Pid) = proto::parse::<Reply>(&msg.data) {
                host_pid = msg.creds.map(|c| c.pid() as u32);
            }
        }
        drop(status);
        let pid = host_pid
            .ok_or_else(|| Error::exec(format!("sandbox {} did not start {prog}", self.cfg.id)))?;

        let oom = self.oom.clone();
        let (init_pid, start) = (self.handle.init_pid, self.handle.start_time);
        let exit = async move {
            loop {
                match recv(&afd).await? {
                    Some(msg) => {
                        if let Ok(Reply::Exit { code, signal }) = proto::parse::<Reply>(&msg.data) {
                            if signal == Some(libc::SIGKILL) {
                                oom.check();
                            }
                            return Ok(ProcessExit { code, signal });
                        }
                    }
                    None => {
                        // The init went away: the namespace and everything in it died with it.
                        if !init_alive(init_pid, start) {
                            oom.check();
                            return Ok(ProcessExit {
                                code: 128 + libc::SIGKILL,
                                signal: Some(libc::SIGKILL),
                            });
                        }
                        return Err(std::io::Error::other(
                            "lost the connection to the sandbox init",
                        ));
                    }
                }
            }
        }
        .boxed();
        let signal_fd = Arc::new(signal_fd);
        let signal = Arc::new(move |sig: i32| {
            let msg = serde_json::to_vec(&Request::Kill { sig }).map_err(std::io::Error::other)?;
            // SAFETY: send(2) of a live buffer on a socket we own.
            let rc = unsafe {
                libc::send(
                    signal_fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                // The process already finished: nothing left to signal.
                if e.raw_os_error() == Some(libc::EPIPE)
                    || e.raw_os_error() == Some(libc::ECONNRESET)
                {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                return Err(e);
            }
            Ok(())
        });
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)
            .map_err(|e| Error::io("stdout pipe", &e))?;
        let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)
            .map_err(|e| Error::io("stderr pipe", &e))?;
        let stdin = match stdin_w {
            Some(w) => Some(Box::pin(
                tokio::net::unix::pipe::Sender::from_owned_fd(w)
                    .map_err(|e| Error::io("stdin pipe", &e))?,
            ) as _),
            None => None,
        };
        Ok(Process {
            pid,
            stdin,
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            exit,
            signal,
        })
    }

    async fn alive(&self) -> bool {
        !self.destroyed.load(Ordering::SeqCst)
            && init_alive(self.handle.init_pid, self.handle.start_time)
    }

    async fn usage(&self) -> Result<ResourceUsage> {
        let u = self.cgroups.usage();
        let oom_kills = self.oom.check();
        let disk_bytes = self.disk_bytes().await;
        self.check_disk(disk_bytes);
        // The host side of the veth receives what the agent sends.
        let counter = |name: &str| {
            self.handle
                .veth
                .as_ref()
                .and_then(|v| {
                    std::fs::read_to_string(format!("/sys/class/net/{v}/statistics/{name}")).ok()
                })
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(ResourceUsage {
            cpu_seconds: u.cpu_seconds,
            memory_bytes: u.memory_bytes,
            memory_peak_bytes: u.memory_peak_bytes,
            pids: u.pids,
            disk_bytes,
            rx_bytes: counter("tx_bytes"),
            tx_bytes: counter("rx_bytes"),
            oom_kills,
        })
    }

    async fn freeze(&self, frozen: bool) -> Result<()> {
        self.cgroups.freeze(frozen).map_err(|e| {
            Error::io(
                format!("cannot {} sandbox", if frozen { "freeze" } else { "thaw" }),
                &e,
            )
        })
    }

    async fn destroy(&self) -> Result<()> {
        self.destroyed.store(true, Ordering::SeqCst);
        self.stop_watcher();
        let (pid, start) = (self.handle.init_pid, self.handle.start_time);
        // A frozen group cannot die: thaw first.
        let _ = self.cgroups.freeze(false);
        if init_alive(pid, start) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Anything that escaped the PID namespace's death (nothing should) goes too.
        if !wait_empty(&self.cgroups, Duration::from_secs(2)).await {
            for p in self.cgroups.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            wait_empty(&self.cgroups, Duration::from_secs(2)).await;
        }
        let mut last = Ok(());
        for _ in 0..50 {
            last = self.cgroups.remove();
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let name = self.handle.host_name(&self.cfg.id);
        crate::namespace::release(&*self.ops, &self.run_dir, name, self.handle.slot);
        let _ = std::fs::remove_file(self.cfg.state_dir.join("sandbox.json"));
        last.map_err(|e| Error::io(format!("cannot remove the cgroups of {}", self.cfg.id), &e))
    }

    fn handle(&self) -> serde_json::Value {
        serde_json::to_value(&self.handle).unwrap_or(serde_json::Value::Null)
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        (!self.handle.idmapped).then(|| (self.agent_host_uid(), self.agent_host_uid()))
    }
}
