//! A jail root made of template layers (see [`crate::launcher::JailRoot`]).
//!
//! Stage 1 (host root) opens a detached clone of every layer directory, of
//! the build's upper directory and, when building, of each host system
//! directory ([`open`]); a build idmaps all of them with the jail's own user
//! namespace ([`idmap_all`]) so files owned by root on disk are root's inside
//! and overlayfs can copy them up. Stage 2 attaches the clones on a staging
//! tmpfs (`<run dir>/stage`) and mounts, inside its user namespace:
//! - the root: an overlay of every layer's `root/` over an empty directory,
//!   with the build's new `layer/root` as upper (or a tmpfs upper that the
//!   final read-only remount freezes, for a sandbox);
//! - each host system directory (`/usr`, `/etc`, ...): an overlay of the
//!   layers' `sys/<dir>` over the host's directory (upper: the build's
//!   `layer/sys/<dir>`), or the plain read-only bind of today when no layer
//!   changes it.
//!
//! Sandboxes get the layers read-only (like the host's system directories of
//! any sandbox); only the workspace at `/home/user` is writable.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::launcher::JailRoot;
use crate::mounts::{HostView, MountOp};

/// What stage 2 needs to build a layered root (descriptors are stage 1's clones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootPlan {
    /// Host directory the staging tmpfs is mounted on.
    pub stage: PathBuf,
    /// Layer clones, top first.
    pub layer_fds: Vec<RawFd>,
    /// Per layer, the system directories (`/usr`) it has a copy of.
    pub layer_sys: Vec<Vec<String>>,
    /// The build's upper directory clone.
    pub upper: Option<RawFd>,
    /// Idmapped clones of the host's system directories (builds only).
    pub host_fds: Vec<(String, RawFd)>,
}

fn name(dir: &str) -> &str {
    dir.trim_start_matches('/')
}

/// The mount steps replacing the plain tmpfs root and system binds.
pub fn plan_root(host: &HostView, rp: &RootPlan, r: &Path) -> Vec<MountOp> {
    let s = &rp.stage;
    let mut ops = vec![MountOp::Tmpfs {
        target: s.clone(),
        data: "mode=0755,size=1m".into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
    }];
    for (i, fd) in rp.layer_fds.iter().enumerate() {
        ops.push(MountOp::Attach {
            fd: *fd,
            target: s.join(format!("l{i}")),
        });
    }
    if let Some(fd) = rp.upper {
        ops.push(MountOp::Attach {
            fd,
            target: s.join("u"),
        });
    }
    for (dir, fd) in &rp.host_fds {
        ops.push(MountOp::Attach {
            fd: *fd,
            target: s.join("h").join(name(dir)),
        });
    }
    ops.push(MountOp::Mkdir(s.join("empty"), 0o755));
    let mut lowers: Vec<PathBuf> = (0..rp.layer_fds.len())
        .map(|i| s.join(format!("l{i}/root")))
        .collect();
    lowers.push(s.join("empty"));
    let upper = match rp.upper {
        Some(_) => (s.join("u/layer/root"), s.join("u/work/root")),
        None => {
            ops.push(MountOp::Mkdir(s.join("up"), 0o755));
            ops.push(MountOp::Mkdir(s.join("wk"), 0o755));
            (s.join("up"), s.join("wk"))
        }
    };
    ops.push(MountOp::Overlay {
        target: r.to_path_buf(),
        lowers,
        upper: Some(upper),
    });
    for (dir, link) in &host.system {
        let target = r.join(name(dir));
        if let Some(to) = link {
            ops.push(MountOp::Symlink {
                link: target,
                to: to.clone(),
            });
            continue;
        }
        let mut lowers: Vec<PathBuf> = rp
            .layer_sys
            .iter()
            .enumerate()
            .filter(|(_, has)| has.iter().any(|d| d == dir))
            .map(|(i, _)| s.join(format!("l{i}/sys/{}", name(dir))))
            .collect();
        let host_dir = match rp.host_fds.iter().any(|(d, _)| d == dir) {
            true => s.join("h").join(name(dir)),
            false => PathBuf::from(dir),
        };
        lowers.push(host_dir);
        if rp.upper.is_some() {
            ops.push(MountOp::Overlay {
                target,
                lowers,
                upper: Some((
                    s.join("u/layer/sys").join(name(dir)),
                    s.join("u/work").join(name(dir)),
                )),
            });
        } else if lowers.len() > 1 {
            ops.push(MountOp::Overlay {
                target,
                lowers,
                upper: None,
            });
        } else {
            ops.push(MountOp::Bind {
                source: dir.into(),
                target,
                readonly: true,
                file: false,
            });
        }
    }
    ops
}

/// Mount overlayfs (inside the jail's user namespace: `userxattr`).
pub fn mount_overlay(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<&(PathBuf, PathBuf)>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    let join = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut data = format!("lowerdir={}", join(lowers));
    let mut flags = MsFlags::MS_NOSUID;
    match upper {
        Some((u, w)) => {
            std::fs::create_dir_all(u)?;
            std::fs::create_dir_all(w)?;
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        None => flags |= MsFlags::MS_RDONLY,
    }
    let with_xattr = format!("{data},userxattr");
    let res = match mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(with_xattr.as_str()),
    ) {
        Err(nix::errno::Errno::EINVAL) => mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        ),
        other => other,
    };
    res.map_err(|e| {
        std::io::Error::other(format!(
            "mount overlay at {} ({data}): {e}",
            target.display()
        ))
    })
}

