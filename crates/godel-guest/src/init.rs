//! PID-1 duties of the agent inside the microVM.
//!
//! Boot sequence (initramfs → workspace disk → serving):
//! 1. Mount `/proc`, `/sys`, `/dev` (devtmpfs) in the initramfs.
//! 2. Load the kernel modules listed, dependency first, in
//!    `/lib/modules/godel.order` (plain `.ko`, `finit_module`; modules that
//!    are built in or already loaded are skipped).
//! 3. Wait for the root disk (`godel.root=`, default `/dev/vda`), mount it
//!    (ext4) on `/newroot`, move the API mounts over and switch into it
//!    (`MS_MOVE` + `chroot`). Without a disk the initramfs stays the root.
//! 4. Mount `/tmp`, `/dev/pts`, `/dev/shm`; make sure `/home/user` exists and
//!    belongs to `user`; set the hostname (`godel.hostname=` or `/etc/hostname`);
//!    bring `lo` up.
//! 5. Find the virtio-serial port named `agent`, start the reaper, serve.
//!
//! Kernel command line keys read: `godel.root`, `godel.hostname`,
//! `godel.disk_wait_ms` (default 5000).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::server::{Server, ServerConfig};
use crate::sys;

const MS_MOVE: u64 = libc::MS_MOVE;
const MS_NOSUID: u64 = libc::MS_NOSUID;
const MS_NODEV: u64 = libc::MS_NODEV;
const MS_NOEXEC: u64 = libc::MS_NOEXEC;
const MS_RELATIME: u64 = libc::MS_RELATIME;

/// The module list the image builder writes into the initramfs.
pub const MODULE_ORDER_FILE: &str = "/lib/modules/godel.order";

fn log(msg: impl std::fmt::Display) {
    eprintln!("godel-guest: {msg}");
}

