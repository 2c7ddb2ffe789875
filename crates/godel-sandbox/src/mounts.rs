//! The sandbox's filesystem view, as a plan of [`MountOp`]s computed without
//! side effects (and unit-tested), then applied by the init inside its new
//! mount namespace with [`apply`].
//!
//! The view: a fresh tmpfs root holding read-only, non-recursive binds of
//! the host's system directories (`/usr`, `/etc`, the `/bin`-style symlinks
//! or directories), generated `/etc/passwd`, `/etc/group`, `/etc/hosts` and
//! `/etc/hostname` (user `user`, uid 1000, home `/home/user`), a minimal
//! `/dev`, a private `/tmp`, the sandbox's own `/proc`, and the workspace at
//! `/home/user`, the only writable tree. `/root`, `/home`, `/run`, `/var`, the
//! daemon's state and other agents' workspaces are simply never mounted.
//! Non-recursive binds mean no host submount can sneak in read-write.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// The agent's uid and gid inside the sandbox.
pub const AGENT_UID: u32 = 1000;
/// System directories shown read-only (as symlinks when the host has symlinks).
/// (`/opt` is left out on purpose: it often holds host-specific software and data.)
pub const SYSTEM_DIRS: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Device nodes bound from the host's `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// One step of building the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// `mount --make-rprivate /`.
    PrivateRoot,
    Mkdir(PathBuf, u32),
    Tmpfs {
        target: PathBuf,
        data: String,
        flags: u64,
    },
    /// Bind `source` onto `target` (created as a file or directory first).
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
        file: bool,
    },
    Symlink {
        link: PathBuf,
        to: PathBuf,
    },
    WriteFile {
        path: PathBuf,
        contents: String,
    },
    Proc(PathBuf),
    Devpts(PathBuf),
    /// Attach the prepared workspace mount (a detached, idmapped clone) here;
    /// or bind the host path when the host cannot idmap.
    Workspace(PathBuf),
    /// Attach a prepared detached mount (a volume) at this path.
    Attach {
        fd: RawFd,
        target: PathBuf,
    },
    /// `pivot_root` into this directory and detach the old root.
    PivotRoot(PathBuf),
    /// Make an already mounted path read-only.
    ReadOnly(PathBuf),
    /// Mount overlayfs at `target`: `lowers` top first, and an upper and work
    /// dir when writable (read-only otherwise).
    Overlay {
        target: PathBuf,
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
    },
}

/// What the host looks like where it matters to the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    /// System dirs that exist, with their symlink target when they are one.
    pub system: Vec<(String, Option<PathBuf>)>,
    /// Device nodes that exist in `/dev`.
    pub devices: Vec<String>,
}

impl HostView {
    /// Look at the real host.
    pub fn probe() -> HostView {
        let mut system = Vec::new();
        for d in SYSTEM_DIRS {
            let p = Path::new(d);
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    system.push((d.to_string(), std::fs::read_link(p).ok()));
                }
                Ok(m) if m.is_dir() => system.push((d.to_string(), None)),
                _ => {}
            }
        }
        let devices = DEVICES
            .iter()
            .filter(|n| Path::new("/dev").join(n).exists())
            .map(|n| n.to_string())
            .collect();
        HostView { system, devices }
    }
}

/// Inputs of the plan.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub new_root: &'a Path,
    pub hostname: &'a str,
    /// Size of the private `/tmp`, bytes.
    pub tmp_bytes: u64,
    /// The agent's uid/gid as processes see it (1000 inside a user namespace).
    pub agent_uid: u32,
    /// Lines for `/etc/resolv.conf` (nameservers); `None` keeps the host's file.
    pub dns: Option<&'a [String]>,
    /// Attach the workspace now; `false` (a warm-pool jail) leaves an empty
    /// `/home/user` for the claim to mount on.
    pub workspace: bool,
    /// Prepared volume mounts and where they go (after the workspace).
    pub volumes: &'a [(RawFd, PathBuf)],
    /// A root from template layers instead of a tmpfs with the host's dirs.
    pub root: Option<&'a crate::layers::RootPlan>,
}

