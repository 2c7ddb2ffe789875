//! overlayfs for copy-on-write workspaces: mount a workspace (shared lower
//! checkout + its own upper and work dirs), unmount it, find it in
//! `/proc/self/mountinfo`, and probe once whether overlay mounts work here.
//!
//! Why overlayfs and not reflinks: this host's ext4 has no reflinks, and a
//! reflink copy still walks every file (spawn time grows with the file
//! count); an overlay mount is one syscall whatever the repo size.
//! `redirect_dir=on` is asked for so directories that come from the lower
//! layer can be renamed (without it `rename(2)` returns `EXDEV`).

use std::path::{Path, PathBuf};

use godel_core::{Error, Result};
use nix::mount::{MntFlags, MsFlags};

/// The three directories of an overlay workspace besides its mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    /// Optional layer above `lower` (a snapshot's delta).
    pub delta: Option<PathBuf>,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

fn option_path(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .ok_or_else(|| Error::unavailable(format!("overlay path {} is not UTF-8", p.display())))?;
    if s.contains([',', ':', '\\', '\n']) {
        return Err(Error::unavailable(format!(
            "overlay path {s:?} contains ',', ':' or '\\\\'; move GODEL_HOME to a plainer path"
        )));
    }
    Ok(s.to_string())
}

/// Mount `dirs` at `target`.
pub fn mount(dirs: &OverlayDirs, target: &Path) -> Result<()> {
    let lowers = match &dirs.delta {
        Some(d) => format!("{}:{}", option_path(d)?, option_path(&dirs.lower)?),
        None => option_path(&dirs.lower)?,
    };
    let base = format!(
        "lowerdir={lowers},upperdir={},workdir={}",
        option_path(&dirs.upper)?,
        option_path(&dirs.work)?
    );
    let with_redirect = format!("{base},redirect_dir=on");
    let first = nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(with_redirect.as_str()),
    );
    let res = match first {
        Err(nix::errno::Errno::EINVAL) => nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(base.as_str()),
        ),
        other => other,
    };
    res.map_err(|e| {
        let msg = format!("cannot mount overlay at {}: {e}", target.display());
        if e == nix::errno::Errno::EPERM {
            Error::unavailable(format!("{msg} (mounting needs root or CAP_SYS_ADMIN)"))
        } else {
            Error::spawn(msg)
        }
    })
}

/// Unmount `target` (lazily, so a process still inside cannot block it).
/// Not mounted is success.
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::internal(format!(
            "cannot unmount {}: {e}",
            target.display()
        ))),
    }
}

/// Whether something is mounted exactly at `target` (per `/proc/self/mountinfo`).
pub fn is_mounted(target: &Path) -> Result<bool> {
    // Fast path: a mount point on another device than its parent directory
    // is mounted (overlay and loop mounts always are). Reading mountinfo is
    // O(mounts) and takes the namespace lock that every mount and unmount
    // needs: with 1,000 workspaces mounted, the health monitor's status
    // calls alone made spawns wait seconds. Same-device cases (bind mounts,
    // `/`, a missing path) still read mountinfo.
    use std::os::unix::fs::MetadataExt;
    if let (Some(parent), Ok(m)) = (target.parent(), std::fs::symlink_metadata(target))
        && let Ok(pm) = std::fs::metadata(parent)
        && m.dev() != pm.dev()
    {
        return Ok(true);
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("cannot read /proc/self/mountinfo", &e))?;
    let want = target.to_string_lossy();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape(mp) == want))
}

/// Undo mountinfo's octal escapes (`\040` for a space ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Try one overlay mount in a scratch directory under `scratch`.
/// `Ok(())` when overlay works; the error says why not.
pub fn probe(scratch: &Path) -> Result<()> {
    let base = scratch.join(format!("overlay-probe-{}", crate::layout::unique()));
    let dirs = OverlayDirs {
        delta: None,
        lower: base.join("lower"),
        upper: base.join("upper"),
        work: base.join("work"),
    };
    let merged = base.join("merged");
    let res = (|| {
        for d in [&dirs.lower, &dirs.upper, &dirs.work, &merged] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), &e))?;
        }
        std::fs::write(dirs.lower.join("probe"), b"lower")
            .map_err(|e| Error::io("cannot write probe file", &e))?;
        mount(&dirs, &merged)?;
        let seen = std::fs::read(merged.join("probe"));
        let written = std::fs::write(merged.join("upper-probe"), b"x");
        unmount(&merged)?;
        match (seen, written) {
            (Ok(b), Ok(())) if b == b"lower" => Ok(()),
            _ => Err(Error::unavailable(
                "overlay mounted but did not behave (read/write through it failed)",
            )),
        }
    })();
    let _ = crate::layout::remove_tree(&base);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/x\"), r"/x\");
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mounted(Path::new("/")).unwrap());
        assert!(!is_mounted(Path::new("/definitely/not/here")).unwrap());
    }
}
