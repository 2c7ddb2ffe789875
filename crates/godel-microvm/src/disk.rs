//! Disk and file helpers: qcow2 overlays (`qemu-img`), flattening a
//! snapshot's disk onto the image base, and sparse copies of RAM files.
//!
//! Layout of a VM's disk chain:
//! - cold boot: `vm/disk.qcow2` → image `rootfs.ext4` (raw, read-only);
//! - restore:   `vm/disk.qcow2` → `snapshot/disk.qcow2` → image `rootfs.ext4`.
//!
//! A snapshot's `disk.qcow2` always backs directly on the image base: a
//! snapshot of a restored VM is rebased (`qemu-img rebase`, safe mode: the
//! clusters that differ from the base are copied in), so snapshots never
//! depend on one another and can be deleted in any order.

use std::path::Path;
use std::process::Stdio;

use godel_core::{Error, Result};

async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("run {program}"), &e))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn s(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::invalid(format!("path {} is not UTF-8", p.display())))
}

/// Create a qcow2 overlay on `backing` (`raw` or `qcow2`), at least `size_mib` large.
pub async fn create_overlay(
    overlay: &Path,
    backing: &Path,
    backing_format: &str,
    size_mib: Option<u64>,
) -> Result<()> {
    let mut args = vec![
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=65536",
        "-b",
        s(backing)?,
        "-F",
        backing_format,
        s(overlay)?,
    ];
    let size;
    if let Some(mib) = size_mib {
        let backing_mib = std::fs::metadata(backing)
            .map(|m| m.len().div_ceil(1 << 20))
            .unwrap_or(0);
        if mib > backing_mib {
            size = format!("{mib}M");
            args.push(&size);
        }
    }
    run("qemu-img", &args).await.map(drop)
}

/// Copy a (paused, flushed) VM overlay into a snapshot and make it back
/// directly on the image `base`.
pub async fn freeze_overlay(src: &Path, dst: &Path, base: &Path) -> Result<()> {
    sparse_copy(src, dst).await?;
    let info = run("qemu-img", &["info", "-U", "--output=json", s(dst)?]).await?;
    let v: serde_json::Value =
        serde_json::from_str(&info).map_err(|e| Error::internal(format!("qemu-img info: {e}")))?;
    let backing = v["backing-filename"].as_str().unwrap_or_default();
    if Path::new(backing) != base {
        // Safe rebase: copies every cluster where the old chain differs from the base.
        run(
            "qemu-img",
            &[
                "rebase",
                "-U",
                "-f",
                "qcow2",
                "-b",
                s(base)?,
                "-F",
                "raw",
                s(dst)?,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Copy a file keeping holes and turning zero blocks into holes (`cp --sparse=always`).
pub async fn sparse_copy(src: &Path, dst: &Path) -> Result<()> {
    run("cp", &["--sparse=always", s(src)?, s(dst)?])
        .await
        .map(drop)
}

/// Bytes a file actually occupies on disk.
pub fn allocated_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// Whether `qemu-img` is installed.
pub fn have_qemu_img() -> bool {
    crate::launch::which("qemu-img").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overlay_freeze_and_rebase() {
        godel_testkit::require!(godel_testkit::Need::QemuImg);
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base.raw");
        std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
        let ov = d.path().join("ov.qcow2");
        create_overlay(&ov, &base, "raw", Some(64)).await.unwrap();
        // A snapshot of a cold-booted VM: plain copy.
        let snap = d.path().join("snap.qcow2");
        freeze_overlay(&ov, &snap, &base).await.unwrap();
        // A restored VM on that snapshot, then its own snapshot: rebased onto the base.
        let ov2 = d.path().join("ov2.qcow2");
        create_overlay(&ov2, &snap, "qcow2", Some(64))
            .await
            .unwrap();
        let snap2 = d.path().join("snap2.qcow2");
        freeze_overlay(&ov2, &snap2, &base).await.unwrap();
        let info = run("qemu-img", &["info", "--output=json", s(&snap2).unwrap()])
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["backing-filename"], base.to_str().unwrap());
        assert_eq!(v["virtual-size"], 64 << 20);
    }
}