/// Where a volume may be mounted: an absolute, normal path outside the
/// workspace, the system directories and the sandbox's own mounts.
pub fn check_volume_target(target: &Path) -> Result<(), String> {
    use std::path::Component;
    let normal = target.is_absolute()
        && target
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && target.components().count() > 1;
    if !normal {
        return Err(format!(
            "volume path {:?} must be an absolute path without '..' (and not /)",
            target.display().to_string()
        ));
    }
    let reserved = SYSTEM_DIRS
        .iter()
        .chain(&["/proc", "/dev", "/sys", "/run", "/tmp", "/var/tmp"])
        .chain(&[godel_core::WORKSPACE_MOUNT]);
    for r in reserved {
        if target.starts_with(r) || Path::new(r).starts_with(target) {
            return Err(format!(
                "volume path {:?} overlaps {r}, which the sandbox provides itself; mount volumes elsewhere (e.g. /mnt/NAME or /data)",
                target.display().to_string()
            ));
        }
    }
    Ok(())
}

/// The sandbox's `/etc/hostname`.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// The sandbox's `/etc/hosts`.
pub fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost {hostname}\n")
}

/// Where the init keeps the generated identity files (bound over `/etc`'s),
/// as seen after the pivot.
pub const IDENTITY_DIR: &str = "/run/godel";

fn under(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// Build the plan.
pub fn plan(host: &HostView, input: &PlanInput<'_>) -> Vec<MountOp> {
    let r = input.new_root;
    let nosuid_nodev: u64 = libc::MS_NOSUID | libc::MS_NODEV;
    let mut ops = vec![MountOp::PrivateRoot];
    if let Some(layers) = input.root {
        ops.extend(crate::layers::plan_root(host, layers, r));
    } else {
        ops.push(MountOp::Tmpfs {
            target: r.to_path_buf(),
            data: "mode=0755,size=1m".into(),
            flags: nosuid_nodev,
        });
    }
    for (dir, link) in host.system.iter().filter(|_| input.root.is_none()) {
        match link {
            Some(to) => ops.push(MountOp::Symlink {
                link: under(r, dir),
                to: to.clone(),
            }),
            None => ops.push(MountOp::Bind {
                source: dir.into(),
                target: under(r, dir),
                readonly: true,
                file: false,
            }),
        }
    }
    // Generated identity files, kept on a small /run tmpfs and bound over /etc's.
    let run = under(r, "/run");
    ops.push(MountOp::Tmpfs {
        target: run.clone(),
        data: "mode=0755,size=1m".into(),
        flags: nosuid_nodev | libc::MS_NOEXEC,
    });
    ops.push(MountOp::Mkdir(run.join("godel"), 0o755));
    let mut files = vec![
        ("passwd", passwd(input.agent_uid)),
        ("group", group(input.agent_uid)),
        ("hostname", hostname_file(input.hostname)),
        ("hosts", hosts_file(input.hostname)),
    ];
    if let Some(dns) = input.dns {
        let body: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        files.push(("resolv.conf", body));
    }
    let has_etc = host.system.iter().any(|(d, l)| d == "/etc" && l.is_none());
    for (name, contents) in files {
        let src = run.join("godel").join(name);
        ops.push(MountOp::WriteFile {
            path: src.clone(),
            contents,
        });
        if has_etc {
            ops.push(MountOp::Bind {
                source: src,
                target: under(r, &format!("/etc/{name}")),
                readonly: true,
                file: true,
            });
        }
    }
    ops.push(MountOp::Tmpfs {
        target: under(r, "/tmp"),
        data: format!("mode=1777,size={}", input.tmp_bytes.max(1 << 20)),
        flags: nosuid_nodev,
    });
    ops.push(MountOp::Mkdir(under(r, "/var"), 0o755));
    ops.push(MountOp::Symlink {
        link: under(r, "/var/tmp"),
        to: "/tmp".into(),
    });
    // /dev: a tmpfs with host device nodes bound in, a private devpts, /dev/shm.
    let dev = under(r, "/dev");
    ops.push(MountOp::Tmpfs {
        target: dev.clone(),
        data: "mode=0755,size=64k".into(),
        flags: libc::MS_NOSUID,
    });
    for d in &host.devices {
        ops.push(MountOp::Bind {
            source: Path::new("/dev").join(d),
            target: dev.join(d),
            readonly: false,
            file: true,
        });
    }
    ops.push(MountOp::Devpts(dev.join("pts")));
    ops.push(MountOp::Symlink {
        link: dev.join("ptmx"),
        to: "pts/ptmx".into(),
    });
    ops.push(MountOp::Tmpfs {
        target: dev.join("shm"),
        data: "mode=1777,size=64m".into(),
        flags: nosuid_nodev,
    });
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            link: dev.join(name),
            to: to.into(),
        });
    }
    // A new /proc must be mounted while the host's is still visible.
    ops.push(MountOp::Proc(under(r, "/proc")));
    let home = under(r, godel_core::WORKSPACE_MOUNT);
    if input.workspace {
        ops.push(MountOp::Workspace(home));
        for (fd, target) in input.volumes {
            ops.push(MountOp::Attach {
                fd: *fd,
                target: under(r, &target.to_string_lossy()),
            });
        }
    } else {
        for d in home.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if d.starts_with(r) && d != r {
                ops.push(MountOp::Mkdir(d.to_path_buf(), 0o755));
            }
        }
    }
    ops.push(MountOp::PivotRoot(r.to_path_buf()));
    // A build writes its new layer through the root: it stays writable.
    if input.root.is_none_or(|l| l.upper.is_none()) {
        ops.push(MountOp::ReadOnly("/".into()));
    }
    ops
}

