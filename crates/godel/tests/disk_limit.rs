//! `--disk` is a hard limit for a worktree workspace: writes past it fail
//! inside the sandbox with "No space left on device"; the runtime lives on.

mod common;

use common::{Daemon, make_repo, stderr};

#[test]
fn writes_past_the_disk_limit_fail_with_enospc() {
    let d = Daemon::start(&[]);
    let repo = make_repo(d.home());
    let id = d.last_line(&["spawn", "--repo", repo.to_str().unwrap(), "--disk", "16Mi"]);
    let o = d.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=big bs=1M count=64 2>&1; exit 0",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("No space left on device"),
        "{out}{}",
        stderr(&o)
    );
    // Small writes still work after removing the big file; the repo's files are there.
    d.ok(&["exec", &id, "--", "rm", "-f", "big"]);
    d.ok(&["exec", &id, "--", "sh", "-c", "echo ok > small"]);
    assert_eq!(d.ok(&["read", &id, "small"]), "ok\n");
    assert_eq!(d.ok(&["read", &id, "README.md"]), "hello\n");
    // Without --disk nothing of the kind is imposed.
    let free = d.last_line(&["spawn", "--repo", repo.to_str().unwrap()]);
    d.ok(&[
        "exec",
        &free,
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=big bs=1M count=32 2>/dev/null",
    ]);
    d.ok(&["rm", &id]);
    d.ok(&["rm", &free]);
}
