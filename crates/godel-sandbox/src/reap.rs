//! Reaping what dead jails left on the host: run directories, slot files
//! and cgroups of jails whose init is gone and that no daemon cleaned up (a
//! daemon killed mid-spawn, a `$GODEL_HOME` removed under running agents).
//!
//! The run directory (`/run/godel-sandbox`) and the `godel` cgroups are
//! shared by every godel daemon on the host, so an entry is only reaped
//! when nothing can be using it: its control socket does not accept a
//! connection, its cgroups hold no process, and it is older than a grace
//! period (a jail being made right now is young). Warm-pool jails
//! (`warm-<pid>-<n>`) are the pool's own reaper's while their daemon lives.

use std::path::Path;
use std::time::Duration;

use crate::cgroup::JailCgroups;
use crate::namespace::{Core, release};

/// Directory entries of the run dir that are not jails.
const NOT_JAILS: [&str; 1] = ["slots"];

/// Reap dead jails' leftovers older than `min_age`; the names reaped.
pub(crate) fn reap_dead(core: &Core, min_age: Duration) -> Vec<String> {
    let Ok(layout) = core.layout() else {
        return Vec::new();
    };
    let run_dir = &core.opts.run_dir;
    let mut reaped = Vec::new();
    for e in std::fs::read_dir(run_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || NOT_JAILS.contains(&name.as_str()) || !old(&e.path(), min_age) {
            continue;
        }
        if name.starts_with("warm-") && creator_alive(&name) {
            continue;
        }
        let cg = JailCgroups::new(layout.clone(), &name, core.opts.ops.clone());
        if answers(&e.path().join("ctl.sock")) || !cg.pids().is_empty() {
            continue;
        }
        let _ = cg.remove();
        let _ = std::fs::remove_file(e.path().join("pool.json"));
        release(
            &*core.opts.ops,
            run_dir,
            &name,
            slot_of(run_dir, &name).unwrap_or(u32::MAX),
        );
        reaped.push(name);
    }
    // Cgroups whose run directory is gone (their jail was released, the
    // group's removal failed or never ran).
    for parent in layout.godel_dirs() {
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.path().is_dir()
                || run_dir.join(&name).exists()
                || !old(&e.path(), min_age)
                || (name.starts_with("warm-") && creator_alive(&name))
            {
                continue;
            }
            let cg = JailCgroups::new(layout.clone(), &name, core.opts.ops.clone());
            // A group with processes (or children) refuses removal anyway.
            if cg.pids().is_empty() && cg.remove().is_ok() && !reaped.contains(&name) {
                reaped.push(name);
            }
        }
    }
    reaped
}

/// The slot whose file names `name`.
pub(crate) fn slot_of(run_dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_dir(run_dir.join("slots"))
        .ok()?
        .flatten()
        .find(|e| std::fs::read_to_string(e.path()).is_ok_and(|o| o == name))?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

fn old(p: &Path, min_age: Duration) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= min_age))
}

/// Whether a warm jail's creating daemon (`warm-<pid>-<n>`) still runs.
fn creator_alive(name: &str) -> bool {
    name.strip_prefix("warm-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Whether a jail's init listens on its control socket (a frozen init's
/// socket still accepts: the kernel queues the connection).
fn answers(sock: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(sock).is_ok()
}
