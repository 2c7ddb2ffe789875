//! The QEMU command line and the launcher that starts it.
//!
//! One VM is one `qemu-system-x86_64 -M microvm` process:
//! - `isa-serial=on` (console log) with the RTC left on: `rtc=off` costs 2 s
//!   of boot polling a CMOS that never answers;
//! - guest RAM is a `memory-backend-file`: `share=on` on a private file for a
//!   cold-booted VM (so a snapshot needs only the device state: the file *is*
//!   the RAM), `share=off` on a snapshot's memory file for a restored VM
//!   (`MAP_PRIVATE`: copy-on-write through the shared page cache);
//! - the root disk is a per-VM qcow2 overlay on a read-only base;
//! - the agent channel is a virtio-serial port named `agent` on a Unix socket;
//! - QMP on a second Unix socket; `migration.store-global-state=off` so a
//!   restored VM starts running instead of inheriting the source's `paused`.
//!
//! QEMU runs with transparent huge pages disabled (`PR_SET_THP_DISABLE`):
//! under TCG most of an idle VM's private memory was 2 MiB pages of a
//! translation buffer that holds a few hundred KiB of code per region.
//!
//! QEMU is started with `-daemonize`: it forks, calls `setsid` and detaches,
//! and the parent only exits once the sockets listen. The VM therefore does
//! not die with the daemon (it is re-adopted by pid file + QMP socket), and a
//! start-up error is reported on the parent's stderr, which is captured.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use godel_core::{Error, Result};

/// Which accelerator a VM runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Kernel, initramfs and command line of a cold boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// Everything needed to start one QEMU process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// `Some` for a cold boot; `None` for a restore (the state comes in by migration).
    pub boot: Option<Boot>,
    /// Guest RAM backing file.
    pub ram_file: PathBuf,
    /// `share=on` (writes reach the file) or `share=off` (private copy-on-write).
    pub ram_shared: bool,
    /// Root disk (a qcow2 overlay), if any.
    pub disk: Option<PathBuf>,
    /// Holds `qmp.sock`, `agent.sock`, `console.log`, `qemu.pid`.
    pub run_dir: PathBuf,
    /// Start with `-incoming defer` (restore).
    pub incoming: bool,
    /// Start with `-S`: stay paused after an incoming migration.
    pub start_paused: bool,
    /// Process name (`-name`), also used to recognise the process on adopt.
    pub name: String,
}

/// Paths inside a VM's run directory.
pub fn qmp_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.sock")
}
/// The agent's virtio-serial Unix socket.
pub fn agent_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("agent.sock")
}
/// The serial console log.
pub fn console_log(run_dir: &Path) -> PathBuf {
    run_dir.join("console.log")
}
/// QEMU's pid file.
pub fn pid_file(run_dir: &Path) -> PathBuf {
    run_dir.join("qemu.pid")
}

/// The kernel arguments of a fast, hang-free boot under TCG (see `tsc`).
pub fn kernel_cmdline(extra: &str, tsc_khz: Option<u64>) -> String {
    let mut s = String::from(
        "console=ttyS0 panic=-1 reboot=t quiet cryptomgr.notests init_on_alloc=0 \
         tsc=reliable no_timer_check noreplace-smp mitigations=off pci=off audit=0 apparmor=0",
    );
    if let Some(k) = tsc_khz {
        s.push_str(&format!(" tsc_early_khz={k}"));
    }
    if !extra.trim().is_empty() {
        s.push(' ');
        s.push_str(extra.trim());
    }
    s
}

impl LaunchSpec {
    /// The argument vector (without the program).
    pub fn args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-name", &self.name]);
        push(&["-M", "microvm,isa-serial=on,acpi=on,memory-backend=ram0"]);
        match self.accel {
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        }
        let mem = format!("{}M", self.mem_mib);
        push(&["-m", &mem, "-smp", &self.vcpus.max(1).to_string()]);
        let ram = format!(
            "memory-backend-file,id=ram0,size={mem},mem-path={},share={}",
            p(&self.ram_file),
            if self.ram_shared { "on" } else { "off" }
        );
        push(&["-object", &ram]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        if let Some(b) = &self.boot {
            push(&["-kernel", &p(&b.kernel), "-initrd", &p(&b.initrd)]);
            push(&["-append", &b.cmdline]);
        }
        let chardev = format!(
            "socket,path={},server=on,wait=off,id=agent0",
            p(&agent_socket(&self.run_dir))
        );
        push(&["-chardev", &chardev]);
        push(&["-device", "virtio-serial-device,id=vser0"]);
        push(&[
            "-device",
            "virtserialport,bus=vser0.0,chardev=agent0,name=agent",
        ]);
        if let Some(d) = &self.disk {
            let drive = format!(
                "file={},if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap",
                p(d)
            );
            push(&["-drive", &drive, "-device", "virtio-blk-device,drive=disk0"]);
        }
        let serial = format!("file:{}", p(&console_log(&self.run_dir)));
        push(&["-serial", &serial]);
        let qmp = format!("unix:{},server=on,wait=off", p(&qmp_socket(&self.run_dir)));
        push(&["-qmp", &qmp]);
        push(&["-global", "migration.store-global-state=off"]);
        if self.incoming {
            push(&["-incoming", "defer"]);
        }
        if self.start_paused {
            push(&["-S"]);
        }
        let pidfile = p(&pid_file(&self.run_dir));
        push(&["-daemonize", "-pidfile", &pidfile]);
        a
    }
}

