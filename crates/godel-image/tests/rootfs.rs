//! The ext4 root file system from a user directory (`--from-dir`), checked
//! with `debugfs` without mounting. Needs e2fsprogs (skips visibly otherwise).

use std::process::Command;

use godel_image::rootfs::{self, RootSource};

fn debugfs(img: &std::path::Path, req: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", req])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn from_dir_is_copied_and_completed() {
    godel_testkit::require!(godel_testkit::Need::Mkfs);
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("opt/app")).unwrap();
    std::fs::write(src.path().join("opt/app/run.sh"), "echo app\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("root.ext4");
    let (contents, size) = rootfs::build(
        &img,
        &work.path().join("staging"),
        &RootSource::Dir(src.path().to_path_buf()),
        64,
        &|_| {},
    )
    .unwrap();
    assert!(contents[0].starts_with("dir:"));
    assert!(size >= 64);
    assert_eq!(debugfs(&img, "cat /opt/app/run.sh"), "echo app\n");
    assert!(debugfs(&img, "cat /etc/passwd").contains("user:x:1000:1000:user:/home/user:/bin/sh"));
    assert!(debugfs(&img, "stat /home/user").contains("User:  1000"));
    // The source directory is left untouched.
    assert!(!src.path().join("etc").exists());
}
