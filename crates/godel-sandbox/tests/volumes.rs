//! Volumes: a host directory mounted read-write at its target in a real
//! jail, owned by the agent there (idmapped, or handed over where the host
//! cannot idmap); what the agent writes is on the host and outlives the
//! jail; a target over what the sandbox provides itself is refused.

mod common;

use common::*;
use godel_sandbox::{Isolator, JailLimits, JailVolume};
use godel_testkit::Need;

async fn round_trip() {
    let events = Events::default();
    let iso = isolator(&events);
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("seed.txt"), "from the host").unwrap();
    let mut cfg = config(&dir, &id("volume"), JailLimits::default());
    cfg.volumes = vec![JailVolume {
        source: vol.clone(),
        target: "/mnt/data".into(),
    }];
    let sb = iso.create(cfg).await.expect("create with a volume");
    let _g = Guard(sb.clone());
    let out = sh(
        &*sb,
        "cat /mnt/data/seed.txt && echo hi > /mnt/data/new.txt && mkdir /mnt/data/d && stat -c %u /mnt/data/new.txt",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    // The agent (uid 1000 of its namespace) owns what it writes there.
    assert_eq!(out.stdout, "from the host1000\n");
    sb.destroy().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(vol.join("new.txt")).unwrap(),
        "hi\n"
    );
    assert!(vol.join("d").is_dir());
}

#[tokio::test]
async fn a_volume_is_read_write_and_outlives_the_jail() {
    godel_testkit::require!(Need::Root);
    round_trip().await;
}

#[tokio::test]
async fn a_volume_over_the_workspace_or_system_dirs_is_refused() {
    godel_testkit::require!(Need::Root);
    let iso = isolator(&Events::default());
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    for target in ["/usr/local", "/home/user/data", "relative"] {
        let mut cfg = config(&dir, &id("badvol"), JailLimits::default());
        cfg.volumes = vec![JailVolume {
            source: vol.clone(),
            target: target.into(),
        }];
        let err = iso.create(cfg).await.err().expect("refused");
        assert!(err.message.contains("volume path"), "{target}: {err}");
    }
}