/// `godel.*` keys of the kernel command line.
fn cmdline() -> HashMap<String, String> {
    let text = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    text.split_whitespace()
        .filter_map(|kv| kv.strip_prefix("godel."))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn mount_quiet(src: &str, target: &str, fstype: &str, flags: u64, data: Option<&str>) {
    let _ = fs::create_dir_all(target);
    if let Err(e) = sys::mount(src, target, fstype, flags, data)
        && e.raw_os_error() != Some(libc::EBUSY)
    {
        log(format_args!("mount {fstype} on {target}: {e}"));
    }
}

fn mount_api_fs() {
    mount_quiet(
        "proc",
        "/proc",
        "proc",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
    );
    mount_quiet(
        "sysfs",
        "/sys",
        "sysfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
    );
    mount_quiet("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, Some("mode=0755"));
}

/// Load the modules named in the order file. Returns how many were loaded.
/// With `skip_pci` (the kernel runs with `pci=off`) the PCI transport
/// modules are left out: they cost boot time and have nothing to drive.
pub fn load_modules(order_file: &Path, skip_pci: bool) -> usize {
    let Ok(list) = fs::read_to_string(order_file) else {
        return 0;
    };
    let base = order_file.parent().unwrap_or(Path::new("/"));
    let mut loaded = 0;
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if skip_pci && line.starts_with("virtio_pci") {
            continue;
        }
        let path = base.join(line);
        let r = fs::File::open(&path).and_then(|f| sys::finit_module(&f));
        match r {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => log(format_args!("load {}: {e}", path.display())),
        }
    }
    loaded
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Mount the disk and make it `/`. The initramfs stays in memory underneath.
fn switch_root(dev: &str) -> io::Result<()> {
    fs::create_dir_all("/newroot")?;
    sys::mount(dev, "/newroot", "ext4", MS_RELATIME, None)?;
    for m in ["/proc", "/sys", "/dev"] {
        let target = format!("/newroot{m}");
        fs::create_dir_all(&target)?;
        sys::mount(m, &target, "", MS_MOVE, None)?;
    }
    std::env::set_current_dir("/newroot")?;
    sys::mount(".", "/", "", MS_MOVE, None)?;
    sys::chroot(Path::new("."))
}

/// `(uid, gid)` of a user in `/etc/passwd`.
fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn prepare_workspace() {
    let ws = Path::new(godel_core::WORKSPACE_MOUNT);
    if let Err(e) = fs::create_dir_all(ws) {
        log(format_args!("create {}: {e}", ws.display()));
        return;
    }
    if let Some((uid, gid)) = passwd_ids("user")
        && fs::metadata(ws).map(|m| m.uid() != uid).unwrap_or(false)
        && let Err(e) = std::os::unix::fs::chown(ws, Some(uid), Some(gid))
    {
        log(format_args!("chown {}: {e}", ws.display()));
    }
}

fn set_hostname(args: &HashMap<String, String>) {
    let name = args.get("hostname").cloned().or_else(|| {
        fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
    });
    if let Some(h) = name.filter(|h| !h.is_empty()) {
        if let Err(e) = sys::sethostname(&h) {
            log(format_args!("sethostname {h}: {e}"));
        }
        if Path::new("/etc").is_dir() {
            let _ = fs::write("/etc/hostname", format!("{h}\n"));
        }
    }
}

/// The `/dev` node of the virtio-serial port whose name is `name`.
pub fn find_port(name: &str) -> Option<PathBuf> {
    let dir = fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in dir.flatten() {
        let n = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

/// Run as PID 1. Never returns: on a fatal error the VM is powered off.
pub fn run() -> ! {
    let t0 = Instant::now();
    mount_api_fs();
    let args = cmdline();
    let pci_off = fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .any(|a| a == "pci=off");
    let n = load_modules(Path::new(MODULE_ORDER_FILE), pci_off);
    let t_modules = t0.elapsed().as_millis();
    let root_dev = args
        .get("root")
        .cloned()
        .unwrap_or_else(|| "/dev/vda".to_owned());
    let disk_wait = args
        .get("disk_wait_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    if root_dev != "none" && wait_for(Path::new(&root_dev), Duration::from_millis(disk_wait)) {
        if let Err(e) = switch_root(&root_dev) {
            log(format_args!(
                "switching to {root_dev} failed: {e}; staying in the initramfs"
            ));
        }
    } else if root_dev != "none" {
        log(format_args!(
            "no root disk {root_dev}; staying in the initramfs"
        ));
    }
    let t_root = t0.elapsed().as_millis();
    mount_quiet(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        Some("mode=1777"),
    );
    mount_quiet(
        "devpts",
        "/dev/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    );
    mount_quiet(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        Some("mode=1777"),
    );
    mount_quiet(
        "tmpfs",
        "/run",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        Some("mode=0755"),
    );
    prepare_workspace();
    set_hostname(&args);
    if let Err(e) = sys::loopback_up() {
        log(format_args!("loopback up: {e}"));
    }

    let server = Server::new(ServerConfig {
        root: PathBuf::from("/"),
        system: true,
        reap_all: true,
    });
    let reaper = server.clone();
    std::thread::spawn(move || reaper.procs().reap_forever());

    let port = loop {
        if let Some(p) = find_port("agent").filter(|p| p.exists()) {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            fatal("no virtio-serial port named `agent` appeared");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    log(format_args!(
        "{n} modules ({t_modules} ms), root ready ({t_root} ms), serving on {} after {} ms",
        port.display(),
        t0.elapsed().as_millis()
    ));
    let file = match fs::OpenOptions::new().read(true).write(true).open(&port) {
        Ok(f) => f,
        Err(e) => fatal(&format!("open {}: {e}", port.display())),
    };
    if let Err(e) = server.serve_port(file) {
        fatal(&format!("serving the agent port failed: {e}"));
    }
    // serve_port returns only after a shutdown request that failed to power off.
    fatal("agent stopped")
}

fn fatal(msg: &str) -> ! {
    log(format_args!("fatal: {msg}; powering off"));
    sys::sync();
    let e = sys::reboot(true);
    log(format_args!("power off failed: {e}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
