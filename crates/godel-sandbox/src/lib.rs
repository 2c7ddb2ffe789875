//! godel-sandbox: process isolation for godel's local runtimes.
//!
//! [`launcher`] defines the interface a runtime uses: an [`Isolator`] makes
//! a [`Jail`] per sandbox (the isolated environment its processes run in;
//! "sandbox" itself names the whole agent sandbox the control plane tracks,
//! of any runtime), and a jail launches processes. Two isolators:
//! - [`HostIsolator`] (`none`): no isolation, for trusted local use only;
//! - [`NamespaceIsolator`] (`sandbox`, the default): a long-lived init per
//!   agent in new user, mount, PID, IPC, UTS, network and cgroup namespaces,
//!   a pivot_root'ed filesystem view with the workspace at `/home/user` as
//!   the only writable tree, cgroup v2/v1 limits, rlimits, a seccomp filter
//!   and `no_new_privs`; exec is one fork of the init.
//!
//! Layout: [`namespace`] and [`jail`] (daemon side), [`init`] and
//! [`initserve`] (the init process), [`proto`] (their protocol), [`mounts`],
//! [`cgroup`], [`seccomp`], [`nat`] (building blocks), [`hostops`] (host side
//! effects behind a trait with a recording fake).
//!
//! The daemon finds the init as the `godel-sandbox-init` binary (see
//! [`InitProgram::discover`]) or re-executes itself: a binary using
//! [`InitProgram::SelfExe`] must call [`maybe_run_init`] first thing in `main`.

#![allow(unsafe_code)]

pub mod cgroup;
pub mod host;
pub mod hostops;
pub mod init;
pub mod initserve;
pub mod jail;
pub mod launcher;
pub mod layers;
pub mod mounts;
pub mod namespace;
pub mod nat;
pub mod pool;
pub mod portfwd;
pub mod proto;
mod reap;
pub mod seccomp;

pub use host::HostIsolator;
pub use jail::NamespaceJail;
pub use launcher::{
    Isolator, Jail, JailConfig, JailLimits, JailRoot, JailVolume, Process, ProcessExit,
    ProcessSpec, Signaller,
};
pub use namespace::{InitProgram, JailHandle, NamespaceIsolator, NamespaceOptions};

/// If this process was started as a sandbox init (`GODEL_SANDBOX_INIT=1`),
/// run it and exit; otherwise return at once. Call it first thing in `main`,
/// before any thread or runtime starts, in every binary that uses
/// [`InitProgram::SelfExe`]. Once called, [`InitProgram::discover`] falls
/// back to re-executing the current binary when no `godel-sandbox-init` is
/// installed.
pub fn maybe_run_init() {
    namespace::SELF_EXE_INIT.store(true, std::sync::atomic::Ordering::SeqCst);
    if std::env::var_os(init::INIT_ENV).is_some_and(|v| v == "1") {
        // SAFETY: single-threaded at this point (called first in main); the
        // variable must not leak into the sandbox's processes.
        unsafe { std::env::remove_var(init::INIT_ENV) };
        init::stage1_main();
    }
}