fn passwd(uid: u32) -> String {
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         user:x:{uid}:{uid}:user:{home}:/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        home = godel_core::WORKSPACE_MOUNT
    )
}

fn group(gid: u32) -> String {
    format!("root:x:0:\nuser:x:{gid}:\nnogroup:x:65534:\n")
}

/// The running workspace attachment: a detached mount fd, or a host path.
#[derive(Debug, Clone, Copy)]
pub enum WorkspaceSource<'a> {
    Detached(RawFd),
    Path(&'a Path),
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

fn ctx(what: &str, p: &Path, e: impl Into<std::io::Error>) -> std::io::Error {
    let e = e.into();
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

/// `MOUNT_ATTR_RDONLY` for `mount_setattr`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_IDMAP`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `mount_setattr(dirfd, path, flags, attr)`.
pub fn mount_setattr(
    dirfd: RawFd,
    path: &CString,
    flags: libc::c_uint,
    attr: &MountAttr,
) -> std::io::Result<()> {
    // SAFETY: `path` is NUL-terminated and `attr` points at a live, correctly
    // sized `struct mount_attr`; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn make_readonly(target: &Path) -> std::io::Result<()> {
    let c = cstr(target)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        ..Default::default()
    };
    // Not recursive: only this mount, never the workspace or /tmp below it.
    match mount_setattr(libc::AT_FDCWD, &c, 0, &attr) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // Old kernels: a bind remount keeping the flags the kernel locks.
            let st = nix::sys::statvfs::statvfs(target)?;
            use nix::sys::statvfs::FsFlags as F;
            let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            for (f, m) in [
                (F::ST_NOSUID, MsFlags::MS_NOSUID),
                (F::ST_NODEV, MsFlags::MS_NODEV),
                (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (F::ST_NOATIME, MsFlags::MS_NOATIME),
                (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (F::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if st.flags().contains(f) {
                    flags |= m;
                }
            }
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Apply one step (inside the new mount namespace).
pub fn apply(op: &MountOp, ws: WorkspaceSource<'_>) -> std::io::Result<()> {
    match op {
        MountOp::PrivateRoot => mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| ctx("make-rprivate", Path::new("/"), e)),
        MountOp::Mkdir(p, mode) => {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(*mode).create(p) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(ctx("mkdir", p, e)),
                _ => Ok(()),
            }
        }
        MountOp::Tmpfs {
            target,
            data,
            flags,
        } => {
            mkdir_p(target)?;
            mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::from_bits_truncate(*flags as _),
                Some(data.as_str()),
            )
            .map_err(|e| ctx("mount tmpfs", target, e))
        }
        MountOp::Bind {
            source,
            target,
            readonly,
            file,
        } => {
            if *file {
                if let Some(parent) = target.parent() {
                    mkdir_p(parent)?;
                }
                if std::fs::symlink_metadata(target).is_err() {
                    std::fs::File::create(target).map_err(|e| ctx("create", target, e))?;
                }
            } else {
                mkdir_p(target)?;
            }
            mount(
                Some(source.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ctx("bind", target, e))?;
            if *readonly {
                make_readonly(target).map_err(|e| ctx("read-only", target, e))?;
            }
            Ok(())
        }
        MountOp::Symlink { link, to } => {
            if let Some(parent) = link.parent() {
                mkdir_p(parent)?;
            }
            // A template layer below may already hold the same link.
            if std::fs::read_link(link).is_ok_and(|t| t == *to) {
                return Ok(());
            }
            std::os::unix::fs::symlink(to, link).map_err(|e| ctx("symlink", link, e))
        }
        MountOp::Overlay {
            target,
            lowers,
            upper,
        } => crate::layers::mount_overlay(target, lowers, upper.as_ref()),
        MountOp::WriteFile { path, contents } => {
            std::fs::write(path, contents).map_err(|e| ctx("write", path, e))
        }
        MountOp::Proc(target) => {
            mkdir_p(target)?;
            mount(
                Some("proc"),
                target,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| ctx("mount proc", target, e))
        }
        MountOp::Devpts(target) => {
            mkdir_p(target)?;
            mount(
                Some("devpts"),
                target,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620"),
            )
            .map_err(|e| ctx("mount devpts", target, e))
        }
        MountOp::Attach { fd, target } => {
            mkdir_p(target)?;
            move_mount_fd(*fd, target)
        }
        MountOp::Workspace(target) => {
            mkdir_p(target)?;
            match ws {
                WorkspaceSource::Detached(fd) => move_mount_fd(fd, target),
                WorkspaceSource::Path(p) => mount(
                    Some(p),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ctx("bind workspace", target, e)),
            }
        }
        MountOp::PivotRoot(root) => {
            nix::unistd::chdir(root).map_err(|e| ctx("chdir", root, e))?;
            nix::unistd::pivot_root(".", ".").map_err(|e| ctx("pivot_root", root, e))?;
            umount2(".", MntFlags::MNT_DETACH).map_err(|e| ctx("detach old root", root, e))?;
            nix::unistd::chdir("/").map_err(|e| ctx("chdir", Path::new("/"), e))
        }
        MountOp::ReadOnly(p) => make_readonly(p).map_err(|e| ctx("read-only", p, e)),
    }
}

fn mkdir_p(p: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(p).map_err(|e| ctx("mkdir", p, e))
}

/// Attach a detached mount (`open_tree(OPEN_TREE_CLONE)`) at `target`.
pub fn move_mount_fd(fd: RawFd, target: &Path) -> std::io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let empty = CString::default();
    let t = cstr(target)?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call;
    // `fd` is the detached mount the init received from its parent.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        Err(ctx(
            "attach workspace",
            target,
            std::io::Error::last_os_error(),
        ))
    } else {
        Ok(())
    }
}

