//! Finding (or building) the static `godel-guest` binary that becomes the
//! initramfs's `/init`.
//!
//! Order: an explicit path, `$GODEL_GUEST_BIN`, the workspace's
//! `target/guest/x86_64-unknown-linux-gnu/release/godel-guest`, a
//! `godel-guest` next to the running executable. Every candidate must be a
//! static ELF (a dynamically linked agent cannot run from the initramfs).
//! When none is usable, or a rebuild is asked for, and a workspace is found,
//! it runs the documented build:
//!
//! ```text
//! CARGO_TARGET_DIR=target/guest RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo build -p godel-guest --release --target x86_64-unknown-linux-gnu
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use godel_core::{Error, Result};

use crate::{Progress, elf};

/// The guest target triple (glibc, linked statically).
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

fn static_elf(p: &Path) -> bool {
    std::fs::read(p)
        .ok()
        .and_then(|b| elf::is_static(&b))
        .unwrap_or(false)
}

/// The Cargo workspace this crate lives in, if it is still there (a
/// development checkout), or one above the current directory.
pub fn find_workspace() -> Option<PathBuf> {
    let is_ws = |d: &Path| {
        d.join("Cargo.toml").exists() && d.join("crates/godel-guest/Cargo.toml").exists()
    };
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if is_ws(&compiled) {
        return compiled.canonicalize().ok();
    }
    let mut d = std::env::current_dir().ok();
    while let Some(dir) = d {
        if is_ws(&dir) {
            return Some(dir);
        }
        d = dir.parent().map(Path::to_path_buf);
    }
    None
}

/// Where the workspace build puts the static agent.
pub fn workspace_binary(ws: &Path) -> PathBuf {
    ws.join("target/guest")
        .join(GUEST_TARGET)
        .join("release/godel-guest")
}

/// Build the static agent in `ws` with cargo.
pub fn build_in_workspace(ws: &Path, progress: &dyn Fn(Progress)) -> Result<PathBuf> {
    progress(Progress::new(
        "guest-agent",
        format!("cargo build -p godel-guest --release --target {GUEST_TARGET} (static)"),
    ));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ws)
        .env("CARGO_TARGET_DIR", ws.join("target/guest"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "-q",
            "-p",
            "godel-guest",
            "--release",
            "--target",
            GUEST_TARGET,
        ])
        .output()
        .map_err(|e| Error::unavailable(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "building the guest agent failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let bin = workspace_binary(ws);
    if !static_elf(&bin) {
        return Err(Error::internal(format!(
            "{} is not a static binary",
            bin.display()
        )));
    }
    Ok(bin)
}

/// Locate the agent binary (see the module docs).
pub fn locate(
    explicit: Option<&Path>,
    rebuild: bool,
    progress: &dyn Fn(Progress),
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return check(p);
    }
    if let Some(p) = std::env::var_os("GODEL_GUEST_BIN") {
        return check(Path::new(&p));
    }
    let ws = find_workspace();
    if let Some(ws) = &ws {
        if rebuild {
            return build_in_workspace(ws, progress);
        }
        let bin = workspace_binary(ws);
        if static_elf(&bin) {
            return Ok(bin);
        }
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let bin = dir.join("godel-guest");
        if static_elf(&bin) {
            return Ok(bin);
        }
    }
    match ws {
        Some(ws) => build_in_workspace(&ws, progress),
        None => Err(Error::not_found(format!(
            "no static godel-guest binary: set GODEL_GUEST_BIN, put one next to this executable, or build it with \
             `CARGO_TARGET_DIR=target/guest RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p godel-guest --release --target {GUEST_TARGET}`"
        ))),
    }
}

fn check(p: &Path) -> Result<PathBuf> {
    if !p.exists() {
        return Err(Error::not_found(format!(
            "guest agent {} does not exist",
            p.display()
        )));
    }
    if !static_elf(p) {
        return Err(Error::invalid(format!(
            "guest agent {} is not a statically linked ELF (build with -C target-feature=+crt-static)",
            p.display()
        )));
    }
    Ok(p.to_path_buf())
}
