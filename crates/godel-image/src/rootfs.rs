//! The ext4 root file system, made with `mkfs.ext4 -d DIR` (no mounting).
//!
//! The default root is minimal: Debian's static busybox with its applet
//! symlinks (`sh` included), optionally the host's `git` with the shared
//! libraries `ldd` names, `/etc/passwd` and `/etc/group` with `root` and
//! `user` (uid 1000), and `/home/user` owned by `user`. A user directory
//! (`--from-dir`) is copied as is and only completed with what the agent
//! needs (mount points, the `user` account, `/home/user`).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use godel_core::{Error, Result};

use crate::{Progress, elf, io_err};

/// uid/gid of the workspace user.
pub const USER_ID: u32 = 1000;

/// What the root is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// busybox (+ git when `with_git` and available).
    Default { with_git: bool },
    /// A directory tree to copy.
    Dir(PathBuf),
}

/// Where the static busybox lives on Debian (`busybox-static`).
pub fn find_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(b) = fs::read(p)
            && elf::is_static(&b) == Some(true)
        {
            return Ok(PathBuf::from(p));
        }
    }
    Err(Error::unavailable(
        "no static busybox found: install Debian's busybox-static (scripts/setup.d/30-microvm.sh)",
    ))
}

fn mkdirs(root: &Path, dirs: &[&str]) -> Result<()> {
    for d in dirs {
        fs::create_dir_all(root.join(d)).map_err(|e| io_err(format!("create {d}"), &e))?;
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| io_err("chmod", &e))
}

fn write(p: &Path, text: &str) -> Result<()> {
    fs::write(p, text).map_err(|e| io_err(format!("write {}", p.display()), &e))
}

/// Copy `src` to the same absolute path under `root`, following symlinks.
fn copy_in(root: &Path, src: &Path) -> Result<()> {
    let rel = src.strip_prefix("/").unwrap_or(src);
    let dst = root.join(rel);
    if dst.exists() {
        return Ok(());
    }
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p).map_err(|e| io_err("create dir", &e))?;
    }
    fs::copy(src, &dst).map_err(|e| io_err(format!("copy {}", src.display()), &e))?;
    Ok(())
}

/// Add the host's git and its libraries. Returns false when there is no git.
fn add_git(root: &Path) -> Result<bool> {
    let git = Path::new("/usr/bin/git");
    if !git.exists() {
        return Ok(false);
    }
    let out = Command::new("ldd")
        .arg(git)
        .output()
        .map_err(|e| Error::unavailable(format!("cannot run ldd: {e}")))?;
    if !out.status.success() {
        return Ok(false);
    }
    copy_in(root, git)?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            copy_in(root, Path::new(p))?;
        }
    }
    let templates = Path::new("/usr/share/git-core/templates");
    if templates.is_dir() {
        fs::create_dir_all(root.join("usr/share/git-core/templates"))
            .map_err(|e| io_err("create git templates", &e))?;
    }
    Ok(true)
}

/// Fill `root` with the default minimal system. Returns the extras added.
pub fn default_root(root: &Path, with_git: bool) -> Result<Vec<String>> {
    mkdirs(
        root,
        &[
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "etc",
            "root",
            "home/user",
            "tmp",
            "proc",
            "sys",
            "dev",
            "run",
            "var/tmp",
            "lib",
            "lib64",
            "mnt",
        ],
    )?;
    let bb = find_busybox()?;
    fs::copy(&bb, root.join("bin/busybox")).map_err(|e| io_err("copy busybox", &e))?;
    set_mode(&root.join("bin/busybox"), 0o755)?;
    let list = Command::new(&bb)
        .arg("--list-full")
        .output()
        .map_err(|e| Error::unavailable(format!("cannot run busybox: {e}")))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join(applet.trim_start_matches('/'));
        if applet.is_empty() || link.exists() || link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(p) = link.parent() {
            fs::create_dir_all(p).map_err(|e| io_err("create applet dir", &e))?;
        }
        symlink("/bin/busybox", &link).map_err(|e| io_err(format!("link {applet}"), &e))?;
    }
    let mut extras = vec!["busybox".to_owned()];
    if with_git && add_git(root)? {
        extras.push("git".to_owned());
    }
    write(&root.join("etc/hostname"), "godel\n")?;
    write(
        &root.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    )?;
    write(
        &root.join("etc/profile"),
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\u@\\h:\\w\\$ '\n",
    )?;
    write(
        &root.join("etc/os-release"),
        "NAME=godel-minimal\nID=godel\n",
    )?;
    complete(root)?;
    Ok(extras)
}

