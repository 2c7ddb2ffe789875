//! Shared test set-up: the guest image (built once into a cache shared with
//! godel-image's own tests), a throw-away `$GODEL_HOME` that links to it, and
//! a guard that kills every QEMU started under that home, even on panic.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use godel_core::{Event, EventSink};
use parking_lot::Mutex;

/// The image cache shared by the test suites of this workspace.
pub fn image_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("godel-image-test-home")
}

/// Build (or reuse) the default image in the shared cache.
pub fn ensure_image() -> godel_image::ImageInfo {
    let opts = godel_image::ImageOptions {
        godel_home: Some(image_home()),
        rebuild_guest: true,
        ..Default::default()
    };
    godel_image::build_image(opts, &|p| eprintln!("[image] {}: {}", p.step, p.message))
        .expect("build the guest image")
}

/// A `$GODEL_HOME` for one test, whose `images/` is the shared cache's.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::Builder::new()
            .prefix("gm")
            .tempdir_in("/tmp")
            .unwrap();
        std::os::unix::fs::symlink(image_home().join("images"), dir.path().join("images")).unwrap();
        TestHome { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        kill_all(self.dir.path());
    }
}

/// SIGKILL every QEMU whose VM directory is under `home`; remove RAM files.
pub fn kill_all(home: &Path) {
    let Ok(rd) = std::fs::read_dir(home.join("microvm").join("vms")) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        if let Ok(pid) = std::fs::read_to_string(dir.join("qemu.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("godel-vm-"))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(m) = godel_microvm::vm::read_meta(&dir)
            && m.ram_shared
        {
            let _ = std::fs::remove_file(&m.ram_file);
        }
    }
}

/// An event sink that records.
pub fn recorder() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (Arc::new(move |e| l.lock().push(e)), log)
}
