//! Thin safe wrappers over the few raw syscalls the agent needs that std
//! does not offer: signals, waiting, mounts, module loading, the clock, the
//! hostname, the RNG, statvfs and power off. Every `unsafe` block is here.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `kill(pid, sig)`; a negative pid addresses a process group.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

impl WaitStatus {
    fn from_raw(st: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(st) {
            Some(WaitStatus::Exited(libc::WEXITSTATUS(st)))
        } else if libc::WIFSIGNALED(st) {
            Some(WaitStatus::Signaled(libc::WTERMSIG(st)))
        } else {
            None
        }
    }
}

/// Block until `pid` (or any child for -1) ends; returns the pid and how it
/// ended. Retries on EINTR; skips stop/continue notifications.
pub fn wait(pid: i32) -> io::Result<(i32, WaitStatus)> {
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: `st` is a valid, writable c_int for the call's duration.
        let rc = unsafe { libc::waitpid(pid, &mut st, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if let Some(ws) = WaitStatus::from_raw(st) {
            return Ok((rc, ws));
        }
    }
}

/// `mount(2)`.
pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let src = cstr(src)?;
    let target = cstr(target)?;
    let fstype = cstr(fstype)?;
    let data = data.map(cstr).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: all pointers are valid NUL-terminated strings (or null for
    // data) that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data_ptr,
        )
    };
    check(rc).map(|_| ())
}

/// `chroot(2)` into `dir`, then `chdir("/")`.
pub fn chroot(dir: &Path) -> io::Result<()> {
    let d = cpath(dir)?;
    // SAFETY: `d` is a valid NUL-terminated path for the call's duration.
    check(unsafe { libc::chroot(d.as_ptr()) })?;
    std::env::set_current_dir("/")
}

/// Load a kernel module from an open file (`finit_module`).
pub fn finit_module(file: &std::fs::File) -> io::Result<()> {
    let params = c"";
    // SAFETY: the fd is open for the call's duration and params is a valid
    // empty C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Set the wall clock.
pub fn set_realtime(unix_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec for the call's duration.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(|_| ())
}

/// Set the kernel's hostname.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(|_| ())
}

/// Bring the loopback interface up (the guest has no other network device;
/// servers in the sandbox and the port bridge use `127.0.0.1`).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming `lo`; the kernel fills the flags.
    let r = check(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) }).and_then(|_| {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above, with the flags to set.
        check(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) }).map(|_| ())
    });
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    r
}

/// Mix `bytes` into the kernel RNG and credit them as entropy
/// (`RNDADDENTROPY` on `/dev/urandom`; needs CAP_SYS_ADMIN).
/// `urandom` is `/dev/urandom` opened for writing, kept open by the caller
/// so the call after a restore does no path lookup; the request is built in
/// a stack buffer (no allocation), 256 bytes at a time.
pub fn add_entropy(urandom: &std::fs::File, bytes: &[u8]) -> io::Result<()> {
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const CHUNK: usize = 256;
    for part in bytes.chunks(CHUNK) {
        // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
        let mut info = [0u32; 2 + CHUNK / 4];
        info[0] = (part.len() * 8) as u32;
        info[1] = part.len() as u32;
        let mut payload = [0u8; CHUNK];
        payload[..part.len()].copy_from_slice(part);
        for (w, b) in info[2..].iter_mut().zip(payload.chunks_exact(4)) {
            *w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        // SAFETY: `info` is laid out as struct rand_pool_info (two ints, then
        // at least `buf_size` bytes) and lives for the call's duration.
        check(unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })?;
    }
    Ok(())
}

/// Milliseconds since boot, suspend included (what `/proc/uptime` says),
/// from the vDSO: no file to open on the agent's reply path.
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Total and free bytes of the file system holding `path`.
pub fn statvfs(path: &Path) -> io::Result<(u64, u64)> {
    let p = cpath(path)?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a valid C string and `st` a writable statvfs.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// Flush file system buffers.
pub fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() }
}

/// Power off (or reboot) the machine now. Only returns on failure.
pub fn reboot(poweroff: bool) -> io::Error {
    let cmd = if poweroff {
        libc::RB_POWER_OFF
    } else {
        libc::RB_AUTOBOOT
    };
    // SAFETY: reboot has no memory-safety preconditions.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// Become the reaper of orphaned descendants (used when not PID 1).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ())
}
