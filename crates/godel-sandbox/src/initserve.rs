//! The init's serving loop (PID 1 of a sandbox, single-threaded): accepts
//! control connections, forks one child per `Exec`, relays `Kill` to the
//! child's process group, reaps every process of the namespace and reports
//! the exit of the ones it started. See [`crate::proto`] for the messages.
//!
//! A started child, between `fork` and `execve`: reports itself (`Pid`,
//! on the status socket the daemon sent with the request, so the daemon
//! learns its host pid from `SCM_CREDENTIALS`), takes its stdio, starts a new
//! session, resets `oom_score_adj` and the signal mask, sets rlimits, becomes
//! `user` (no capabilities), changes to the working directory, installs the
//! seccomp filters (`no_new_privs` first) and executes, searching `PATH`
//! like `execvp`. A failure is reported as `[stage, errno]` on the status
//! socket; success shows as the socket closing (it is close-on-exec). The
//! init never waits for an exec.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::proto::{self, Reply, Request};
use crate::seccomp::{Filters, Rlimits};

/// Where a failure happened in the child (reported with the errno).
pub const STAGE_SETUP: u8 = 0;
pub const STAGE_CWD: u8 = 1;
pub const STAGE_EXEC: u8 = 2;

struct Conn {
    fd: OwnedFd,
    child: Option<i32>,
}

/// The init's server state.
pub struct Server {
    listen: OwnedFd,
    sigfd: SignalFd,
    filters: Filters,
    rlimits: Rlimits,
    agent_uid: u32,
    conns: HashMap<RawFd, Conn>,
    /// Child pid (namespace) → connection fd.
    children: HashMap<i32, RawFd>,
    /// A warm-pool jail not yet claimed: the size its `/tmp` was made with.
    unclaimed: Option<u64>,
    /// Until claimed: a pidfd of the daemon that made this jail; the init
    /// exits when it becomes readable (the daemon is gone).
    creator: Option<OwnedFd>,
}

