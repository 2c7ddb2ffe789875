//! godel-image: builds the guest image a godel microVM boots, idempotently,
//! cached under `$GODEL_HOME/images/<name>/`.
//!
//! 1. **Kernel** ([`kernel`]): Debian's `linux-image-cloud-amd64` resolved to
//!    its concrete package, `apt-get download`ed, SHA256-checked against
//!    apt's metadata, unpacked; an uncompressed PVH `vmlinux` is extracted
//!    from the bzImage (the bzImage is kept as a fallback).
//! 2. **Initramfs** ([`initramfs`]): the static `godel-guest` as `/init` plus
//!    the virtio modules in load order ([`guest`] finds or builds the agent).
//! 3. **Rootfs** ([`rootfs`]): ext4 from `mkfs.ext4 -d` of a minimal busybox
//!    root (or `--from-dir`), with the `user` account and `/home/user`.
//! 4. **Manifest**: `image.json` (paths, versions, SHA256s, the kernel
//!    command line, the TSC note), written atomically.
//!
//! Layout under `$GODEL_HOME/images/`:
//! - `.cache/kernels/<package>_<version>/`: `vmlinuz`, `vmlinux`, `modules/`
//! - `<name>/rootfs/<rootfs-id>.ext4`: the id hashes the root's source and size
//! - `<name>/builds/<build-id>/initrd.img` (+ its `image.json`): the id hashes
//!   the kernel, the agent and the rootfs id
//! - `<name>/image.json`: the current build
//!
//! A rebuild with new inputs never overwrites a file a running VM (or a
//! qcow2 overlay) still uses.
//!
//! The CLI's `godel image build [--name NAME] [--from-dir DIR] [--json]` is:
//!
//! ```no_run
//! use godel_image::{ImageOptions, build_image};
//! let opts = ImageOptions {
//!     name: Some("default".into()),   // --name
//!     from_dir: None,                 // --from-dir DIR
//!     ..Default::default()
//! };
//! // --json: print each Progress as a JSON line, then the ImageInfo.
//! let info = build_image(opts, &|p| eprintln!("{}", serde_json::to_string(&p).unwrap()))?;
//! println!("{}", serde_json::to_string_pretty(&info).unwrap());
//! # Ok::<(), godel_core::Error>(())
//! ```

pub mod elf;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod oci;
pub mod rootfs;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use kernel::{KernelFiles, KernelPackage};
pub use rootfs::RootSource;

/// Bumped when the image layout or contents change meaning.
pub const BUILDER_VERSION: u32 = 1;
/// The default image name.
pub const DEFAULT_IMAGE: &str = "default";
/// Default size of the root file system (sparse; grows only as written).
pub const DEFAULT_DISK_MIB: u64 = 1024;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Image name (`default` when `None`).
    pub name: Option<String>,
    /// `$GODEL_HOME` override (else `$GODEL_HOME`, else `~/.godel`).
    pub godel_home: Option<PathBuf>,
    /// Make the root file system from this directory instead of busybox.
    pub from_dir: Option<PathBuf>,
    /// Make it from an OCI image layout, `LAYOUT[:TAG]` (unpacked with umoci).
    pub from_oci: Option<String>,
    /// Leave git out of the default root.
    pub no_git: bool,
    /// Root file system size in MiB (default [`DEFAULT_DISK_MIB`]; raised to fit).
    pub disk_size_mib: Option<u64>,
    /// The static guest agent to use (else found as [`guest::locate`] says).
    pub guest_bin: Option<PathBuf>,
    /// Rebuild the agent with cargo first (when a workspace is found).
    pub rebuild_guest: bool,
    /// Kernel package (default [`kernel::META_PACKAGE`]).
    pub kernel_package: Option<String>,
    /// Rebuild even when a build with the same inputs exists.
    pub force: bool,
}

/// One progress event. `done`/`total` are bytes when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `resolve-kernel`, `download-kernel`, `verify-kernel`, `extract-kernel`,
    /// `modules`, `vmlinux`, `kernel`, `guest-agent`, `initramfs`, `rootfs`,
    /// `checksums`, `manifest`, `cached`, `done`.
    pub step: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl Progress {
    pub fn new(step: &str, message: impl Into<String>) -> Self {
        Progress {
            step: step.to_owned(),
            message: message.into(),
            done: None,
            total: None,
        }
    }
    pub fn bytes(step: &str, message: impl Into<String>, done: u64, total: u64) -> Self {
        Progress {
            done: Some(done),
            total: Some(total),
            ..Progress::new(step, message)
        }
    }
}

