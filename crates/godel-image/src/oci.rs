//! OCI image layouts as root file systems: `umoci unpack` (Debian's `umoci`)
//! turns `LAYOUT[:TAG]` into a runtime bundle whose `rootfs/` then goes
//! through the same path as `--from-dir` (user `user`, `/home/user`, mount
//! points). A layout can come from `skopeo copy docker://… oci:LAYOUT:TAG`
//! on a machine with registry access, or from `umoci` itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use godel_core::{Error, Result};

/// `LAYOUT[:TAG]` → (layout dir, tag); the tag defaults to `latest`.
pub fn parse_ref(spec: &str) -> Result<(PathBuf, String)> {
    let (dir, tag) = match spec.rsplit_once(':') {
        Some((d, t)) if !t.is_empty() && !t.contains('/') => (d, t),
        _ => (spec, "latest"),
    };
    if dir.is_empty() {
        return Err(Error::invalid(format!(
            "OCI reference {spec:?} has no layout directory"
        )));
    }
    let dir = PathBuf::from(dir);
    if !dir.join("index.json").is_file() || !dir.join("oci-layout").is_file() {
        return Err(Error::invalid(format!(
            "{} is not an OCI image layout (no index.json / oci-layout)",
            dir.display()
        )));
    }
    Ok((dir, tag.to_string()))
}

/// Unpack `LAYOUT:TAG` into `bundle` (replaced); returns `bundle/rootfs`.
pub fn unpack(layout: &Path, tag: &str, bundle: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(bundle);
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), &e))?;
    }
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot run umoci: {e} (install it: apt-get install umoci; see scripts/setup.d/30-microvm.sh)"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "umoci unpack {}:{tag} failed: {}",
            layout.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let rootfs = bundle.join("rootfs");
    if !rootfs.is_dir() {
        return Err(Error::internal(format!(
            "umoci left no rootfs in {}",
            bundle.display()
        )));
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umoci(args: &[&str]) -> bool {
        Command::new("umoci")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn references_are_checked() {
        let t = tempfile::tempdir().unwrap();
        assert!(
            parse_ref(t.path().to_str().unwrap()).is_err(),
            "not a layout"
        );
        assert!(parse_ref(":tag").is_err());
    }

    #[test]
    fn a_layout_made_with_umoci_unpacks_to_its_files() {
        if Command::new("umoci").arg("--version").output().is_err() {
            eprintln!(
                "skipped: umoci is not installed (scripts/setup.d/30-microvm.sh installs it)"
            );
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let layout = t.path().join("layout");
        let l = layout.to_str().unwrap();
        assert!(umoci(&["init", "--layout", l]));
        assert!(umoci(&["new", "--image", &format!("{l}:v1")]));
        // Add a file as a new layer.
        let work = t.path().join("work");
        assert!(umoci(&[
            "unpack",
            "--image",
            &format!("{l}:v1"),
            work.to_str().unwrap()
        ]));
        std::fs::create_dir_all(work.join("rootfs/etc")).unwrap();
        std::fs::write(work.join("rootfs/etc/from-oci"), "layer\n").unwrap();
        assert!(umoci(&[
            "repack",
            "--image",
            &format!("{l}:v2"),
            work.to_str().unwrap()
        ]));

        let (dir, tag) = parse_ref(&format!("{l}:v2")).unwrap();
        assert_eq!(tag, "v2");
        let rootfs = unpack(&dir, &tag, &t.path().join("bundle")).unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/from-oci")).unwrap(),
            "layer\n"
        );
        let e = unpack(&dir, "missing", &t.path().join("bundle2")).unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
    }
}