/// Stage 1's clones for a layered root, kept open until stage 2 has them.
pub struct Opened {
    pub plan: RootPlan,
    /// Every clone (to idmap when building, and to keep open).
    pub fds: Vec<OwnedFd>,
}

/// Open the clones a layered root needs (as host root, before the clone of
/// stage 2). The build's upper directory gets its `layer/` and `work/`
/// subdirectories here.
pub fn open(root: &JailRoot, host: &HostView, stage: &Path) -> Result<Opened, String> {
    let err = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    std::fs::create_dir_all(stage).map_err(|e| err("mkdir", stage, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(stage, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err("chmod", stage, e))?;
    }
    let real: Vec<&String> = host
        .system
        .iter()
        .filter(|(_, l)| l.is_none())
        .map(|(d, _)| d)
        .collect();
    let mut plan = RootPlan {
        stage: stage.to_path_buf(),
        ..Default::default()
    };
    let mut fds = Vec::new();
    for l in &root.layers {
        if !l.join("root").is_dir() {
            return Err(format!("template layer {} is incomplete", l.display()));
        }
        let fd = crate::mounts::open_tree_clone(l).map_err(|e| e.to_string())?;
        read_only(&fd)?;
        plan.layer_fds.push(fd.as_raw_fd());
        plan.layer_sys.push(
            real.iter()
                .filter(|d| l.join("sys").join(name(d)).is_dir())
                .map(|d| d.to_string())
                .collect(),
        );
        fds.push(fd);
    }
    if let Some(u) = &root.upper {
        let mut dirs = vec![u.join("layer/root"), u.join("work/root")];
        for d in &real {
            dirs.push(u.join("layer/sys").join(name(d)));
            dirs.push(u.join("work").join(name(d)));
        }
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(|e| err("mkdir", &d, e))?;
        }
        let fd = crate::mounts::open_tree_clone(u).map_err(|e| e.to_string())?;
        plan.upper = Some(fd.as_raw_fd());
        fds.push(fd);
        for d in &real {
            let fd =
                crate::mounts::open_tree_clone(Path::new(d.as_str())).map_err(|e| e.to_string())?;
            read_only(&fd)?;
            plan.host_fds.push((d.to_string(), fd.as_raw_fd()));
            fds.push(fd);
        }
    }
    Ok(Opened { plan, fds })
}

/// Make a detached clone read-only: lower layers and the host's directories
/// are only ever read through overlayfs (and a build's idmapped clone of
/// `/usr` must never be writable as root).
fn read_only(fd: &OwnedFd) -> Result<(), String> {
    let attr = crate::mounts::MountAttr {
        attr_set: 0x1, // MOUNT_ATTR_RDONLY
        ..Default::default()
    };
    crate::mounts::mount_setattr(
        fd.as_raw_fd(),
        &std::ffi::CString::default(),
        libc::AT_EMPTY_PATH as libc::c_uint,
        &attr,
    )
    .map_err(|e| format!("make a template layer read-only: {e}"))
}

/// Idmap every clone with the user namespace of the jail's init `pid`: what
/// is root's on disk is root's inside.
pub fn idmap_all(fds: &[OwnedFd], pid: u32) -> Result<(), String> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| format!("open the jail's user namespace: {e}"))?;
    let ns = OwnedFd::from(ns);
    for fd in fds {
        crate::init::idmap_with(fd, &ns).map_err(|e| format!("template layers: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostView {
        HostView {
            system: vec![
                ("/usr".into(), None),
                ("/bin".into(), Some("usr/bin".into())),
                ("/etc".into(), None),
            ],
            devices: vec![],
        }
    }

    #[test]
    fn a_sandbox_root_lays_layers_over_the_host_read_only() {
        let rp = RootPlan {
            stage: "/s".into(),
            layer_fds: vec![7, 8],
            layer_sys: vec![vec!["/usr".into()], vec![]],
            upper: None,
            host_fds: vec![],
        };
        let ops = plan_root(&host(), &rp, Path::new("/r"));
        assert!(ops.contains(&MountOp::Overlay {
            target: "/r".into(),
            lowers: vec!["/s/l0/root".into(), "/s/l1/root".into(), "/s/empty".into()],
            upper: Some(("/s/up".into(), "/s/wk".into())),
        }));
        assert!(ops.contains(&MountOp::Overlay {
            target: "/r/usr".into(),
            lowers: vec!["/s/l0/sys/usr".into(), "/usr".into()],
            upper: None,
        }));
        // No layer changes /etc: the plain read-only bind.
        assert!(ops.contains(&MountOp::Bind {
            source: "/etc".into(),
            target: "/r/etc".into(),
            readonly: true,
            file: false
        }));
        assert!(ops.contains(&MountOp::Symlink {
            link: "/r/bin".into(),
            to: "usr/bin".into()
        }));
    }

    #[test]
    fn a_build_writes_every_dir_into_its_new_layer() {
        let rp = RootPlan {
            stage: "/s".into(),
            layer_fds: vec![],
            layer_sys: vec![],
            upper: Some(9),
            host_fds: vec![("/usr".into(), 10), ("/etc".into(), 11)],
        };
        let ops = plan_root(&host(), &rp, Path::new("/r"));
        assert!(ops.contains(&MountOp::Overlay {
            target: "/r/etc".into(),
            lowers: vec!["/s/h/etc".into()],
            upper: Some(("/s/u/layer/sys/etc".into(), "/s/u/work/etc".into())),
        }));
        assert!(ops.contains(&MountOp::Overlay {
            target: "/r".into(),
            lowers: vec!["/s/empty".into()],
            upper: Some(("/s/u/layer/root".into(), "/s/u/work/root".into())),
        }));
    }
}