impl Server {
    pub fn new(
        listen: OwnedFd,
        filters: Filters,
        nofile: u64,
        agent_uid: u32,
    ) -> Result<Server, String> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(|e| format!("block SIGCHLD: {e}"))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;
        Ok(Server {
            listen,
            sigfd,
            filters,
            rlimits: Rlimits { nofile },
            agent_uid,
            conns: HashMap::new(),
            children: HashMap::new(),
            unclaimed: None,
            creator: None,
        })
    }

    /// Serve as a warm-pool jail: refuse `Exec` until a `Claim` arrives.
    pub fn unclaimed(mut self, tmp_bytes: u64, creator: Option<OwnedFd>) -> Server {
        self.unclaimed = Some(tmp_bytes);
        self.creator = creator;
        self
    }

    /// Attach the claimed workspace and take the sandbox's identity.
    fn claim(&mut self, hostname: &str, tmp_bytes: u64, fds: &[OwnedFd]) -> Result<(), String> {
        let Some(made_with) = self.unclaimed else {
            return Err("this sandbox is already claimed".into());
        };
        let [ws] = fds else {
            return Err("a claim carries exactly one workspace mount".into());
        };
        let home = std::path::Path::new(godel_core::WORKSPACE_MOUNT);
        crate::mounts::move_mount_fd(ws.as_raw_fd(), home).map_err(|e| e.to_string())?;
        nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {e}"))?;
        let ids = std::path::Path::new(crate::mounts::IDENTITY_DIR);
        for (name, body) in [
            ("hostname", crate::mounts::hostname_file(hostname)),
            ("hosts", crate::mounts::hosts_file(hostname)),
        ] {
            // In place: /etc/<name> is a bind of this very inode.
            std::fs::write(ids.join(name), body).map_err(|e| format!("write {name}: {e}"))?;
        }
        let tmp_bytes = tmp_bytes.max(1 << 20);
        if tmp_bytes != made_with.max(1 << 20) {
            let data = format!("mode=1777,size={tmp_bytes}");
            nix::mount::mount(
                None::<&str>,
                "/tmp",
                None::<&str>,
                nix::mount::MsFlags::MS_REMOUNT
                    | nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV,
                Some(data.as_str()),
            )
            .map_err(|e| format!("resize /tmp: {e}"))?;
        }
        self.unclaimed = None;
        // Claimed jails outlive daemon restarts.
        self.creator = None;
        Ok(())
    }

    /// Serve forever.
    pub fn run(mut self) -> ! {
        loop {
            let mut fds: Vec<RawFd> = self.conns.keys().copied().collect();
            fds.sort_unstable();
            let (ready_listen, ready_sig, ready_conns) = {
                let mut pfds = Vec::with_capacity(fds.len() + 3);
                pfds.push(PollFd::new(self.listen.as_fd(), PollFlags::POLLIN));
                pfds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
                for fd in &fds {
                    let c = &self.conns[fd];
                    pfds.push(PollFd::new(c.fd.as_fd(), PollFlags::POLLIN));
                }
                if let Some(c) = &self.creator {
                    pfds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut pfds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    // Nothing sensible to do but try again.
                    Err(_) => continue,
                }
                let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
                if let Some(c) = &self.creator {
                    let mut gone = [PollFd::new(c.as_fd(), PollFlags::POLLIN)];
                    if poll(&mut gone, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
                        // The daemon that made this unclaimed jail is gone.
                        std::process::exit(0);
                    }
                }
                let conns: Vec<RawFd> = fds
                    .iter()
                    .zip(pfds.iter().skip(2))
                    .filter(|(_, p)| ready(p))
                    .map(|(fd, _)| *fd)
                    .collect();
                (ready(&pfds[0]), ready(&pfds[1]), conns)
            };
            if ready_sig {
                self.reap();
            }
            for fd in ready_conns {
                self.on_conn(fd);
            }
            if ready_listen {
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        // SAFETY: accept4 on our listening socket; null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                self.listen.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        // SAFETY: accept4 returned a fresh descriptor that we now own.
        let owned = unsafe { crate::init::owned(fd) };
        self.conns.insert(
            fd,
            Conn {
                fd: owned,
                child: None,
            },
        );
    }

    fn close(&mut self, fd: RawFd) {
        if let Some(c) = self.conns.remove(&fd)
            && let Some(pid) = c.child
        {
            self.children.remove(&pid);
        }
    }

    fn on_conn(&mut self, fd: RawFd) {
        let msg = match proto::recv_msg(fd, MsgFlags::MSG_DONTWAIT) {
            Ok(Some(m)) => m,
            Ok(None) => return self.close(fd),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => return self.close(fd),
        };
        let req: Request = match proto::parse(&msg.data) {
            Ok(r) => r,
            Err(_) => return self.close(fd),
        };
        match req {
            Request::Ping => {
                let _ = proto::send_msg(
                    fd,
                    &Reply::Pong {
                        pid: nix::unistd::getpid().as_raw(),
                    },
                    &[],
                );
            }
            Request::Kill { sig } => {
                if let Some(pid) = self.conns.get(&fd).and_then(|c| c.child) {
                    // SAFETY: kill(2) on the child's process group.
                    unsafe { libc::kill(-pid, sig) };
                }
            }
            Request::Claim {
                hostname,
                tmp_bytes,
            } => {
                let reply = match self.claim(&hostname, tmp_bytes, &msg.fds) {
                    Ok(()) => Reply::Claimed,
                    Err(message) => Reply::Failed { message },
                };
                let _ = proto::send_msg(fd, &reply, &[]);
            }
            Request::Exec {
                argv,
                env,
                cwd,
                stdin,
            } => {
                // A warm-pool jail runs nothing before it is claimed.
                let already = self.unclaimed.is_some()
                    || self.conns.get(&fd).is_some_and(|c| c.child.is_some());
                let mut fds = msg.fds;
                if already || fds.is_empty() {
                    return self.close(fd);
                }
                let status = fds.remove(0);
                match self.spawn(&status, &argv, &env, &cwd, stdin, fds) {
                    Ok(pid) => {
                        if let Some(c) = self.conns.get_mut(&fd) {
                            c.child = Some(pid);
                        }
                        self.children.insert(pid, fd);
                    }
                    Err((stage, errno)) => {
                        report(status.as_raw_fd(), stage, errno);
                        self.close(fd);
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        while self.sigfd.read_signal().ok().flatten().is_some() {}
        loop {
            let st = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => st,
            };
            let (pid, code, signal) = match st {
                WaitStatus::Exited(p, c) => (p.as_raw(), c, None),
                WaitStatus::Signaled(p, s, _) => (p.as_raw(), 128 + s as i32, Some(s as i32)),
                _ => continue,
            };
            if let Some(fd) = self.children.remove(&pid) {
                let _ = proto::send_msg(fd, &Reply::Exit { code, signal }, &[]);
                self.conns.remove(&fd);
            }
        }
    }

    /// Fork and execute one child. Returns its pid, or (stage, errno). The
    /// child reports to the daemon itself over `status` (close-on-exec, so
    /// the daemon sees it close when the exec succeeded); the init never waits.
    fn spawn(
        &mut self,
        status: &OwnedFd,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        with_stdin: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<i32, (u8, i32)> {
        let invalid = (STAGE_SETUP, libc::EINVAL);
        let want = if with_stdin { 3 } else { 2 };
        if fds.len() != want {
            return Err(invalid);
        }
        let prog = argv.first().ok_or(invalid)?;
        // Everything the child needs is allocated before fork.
        let c = |s: &str| CString::new(s).map_err(|_| invalid);
        let cargv: Vec<CString> = argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let cenv: Vec<CString> = env
            .iter()
            .map(|(k, v)| c(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        let candidates: Vec<CString> = if prog.contains('/') {
            vec![c(prog)?]
        } else {
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| c(&format!("{d}/{prog}")))
                .collect::<Result<_, _>>()?
        };
        let ccwd = c(cwd)?;
        let mut argv_p: Vec<*const libc::c_char> = cargv.iter().map(|a| a.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut env_p: Vec<*const libc::c_char> = cenv.iter().map(|a| a.as_ptr()).collect();
        env_p.push(std::ptr::null());
        let pid_msg = serde_json::to_vec(&Reply::Pid).map_err(|_| invalid)?;

        // SAFETY: the init is single-threaded; the child runs only the code in
        // `child_exec`, which never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err((STAGE_SETUP, errno()));
        }
        if pid == 0 {
            let stdin = if with_stdin {
                Some(fds[0].as_raw_fd())
            } else {
                None
            };
            let ctx = ChildCtx {
                pid_msg: &pid_msg,
                stdin,
                stdout: fds[want - 2].as_raw_fd(),
                stderr: fds[want - 1].as_raw_fd(),
                status: status.as_raw_fd(),
                cwd: &ccwd,
                candidates: &candidates,
                argv: &argv_p,
                env: &env_p,
                filters: &self.filters,
                rlimits: self.rlimits,
                agent_uid: self.agent_uid,
            };
            child_exec(&ctx);
        }
        Ok(pid)
    }
}

/// A failure as the daemon reads it: `[stage, errno as 4 native-endian bytes]`.
fn report(status: RawFd, stage: u8, errno: i32) {
    let e = errno.to_ne_bytes();
    let buf = [stage, e[0], e[1], e[2], e[3]];
    // SAFETY: send(2) of a stack buffer on a socket this process holds.
    unsafe { libc::send(status, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
}

struct ChildCtx<'a> {
    pid_msg: &'a [u8],
    stdin: Option<RawFd>,
    stdout: RawFd,
    stderr: RawFd,
    status: RawFd,
    cwd: &'a CString,
    candidates: &'a [CString],
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    filters: &'a Filters,
    rlimits: Rlimits,
    agent_uid: u32,
}

fn fail(status: RawFd, stage: u8, errno: i32) -> ! {
    report(status, stage, errno);
    // SAFETY: leave the forked child at once, without running destructors.
    unsafe { libc::_exit(127) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The child between fork and exec. Only raw syscalls, no allocation.
fn child_exec(c: &ChildCtx<'_>) -> ! {
    // SAFETY: every call below is a raw syscall on descriptors and buffers
    // this child owns (copies made by fork) or on NUL-terminated strings and
    // NULL-terminated pointer arrays prepared before fork and still alive.
    unsafe {
        // The init blocks SIGCHLD for its signalfd; the agent must not inherit that.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Tell the daemon our host pid (SCM_CREDENTIALS is added by the kernel).
        libc::send(
            c.status,
            c.pid_msg.as_ptr().cast(),
            c.pid_msg.len(),
            libc::MSG_NOSIGNAL,
        );
        let stdin = match c.stdin {
            Some(fd) => fd,
            None => libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY),
        };
        if stdin < 0
            || libc::dup2(stdin, 0) < 0
            || libc::dup2(c.stdout, 1) < 0
            || libc::dup2(c.stderr, 2) < 0
        {
            fail(c.status, STAGE_SETUP, errno());
        }
        if libc::setsid() < 0 {
            fail(c.status, STAGE_SETUP, errno());
        }
        let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
        if adj >= 0 {
            libc::write(adj, b"0".as_ptr().cast(), 1);
            libc::close(adj);
        }
        let nofile = libc::rlimit {
            rlim_cur: c.rlimits.nofile,
            rlim_max: c.rlimits.nofile,
        };
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) < 0
            || libc::setrlimit(libc::RLIMIT_CORE, &core) < 0
        {
            fail(c.status, STAGE_SETUP, errno());
        }
        // Become the agent user; leaving uid 0 clears every capability.
        let id = c.agent_uid;
        if libc::setresgid(id, id, id) < 0 || libc::setresuid(id, id, id) < 0 {
            fail(c.status, STAGE_SETUP, errno());
        }
        if libc::chdir(c.cwd.as_ptr()) < 0 {
            fail(c.status, STAGE_CWD, errno());
        }
        if c.filters.apply().is_err() {
            fail(c.status, STAGE_SETUP, errno());
        }
        let mut last = libc::ENOENT;
        for cand in c.candidates {
            libc::execve(cand.as_ptr(), c.argv.as_ptr(), c.env.as_ptr());
            let e = errno();
            // Like execvp: keep looking past ENOENT, remember anything more telling.
            if e != libc::ENOENT && e != libc::ENOTDIR {
                last = e;
            }
        }
        fail(c.status, STAGE_EXEC, last)
    }
}
