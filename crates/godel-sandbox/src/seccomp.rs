//! The syscall filter every sandboxed process runs under, plus the other
//! per-process hardening (rlimits, `no_new_privs`).
//!
//! Two filters are stacked:
//! 1. a hand-written prefix that answers `ENOSYS` to `clone3` (so libc falls
//!    back to `clone`, whose flags a filter can inspect) and to the x32 ABI
//!    (syscall numbers with bit 30 set, which would dodge a deny list);
//! 2. a [`seccompiler`] deny list answering `EPERM`: mounts and the new mount
//!    API, `pivot_root`/`chroot`, `unshare`/`setns` and `clone` with any
//!    namespace flag (no new user namespaces), `ptrace` and cross-process
//!    memory access, module loading, kexec, `keyctl`, `bpf`,
//!    `perf_event_open`, `io_uring`, `userfaultfd`, `open_by_handle_at`,
//!    clock setting, swap, reboot, quotas, accounting, `syslog`.
//!
//! Everything else is allowed; the user namespace already strips privilege
//! over host resources, the filter shrinks the kernel surface.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Denied outright with `EPERM`.
pub const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("quotactl", libc::SYS_quotactl),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
];

/// Namespace flags `clone` may not carry.
const NS_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

/// The compiled filters, built once by the init and applied in every child.
#[derive(Debug, Clone)]
pub struct Filters {
    prefix: Vec<libc::sock_filter>,
    deny: BpfProgram,
}

/// Build both filters.
pub fn build() -> Result<Filters, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, Vec::new());
    }
    let mut clone_rules = Vec::new();
    for flag in NS_FLAGS {
        let flag = flag as u64;
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(|e| e.to_string())?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(|e| e.to_string())?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    let deny: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    Ok(Filters {
        prefix: prefix_filter(),
        deny,
    })
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// `clone3` and (on x86_64) the x32 ABI answer `ENOSYS`.
fn prefix_filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    const JEQ_K: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const JGE_K: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    const RET_K: u32 = libc::BPF_RET | libc::BPF_K;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let x32_floor: u32 = if cfg!(target_arch = "x86_64") {
        0x4000_0000
    } else {
        u32::MAX
    };
    vec![
        // A = seccomp_data.nr
        stmt(LD_W_ABS, 0),
        jump(JEQ_K, libc::SYS_clone3 as u32, 2, 0),
        jump(JGE_K, x32_floor, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(RET_K, enosys),
    ]
}

impl Filters {
    /// Install both filters on the calling thread (sets `no_new_privs` first).
    /// Async-signal-safe: no allocation.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let prog = libc::sock_fprog {
            len: self.prefix.len() as u16,
            filter: self.prefix.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at our filter vector, alive for the call; the
        // kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        seccompiler::apply_filter(&self.deny).map_err(std::io::Error::other)
    }
}

/// Resource limits every sandboxed process gets (applied between fork and
/// exec, with `RLIMIT_CORE = 0`).
#[derive(Debug, Clone, Copy)]
pub struct Rlimits {
    pub nofile: u64,
}

impl Default for Rlimits {
    fn default() -> Self {
        Rlimits { nofile: 8192 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_cover_the_brief() {
        let f = build().unwrap();
        assert!(!f.deny.is_empty());
        for name in [
            "mount",
            "ptrace",
            "kexec_load",
            "init_module",
            "finit_module",
            "keyctl",
            "bpf",
            "perf_event_open",
            "unshare",
        ] {
            assert!(DENIED.iter().any(|(n, _)| *n == name), "{name} not denied");
        }
    }

    #[test]
    fn filter_denies_in_a_forked_child() {
        let f = build().unwrap();
        // A child process so the filter does not stick to the test runner.
        // SAFETY: the child only makes raw syscalls and `_exit`s.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = f.apply().is_ok();
                // SAFETY: raw syscalls with constant arguments.
                let unshare = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
                let err = std::io::Error::last_os_error().raw_os_error();
                // SAFETY: raw syscall; clone3 with a null args pointer.
                let c3 = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
                let err3 = std::io::Error::last_os_error().raw_os_error();
                let code = if !ok {
                    1
                } else if unshare != -1 || err != Some(libc::EPERM) {
                    2
                } else if c3 != -1 || err3 != Some(libc::ENOSYS) {
                    3
                } else {
                    0
                };
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