/// Make any root usable by the agent: mount points, `user`, `/home/user`.
pub fn complete(root: &Path) -> Result<()> {
    mkdirs(
        root,
        &[
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "etc",
            "home/user",
            "root",
        ],
    )?;
    set_mode(&root.join("tmp"), 0o1777)?;
    set_mode(&root.join("root"), 0o700)?;
    let passwd = root.join("etc/passwd");
    let mut text = fs::read_to_string(&passwd).unwrap_or_default();
    if !text.lines().any(|l| l.starts_with("root:")) {
        text.push_str("root:x:0:0:root:/root:/bin/sh\n");
    }
    if !text.lines().any(|l| l.starts_with("user:")) {
        text.push_str(&format!(
            "user:x:{USER_ID}:{USER_ID}:user:/home/user:/bin/sh\n"
        ));
    }
    write(&passwd, &text)?;
    let group = root.join("etc/group");
    let mut text = fs::read_to_string(&group).unwrap_or_default();
    if !text.lines().any(|l| l.starts_with("root:")) {
        text.push_str("root:x:0:\n");
    }
    if !text.lines().any(|l| l.starts_with("user:")) {
        text.push_str(&format!("user:x:{USER_ID}:\n"));
    }
    write(&group, &text)?;
    // mkfs.ext4 -d copies owners; as non-root this fails and the agent fixes
    // /home/user's owner at boot instead.
    let _ = std::os::unix::fs::chown(root.join("home/user"), Some(USER_ID), Some(USER_ID));
    Ok(())
}

fn tree_size(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum::<u64>())
            .unwrap_or(0)
            + 4096
    } else {
        m.len()
    }
}

/// Build the image file `dest` from `source`, staging in `staging`.
/// Returns the extras included and the size in MiB.
pub fn build(
    dest: &Path,
    staging: &Path,
    source: &RootSource,
    size_mib: u64,
    progress: &dyn Fn(Progress),
) -> Result<(Vec<String>, u64)> {
    let _ = fs::remove_dir_all(staging);
    fs::create_dir_all(staging).map_err(|e| io_err("create staging dir", &e))?;
    let extras = match source {
        RootSource::Default { with_git } => {
            progress(Progress::new(
                "rootfs",
                "assembling the default root (busybox)",
            ));
            default_root(staging, *with_git)?
        }
        RootSource::Dir(dir) => {
            progress(Progress::new(
                "rootfs",
                format!("copying {}", dir.display()),
            ));
            if !dir.is_dir() {
                return Err(Error::not_found(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            let st = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", dir.display()))
                .arg(staging)
                .status()
                .map_err(|e| Error::unavailable(format!("cannot run cp: {e}")))?;
            if !st.success() {
                return Err(Error::internal(format!("copying {} failed", dir.display())));
            }
            complete(staging)?;
            if !staging.join("bin/sh").exists() {
                progress(Progress::new("rootfs", "warning: the root has no /bin/sh"));
            }
            vec![format!("dir:{}", dir.display())]
        }
    };
    let content = tree_size(staging) / (1 << 20);
    let size = size_mib.max(content * 2 + 256);
    progress(Progress::new(
        "rootfs",
        format!("mkfs.ext4 -d ({content} MiB of files, {size} MiB image)"),
    ));
    let tmp = dest.with_extension("ext4.tmp");
    let _ = fs::remove_file(&tmp);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "godel-root", "-d"])
        .arg(staging)
        .arg(&tmp)
        .arg(format!("{size}M"))
        .output()
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot run mkfs.ext4: {e} (install e2fsprogs; see scripts/setup.d/30-microvm.sh)"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    fs::rename(&tmp, dest).map_err(|e| io_err("publish rootfs", &e))?;
    let _ = fs::remove_dir_all(staging);
    Ok((extras, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_adds_user_and_workspace_without_duplicates() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .unwrap();
        complete(d.path()).unwrap();
        complete(d.path()).unwrap();
        let p = fs::read_to_string(d.path().join("etc/passwd")).unwrap();
        assert_eq!(p.lines().filter(|l| l.starts_with("root:")).count(), 1);
        assert_eq!(
            p.matches("user:x:1000:1000:user:/home/user:/bin/sh")
                .count(),
            1
        );
        assert!(d.path().join("home/user").is_dir());
        let g = fs::read_to_string(d.path().join("etc/group")).unwrap();
        assert!(g.contains("user:x:1000:"));
    }
}