/// Starts QEMU processes. A trait so tests of the logic above it can record
/// launches instead of running them.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Start the VM and return the QEMU pid once its sockets listen.
    async fn launch(&self, spec: &LaunchSpec) -> Result<u32>;
}

/// The real launcher: runs `qemu-system-x86_64 ... -daemonize`.
#[derive(Debug, Default, Clone)]
pub struct QemuLauncher;

#[async_trait]
impl Launcher for QemuLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<u32> {
        let sock_len = qmp_socket(&spec.run_dir).as_os_str().len();
        if sock_len >= 100 {
            return Err(Error::invalid(format!(
                "VM directory {} is too long for a Unix socket path; use a shorter GODEL_HOME",
                spec.run_dir.display()
            )));
        }
        let mut cmd = tokio::process::Command::new(&spec.qemu);
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before `execve` and
        // only makes one `prctl` system call (async-signal-safe, no
        // allocation, no lock).
        unsafe {
            cmd.pre_exec(|| {
                // Transparent huge pages off for QEMU (inherited through its
                // `-daemonize` fork): TCG asks for huge pages on its
                // translation buffer, so each of its 8 regions a VM touches
                // costs 2 MiB (16 MiB of an idle restored VM's PSS) where 4 KiB
                // pages cost what the code uses.
                let _ = nix::sys::prctl::set_thp_disable(true);
                Ok(())
            })
        };
        let out = cmd
            .args(spec.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::io(format!("start {}", spec.qemu.display()), &e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(Error::spawn(format!(
                "qemu failed to start ({}): {}",
                out.status,
                err.trim()
            )));
        }
        read_pid_file(&pid_file(&spec.run_dir)).await
    }
}

/// Read a QEMU pid file.
pub async fn read_pid_file(path: &Path) -> Result<u32> {
    let s = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Error::io(format!("read {}", path.display()), &e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::internal(format!("bad pid file {}: {s:?}", path.display())))
}

/// The QEMU version string (`7.2.22`), from `qemu-system-x86_64 --version`.
pub async fn qemu_version(qemu: &Path) -> Result<String> {
    let out = tokio::process::Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("run {} --version", qemu.display()), &e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| Error::internal(format!("unexpected qemu --version output {text:?}")))
}

/// Find a program in `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            qemu: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            vcpus: 1,
            mem_mib: 256,
            boot: Some(Boot {
                kernel: "/i/vmlinux".into(),
                initrd: "/i/initrd".into(),
                cmdline: kernel_cmdline("", Some(2445432)),
            }),
            ram_file: "/r/ram".into(),
            ram_shared: true,
            disk: Some("/r/disk.qcow2".into()),
            run_dir: "/r".into(),
            incoming: false,
            start_paused: false,
            name: "godel-x".into(),
        }
    }

    #[test]
    fn cold_boot_args() {
        let a = spec().args().join(" ");
        assert!(a.contains("-M microvm,isa-serial=on,acpi=on,memory-backend=ram0"));
        assert!(a.contains("mem-path=/r/ram,share=on"));
        assert!(a.contains("size=256M"));
        assert!(a.contains("tsc_early_khz=2445432"));
        assert!(a.contains("-kernel /i/vmlinux"));
        assert!(a.contains("path=/r/agent.sock,server=on,wait=off"));
        assert!(a.contains("name=agent"));
        assert!(a.contains("-qmp unix:/r/qmp.sock"));
        assert!(a.contains("migration.store-global-state=off"));
        assert!(a.contains("-daemonize -pidfile /r/qemu.pid"));
        assert!(!a.contains("-incoming"));
        assert!(!a.contains("rtc=off"));
    }

    #[test]
    fn restore_args() {
        let mut s = spec();
        s.boot = None;
        s.ram_shared = false;
        s.incoming = true;
        let a = s.args().join(" ");
        assert!(a.contains("share=off"));
        assert!(a.contains("-incoming defer"));
        assert!(!a.contains("-kernel"));
    }
}
