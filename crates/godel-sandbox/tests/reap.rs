//! What dead jails leave on the host (run directory, slot file, cgroups) is
//! reaped once it is old enough and no process uses it; live jails are not
//! touched.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use godel_sandbox::{Isolator, JailHandle, JailLimits};
use godel_testkit::Need;

fn group_dirs(name: &str) -> Vec<String> {
    ["pids", "memory", "cpu", "freezer", ""]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}/godel/{name}").replace("//", "/"))
        .filter(|d| Path::new(d).is_dir())
        .collect()
}

#[tokio::test]
async fn dead_jails_leftovers_are_reaped_and_live_ones_kept() {
    godel_testkit::require!(Need::Root);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let iso = isolator_in(&run_dir, 0);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dead_cfg = config(&d1, &id("reap-dead"), JailLimits::default());
    let live_cfg = config(&d2, &id("reap-live"), JailLimits::default());
    let dead = iso.create(dead_cfg.clone()).await.unwrap();
    let live = iso.create(live_cfg.clone()).await.unwrap();
    let _g = Guard(live.clone());

    // The dead one: its init killed and the jail forgotten, as when the
    // daemon that made it is gone too.
    let h: JailHandle = serde_json::from_value(dead.handle()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.init_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(dead);
    let slot_file = run_dir.join("slots").join(h.slot.to_string());
    assert!(slot_file.exists() && run_dir.join(&dead_cfg.id).exists());
    assert!(!group_dirs(&dead_cfg.id).is_empty(), "no cgroup to reap");

    // Too young: neither goes (older leftovers of the host may).
    let early = iso.reap_dead(Duration::from_secs(3600)).await;
    assert!(
        !early.contains(&dead_cfg.id) && !early.contains(&live_cfg.id),
        "{early:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reaped = iso.reap_dead(Duration::from_secs(1)).await;
    assert!(reaped.contains(&dead_cfg.id), "{reaped:?}");
    assert!(!reaped.contains(&live_cfg.id), "a live jail was reaped");
    assert!(!run_dir.join(&dead_cfg.id).exists());
    assert!(!slot_file.exists(), "the slot stays taken");
    assert_eq!(group_dirs(&dead_cfg.id), Vec::<String>::new());

    // The live one still runs.
    assert_eq!(sh(&*live, "echo up").await.stdout, "up\n");
    assert!(run_dir.join(&live_cfg.id).join("ctl.sock").exists());
}