/// A file of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// `image.json`: everything a VM launcher needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    pub builder_version: u32,
    pub build_id: String,
    pub created_at: DateTime<Utc>,
    /// The kernel to pass to `-kernel`.
    pub kernel: Artifact,
    /// `vmlinux-pvh` (uncompressed ELF, PVH entry) or `bzimage`.
    pub kernel_format: String,
    /// The Debian bzImage (always kept).
    pub kernel_bzimage: Artifact,
    pub kernel_release: String,
    pub kernel_package: KernelPackage,
    pub initrd: Artifact,
    /// Module files in the initramfs, in load order.
    pub modules: Vec<String>,
    pub rootfs: Artifact,
    pub rootfs_size_mib: u64,
    /// `busybox`, `git`, or `dir:<path>`.
    pub rootfs_contents: Vec<String>,
    pub agent_version: String,
    pub agent_sha256: String,
    /// Kernel command line to use, without `tsc_early_khz` (see `tsc_note`).
    pub cmdline: String,
    pub tsc_note: String,
}

/// Kernel command line for the image; add `tsc_early_khz=` from [`host_tsc_khz`].
pub const CMDLINE: &str = "console=ttyS0 panic=-1 reboot=t quiet cryptomgr.notests init_on_alloc=0 \
tsc=reliable no_timer_check noreplace-smp mitigations=off pci=off audit=0 apparmor=0";

const TSC_NOTE: &str = "Under TCG the guest cannot calibrate its TSC (no HPET/PM timer on microvm) and \
hangs in ~10-15% of boots; append tsc_early_khz=<host TSC kHz> (godel_image::host_tsc_khz) to the \
command line. Under KVM it is harmless.";

/// The host's TSC frequency in kHz, from the kernel's boot message or `/proc/cpuinfo`.
pub fn host_tsc_khz() -> Option<u64> {
    let from_mhz = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .map(|m| (m * 1000.0).round() as u64)
    };
    if let Ok(out) = Command::new("dmesg").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        for key in [
            "tsc: Refined TSC clocksource calibration: ",
            "tsc: Detected ",
        ] {
            if let Some(v) = text
                .lines()
                .filter_map(|l| l.split_once(key).map(|(_, r)| r))
                .filter_map(|r| r.split_whitespace().next())
                .find_map(from_mhz)
            {
                return Some(v);
            }
        }
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| from_mhz(v))
}

/// `CMDLINE` plus `tsc_early_khz` when known.
pub fn kernel_cmdline(tsc_khz: Option<u64>) -> String {
    match tsc_khz {
        Some(k) => format!("{CMDLINE} tsc_early_khz={k}"),
        None => CMDLINE.to_owned(),
    }
}

pub(crate) fn io_err(ctx: impl std::fmt::Display, e: &std::io::Error) -> Error {
    Error::io(ctx, e)
}