/// `open_tree(path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a detached copy of
/// the mount at `path`, to be idmapped and attached inside the sandbox.
pub fn open_tree_clone(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = cstr(path)?;
    // SAFETY: `c` is a NUL-terminated path alive for the call; on success the
    // kernel returns a new fd that we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(ctx("open_tree", path, std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> HostView {
        HostView {
            system: vec![
                ("/usr".into(), None),
                ("/bin".into(), Some("usr/bin".into())),
                ("/lib".into(), Some("usr/lib".into())),
                ("/etc".into(), None),
            ],
            devices: vec!["null".into(), "urandom".into()],
        }
    }

    fn input(root: &Path) -> PlanInput<'_> {
        PlanInput {
            new_root: root,
            hostname: "agent-1",
            tmp_bytes: 64 << 20,
            agent_uid: AGENT_UID,
            dns: None,
            workspace: true,
            volumes: &[],
            root: None,
        }
    }

    #[test]
    fn plan_binds_system_dirs_read_only_and_hides_the_rest() {
        let root = Path::new("/run/g/a/root");
        let ops = plan(&debian(), &input(root));
        assert_eq!(ops[0], MountOp::PrivateRoot);
        assert!(ops.contains(&MountOp::Bind {
            source: "/usr".into(),
            target: root.join("usr"),
            readonly: true,
            file: false
        }));
        assert!(ops.contains(&MountOp::Symlink {
            link: root.join("bin"),
            to: "usr/bin".into()
        }));
        // Nothing from /root, /home, /var or /run of the host is bound (the
        // generated identity files live under the new root itself).
        for op in &ops {
            if let MountOp::Bind { source, .. } = op
                && !source.starts_with(root)
            {
                for hidden in ["/root", "/home", "/var", "/run", "/sys"] {
                    assert!(!source.starts_with(hidden), "{op:?} exposes {hidden}");
                }
            }
        }
        // Every bind except device nodes is read-only.
        for op in &ops {
            if let MountOp::Bind {
                source, readonly, ..
            } = op
            {
                assert!(*readonly || source.starts_with("/dev"), "{op:?}");
            }
        }
    }

    #[test]
    fn plan_order_proc_before_pivot_workspace_at_home_user() {
        let root = Path::new("/r");
        let ops = plan(&debian(), &input(root));
        let pos = |f: &dyn Fn(&MountOp) -> bool| ops.iter().position(f).unwrap();
        let proc_at = pos(&|o| matches!(o, MountOp::Proc(_)));
        let pivot = pos(&|o| matches!(o, MountOp::PivotRoot(_)));
        let ws = pos(&|o| *o == MountOp::Workspace(root.join("home/user")));
        assert!(proc_at < pivot && ws < pivot);
        assert_eq!(ops.last(), Some(&MountOp::ReadOnly("/".into())));
        // passwd is generated and bound over /etc/passwd with the agent user.
        let written = ops.iter().find_map(|o| match o {
            MountOp::WriteFile { path, contents } if path.ends_with("passwd") => Some(contents),
            _ => None,
        });
        assert!(
            written
                .unwrap()
                .contains("user:x:1000:1000:user:/home/user:")
        );
        assert!(ops.iter().any(|o| matches!(o, MountOp::Bind { target, file: true, .. } if target == &root.join("etc/passwd"))));
        assert!(ops.iter().any(|o| matches!(o, MountOp::Tmpfs { target, data, .. } if target == &root.join("tmp") && data.contains("size=67108864"))));
    }

    #[test]
    fn volumes_attach_after_the_workspace_before_the_pivot() {
        let root = Path::new("/r");
        let vols = [(7, PathBuf::from("/mnt/data")), (8, PathBuf::from("/data"))];
        let mut i = input(root);
        i.volumes = &vols;
        let ops = plan(&debian(), &i);
        let pos = |o: &MountOp| ops.iter().position(|x| x == o).unwrap();
        let ws = pos(&MountOp::Workspace(root.join("home/user")));
        let a = pos(&MountOp::Attach {
            fd: 7,
            target: root.join("mnt/data"),
        });
        let b = pos(&MountOp::Attach {
            fd: 8,
            target: root.join("data"),
        });
        let pivot = pos(&MountOp::PivotRoot(root.to_path_buf()));
        assert!(ws < a && a < b && b < pivot);
        // A pooled jail has no workspace yet, and so no volumes either.
        i.workspace = false;
        assert!(
            !plan(&debian(), &i)
                .iter()
                .any(|o| matches!(o, MountOp::Attach { .. }))
        );
    }

    #[test]
    fn volume_targets_stay_out_of_what_the_sandbox_provides() {
        for ok in ["/mnt/data", "/data", "/srv/x/y", "/home/other"] {
            assert_eq!(check_volume_target(Path::new(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "/",
            "data",
            "/usr/local",
            "/etc",
            "/home/user",
            "/home/user/data",
            "/home",
            "/proc/x",
            "/tmp/v",
            "/mnt/../etc",
            "/dev",
        ] {
            let e = check_volume_target(Path::new(bad)).unwrap_err();
            assert!(e.contains("volume path"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_pool_plan_leaves_an_empty_home_before_the_read_only_pivot() {
        let root = Path::new("/r");
        let mut i = input(root);
        i.workspace = false;
        let ops = plan(&debian(), &i);
        assert!(!ops.iter().any(|o| matches!(o, MountOp::Workspace(_))));
        let pos = |op: MountOp| ops.iter().position(|o| *o == op).unwrap();
        let home = pos(MountOp::Mkdir(root.join("home"), 0o755));
        let user = pos(MountOp::Mkdir(root.join("home/user"), 0o755));
        let pivot = pos(MountOp::PivotRoot(root.to_path_buf()));
        assert!(home < user && user < pivot);
        assert_eq!(ops.last(), Some(&MountOp::ReadOnly("/".into())));
    }

    #[test]
    fn dns_override_only_when_given() {
        let root = Path::new("/r");
        let has_resolv = |ops: &[MountOp]| {
            ops.iter()
                .any(|o| matches!(o, MountOp::Bind { target, .. } if target.ends_with("etc/resolv.conf")))
        };
        assert!(!has_resolv(&plan(&debian(), &input(root))));
        let dns = vec!["10.0.0.53".to_string()];
        let mut i = input(root);
        i.dns = Some(&dns);
        assert!(has_resolv(&plan(&debian(), &i)));
    }
}
