//! Jails whose root comes from template layers: a build jail writes its
//! RUN's files (as root of its user namespace) into a new layer, and a
//! sandbox over that layer sees them read-only, with the host's system dirs
//! still underneath.

mod common;

use common::*;
use godel_sandbox::{Isolator, JailLimits, JailRoot};
use godel_testkit::Need;

#[tokio::test]
async fn a_build_layer_is_seen_by_a_sandbox_over_it() {
    godel_testkit::require!(Need::Root);
    let events = Events::default();
    let iso = isolator(&events);
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("step");
    let cfg = config(&dir, &id("layer-build"), JailLimits::default());
    let root = JailRoot {
        layers: vec![],
        upper: Some(upper.clone()),
    };
    let sb = iso.create_rooted(cfg, root).await.expect("build jail");
    let _g = Guard(sb.clone());
    let out = sh(
        &*sb,
        "id -u && echo hi > /usr/local/from-run && mkdir -p /opt/app && echo app > /opt/app/f && echo home > /home/user/h",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "0");
    // Root of the build's user namespace is nobody on the host: host-global
    // knobs stay closed ('h' would only print sysrq help), and the host's
    // own directories are reached only through the overlay.
    let out = sh(
        &*sb,
        "echo h > /proc/sysrq-trigger 2>/dev/null && echo open; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo open; echo done",
    )
    .await;
    assert_eq!(out.stdout, "done\n", "{out:?}");
    sb.destroy().await.unwrap();
    use std::os::unix::fs::MetadataExt;
    let made = upper.join("layer/sys/usr/local/from-run");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "hi\n");
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), 0, "root's on disk");
    assert!(upper.join("layer/root/opt/app/f").is_file());
    assert!(!std::path::Path::new("/usr/local/from-run").exists());

    let layer = dir.path().join("layer");
    std::fs::rename(upper.join("layer"), &layer).unwrap();
    let cfg = config(&dir, &id("layer-use"), JailLimits::default());
    let root = JailRoot {
        layers: vec![layer],
        upper: None,
    };
    let sb = iso.create_rooted(cfg, root).await.expect("sandbox");
    let _g2 = Guard(sb.clone());
    let out = sh(
        &*sb,
        "cat /usr/local/from-run /opt/app/f && id -u && ls /usr/bin/env && (touch /usr/local/x 2>/dev/null && echo writable || echo ro)",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "hi\napp\n1000\n/usr/bin/env\nro\n");
}