/// SHA256 of a file, hex. Uses `sha256sum` when present (fast on large,
/// sparse disk images), else hashes in-process.
pub fn sha256_file(p: &Path) -> Result<String> {
    if let Ok(out) = Command::new("sha256sum").arg(p).output()
        && out.status.success()
        && let Some(h) = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
        && h.len() == 64
    {
        return Ok(h.to_owned());
    }
    let mut f = fs::File::open(p).map_err(|e| io_err(format!("open {}", p.display()), &e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err("read", &e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn artifact(p: &Path) -> Result<Artifact> {
    let size = fs::metadata(p)
        .map_err(|e| io_err(format!("stat {}", p.display()), &e))?
        .len();
    Ok(Artifact {
        path: p.to_path_buf(),
        sha256: sha256_file(p)?,
        size,
    })
}

/// `$GODEL_HOME`, else `~/.godel`.
pub fn godel_home() -> PathBuf {
    if let Some(h) = std::env::var_os("GODEL_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".godel")
}

/// `<home>/images`.
pub fn images_dir(home: &Path) -> PathBuf {
    home.join("images")
}

/// Read a built image's manifest.
pub fn load_image(home: &Path, name: &str) -> Result<ImageInfo> {
    let p = images_dir(home).join(name).join("image.json");
    let text = fs::read_to_string(&p).map_err(|e| {
        let mut err = io_err(format!("read {}", p.display()), &e);
        if e.kind() == std::io::ErrorKind::NotFound {
            err.message =
                format!("image {name:?} is not built: run `godel image build --name {name}`");
        }
        err
    })?;
    serde_json::from_str(&text).map_err(|e| Error::internal(format!("{}: {e}", p.display())))
}

fn write_atomic(p: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
    let r = (|| {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, p)
    })();
    r.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(format!("write {}", p.display()), &e)
    })
}

/// A cheap fingerprint of a directory tree (paths, modes, sizes, mtimes).
fn tree_fingerprint(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    fn walk(base: &Path, d: &Path, h: &mut Sha256) {
        let Ok(rd) = fs::read_dir(d) else {
            return;
        };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if let Ok(m) = fs::symlink_metadata(&p) {
                let rel = p.strip_prefix(base).unwrap_or(&p);
                h.update(format!(
                    "{}\0{:o}\0{}\0{}\0{}\n",
                    rel.display(),
                    m.mode(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ));
                if m.is_dir() {
                    walk(base, &p, h);
                }
            }
        }
    }
    let mut h = Sha256::new();
    walk(dir, dir, &mut h);
    hex::encode(h.finalize())
}

fn file_hash_or_none(p: &Path) -> String {
    if p.exists() {
        sha256_file(p).unwrap_or_default()
    } else {
        "none".into()
    }
}

/// Build (or reuse) an image. Idempotent: the same inputs give the same
/// build id, and an existing complete build is returned as is.
pub fn build_image(opts: ImageOptions, progress: &dyn Fn(Progress)) -> Result<ImageInfo> {
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    godel_core::validate_name("image", &name)?;
    let home = opts.godel_home.clone().unwrap_or_else(godel_home);
    let images = images_dir(&home);
    let image_dir = images.join(&name);
    fs::create_dir_all(&image_dir)
        .map_err(|e| io_err(format!("create {}", image_dir.display()), &e))?;
    let cache = images.join(".cache");
    // One build at a time per GODEL_HOME, across threads and processes.
    let lock_path = images.join(".build.lock");
    let lock = fs::File::create(&lock_path)
        .map_err(|e| io_err(format!("create {}", lock_path.display()), &e))?;
    lock.lock()
        .map_err(|e| io_err("lock the image directory", &e))?;

    progress(Progress::new(
        "resolve-kernel",
        "asking apt for the cloud kernel",
    ));
    let pkg = kernel::resolve(
        opts.kernel_package
            .as_deref()
            .unwrap_or(kernel::META_PACKAGE),
    )?;
    let agent_path = guest::locate(opts.guest_bin.as_deref(), opts.rebuild_guest, progress)?;
    let agent =
        fs::read(&agent_path).map_err(|e| io_err(format!("read {}", agent_path.display()), &e))?;
    let agent_sha = hex::encode(Sha256::digest(&agent));
    let source = match (&opts.from_dir, &opts.from_oci) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("give --from-dir or --from-oci, not both"));
        }
        (Some(d), None) => RootSource::Dir(d.clone()),
        (None, Some(oci_ref)) => {
            let (layout, tag) = oci::parse_ref(oci_ref)?;
            progress(Progress::new(
                "oci",
                format!("umoci unpack {}:{tag}", layout.display()),
            ));
            RootSource::Dir(oci::unpack(&layout, &tag, &image_dir.join("oci-bundle"))?)
        }
        (None, None) => RootSource::Default {
            with_git: !opts.no_git,
        },
    };
    let source_fp = match &source {
        RootSource::Dir(d) => format!("dir:{}:{}", d.display(), tree_fingerprint(d)),
        RootSource::Default { with_git } => format!(
            "default:{}:{}",
            file_hash_or_none(&rootfs::find_busybox()?),
            if *with_git {
                file_hash_or_none(Path::new("/usr/bin/git"))
            } else {
                "nogit".into()
            }
        ),
    };
    let disk = opts.disk_size_mib.unwrap_or(DEFAULT_DISK_MIB);
    // The root file system depends only on its source and size, so a new
    // agent or kernel reuses it (and overlays made on it stay valid).
    let rootfs_id = hex::encode(
        &Sha256::digest(format!(
            "v{BUILDER_VERSION}\nroot {source_fp}\ndisk {disk}\n"
        ))[..8],
    );
    let inputs = format!(
        "v{BUILDER_VERSION}\n{}={} {}\nagent {agent_sha}\nrootfs {rootfs_id}\n",
        pkg.name, pkg.version, pkg.sha256
    );
    let build_id = hex::encode(&Sha256::digest(inputs.as_bytes())[..8]);
    let build_dir = image_dir.join("builds").join(&build_id);
    let manifest = image_dir.join("image.json");
    let build_manifest = build_dir.join("image.json");

    if !opts.force
        && let Ok(text) = fs::read_to_string(&build_manifest)
        && let Ok(info) = serde_json::from_str::<ImageInfo>(&text)
        && [&info.kernel.path, &info.initrd.path, &info.rootfs.path]
            .iter()
            .all(|p| p.exists())
    {
        progress(Progress::new(
            "cached",
            format!("image {name} build {build_id} is up to date"),
        ));
        if fs::read_to_string(&manifest).ok().as_deref() != Some(text.as_str()) {
            write_atomic(&manifest, text.as_bytes())?;
        }
        return Ok(info);
    }

    let k = kernel::fetch(&pkg, &cache, progress)?;
    let _ = fs::remove_dir_all(&build_dir);
    fs::create_dir_all(&build_dir).map_err(|e| io_err("create build dir", &e))?;

    progress(Progress::new(
        "initramfs",
        format!(
            "agent {} + {} modules",
            agent_path.display(),
            k.modules.len()
        ),
    ));
    let initrd = build_dir.join("initrd.img");
    initramfs::build(&initrd, &agent, &k.modules)?;

    let rootfs_dir = image_dir.join("rootfs");
    fs::create_dir_all(&rootfs_dir).map_err(|e| io_err("create rootfs dir", &e))?;
    let rootfs_path = rootfs_dir.join(format!("{rootfs_id}.ext4"));
    let rootfs_meta = rootfs_dir.join(format!("{rootfs_id}.json"));
    let cached_root = fs::read_to_string(&rootfs_meta)
        .ok()
        .and_then(|t| serde_json::from_str::<(Vec<String>, u64, Artifact)>(&t).ok())
        .filter(|_| rootfs_path.exists() && !opts.force);
    let (contents, size_mib, rootfs_art) = match cached_root {
        Some(c) => {
            progress(Progress::new(
                "rootfs",
                format!("reusing root file system {rootfs_id}"),
            ));
            c
        }
        None => {
            let staging = rootfs_dir.join(format!(".staging-{}", std::process::id()));
            let (contents, size) = rootfs::build(&rootfs_path, &staging, &source, disk, progress)?;
            progress(Progress::new("checksums", "hashing the root file system"));
            let built = (contents, size, artifact(&rootfs_path)?);
            let meta = serde_json::to_vec(&built).map_err(|e| Error::internal(e.to_string()))?;
            write_atomic(&rootfs_meta, &meta)?;
            built
        }
    };

    progress(Progress::new("checksums", "hashing artifacts"));
    let (kernel_art, format) = match &k.vmlinux {
        Some(v) => (artifact(v)?, "vmlinux-pvh"),
        None => (artifact(&k.vmlinuz)?, "bzimage"),
    };
    let version = Command::new(&agent_path)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default();
    let info = ImageInfo {
        name: name.clone(),
        builder_version: BUILDER_VERSION,
        build_id: build_id.clone(),
        created_at: Utc::now(),
        kernel: kernel_art,
        kernel_format: format.to_owned(),
        kernel_bzimage: artifact(&k.vmlinuz)?,
        kernel_release: k.release.clone(),
        kernel_package: pkg,
        initrd: artifact(&initrd)?,
        modules: k
            .modules
            .iter()
            .filter_map(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        rootfs: rootfs_art,
        rootfs_size_mib: size_mib,
        rootfs_contents: contents,
        agent_version: version,
        agent_sha256: agent_sha,
        cmdline: CMDLINE.to_owned(),
        tsc_note: TSC_NOTE.to_owned(),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::internal(e.to_string()))?;
    progress(Progress::new("manifest", manifest.display().to_string()));
    write_atomic(&build_manifest, &json)?;
    write_atomic(&manifest, &json)?;
    progress(Progress::new(
        "done",
        format!("image {name} build {build_id}"),
    ));
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_carries_tsc_when_known() {
        assert!(kernel_cmdline(Some(2445406)).ends_with(" tsc_early_khz=2445406"));
        assert!(!kernel_cmdline(None).contains("tsc_early_khz"));
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "1").unwrap();
        let a = tree_fingerprint(d.path());
        assert_eq!(a, tree_fingerprint(d.path()));
        fs::write(d.path().join("b"), "2").unwrap();
        assert_ne!(a, tree_fingerprint(d.path()));
    }

    #[test]
    fn missing_image_says_how_to_build() {
        let d = tempfile::tempdir().unwrap();
        let e = load_image(d.path(), "nope").unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::NotFound);
        assert!(e.message.contains("godel image build"));
    }
}
