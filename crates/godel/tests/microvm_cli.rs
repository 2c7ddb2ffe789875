//! The spine's CLI on microVM runtimes, against a real daemon, under
//! whatever accelerator the host offers (TCG here): spawn, exec, files,
//! status with the VMM's pid, snapshot → change → restore, fork, rm, and
//! `godel migrate` of a worktree agent into a microVM with its content.

mod common;

use std::path::PathBuf;

use common::{Daemon, stderr};

#[test]
fn microvm_runtime_through_the_cli() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    let d = Daemon::start(&[]);
    // Build (or reuse) the image in the cache the other microVM tests share, then link it in.
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("godel-image-test-home");
    let out = d
        .cmd()
        .env("GODEL_HOME", &cache)
        .args(["image", "build"])
        .output()
        .unwrap();
    assert!(out.status.success(), "godel image build: {}", stderr(&out));
    std::os::unix::fs::symlink(cache.join("images"), d.home().join("images")).unwrap();

    let doctor = d.ok(&["doctor", "--json"]);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&doctor).unwrap();
    let vm = reports.iter().find(|r| r["name"] == "microvm").unwrap();
    assert_eq!(vm["availability"]["available"], true, "{vm}");
    let text = vm.to_string();
    assert!(
        text.contains("tcg") || text.contains("kvm"),
        "doctor names the accelerator: {text}"
    );

    let id = d.last_line(&[
        "spawn",
        "--runtime",
        "microvm",
        "--cpu",
        "1",
        "--memory",
        "256Mi",
    ]);
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["status", &id, "--json"])).unwrap();
    let pid = st["pid"].as_u64().expect("status has the VMM's pid");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("qemu-system"), "pid {pid} is the VMM");

    let o = d.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; uname -s; exit 9",
    ]);
    assert_eq!(o.status.code(), Some(9));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\nLinux\n");
    assert_eq!(stderr(&o), "err\n");
    let w = d.run_stdin(&["write", &id, "dir/f.bin"], b"vm\x00data");
    assert!(w.status.success(), "{}", stderr(&w));
    assert_eq!(d.run(&["read", &id, "dir/f.bin"]).stdout, b"vm\x00data");

    d.ok(&["exec", &id, "--", "sh", "-c", "echo one > /home/user/state"]);
    let snap = d.last_line(&["snapshot", "create", &id]);
    d.ok(&["exec", &id, "--", "sh", "-c", "echo two > /home/user/state"]);
    let restored = d.last_line(&["restore", &snap]);
    assert_eq!(d.ok(&["read", &restored, "state"]), "one\n");
    assert_eq!(d.ok(&["read", &id, "state"]), "two\n");
    let forks: Vec<String> = d
        .ok(&["fork", &snap, "-n", "2"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(forks.len(), 2);
    d.ok(&[
        "exec",
        &forks[0],
        "--",
        "sh",
        "-c",
        "echo f0 > /home/user/state",
    ]);
    assert_eq!(d.ok(&["read", &forks[1], "state"]), "one\n");
    assert_eq!(d.ok(&["read", &forks[0], "state"]), "f0\n");
    for r in [&restored, &forks[0], &forks[1], &id] {
        d.ok(&["rm", r]);
    }
    d.ok(&["snapshot", "rm", &snap]);

    // A worktree agent moved into a microVM: the workspace arrives, checked.
    let wt = d.last_line(&["spawn", "--runtime", "worktree"]);
    d.ok(&[
        "exec",
        &wt,
        "--",
        "sh",
        "-c",
        "mkdir -p src && echo body > src/a.txt && echo top > b.txt",
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&d.ok(&["migrate", "--agents", &wt, "--to", "microvm", "--json"]))
            .unwrap();
    let m = &r["moves"][0];
    assert_eq!(m["ok"], true, "{r}");
    assert!(m["checksum"].is_string(), "{r}");
    let moved = m["new_id"].as_str().unwrap().to_string();
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["status", &moved, "--json"])).unwrap();
    assert_eq!(st["runtime"], "microvm", "{st}");
    assert_eq!(d.ok(&["read", &moved, "src/a.txt"]), "body\n");
    assert_eq!(
        d.ok(&["exec", &moved, "--", "cat", "/home/user/b.txt"]),
        "top\n"
    );
    let src: serde_json::Value = serde_json::from_str(&d.ok(&["status", &wt, "--json"])).unwrap();
    assert_eq!(src["state"], "terminated", "{src}");
    d.ok(&["rm", &moved]);
    // The VMM exits (a zombie has an empty command line until it is reaped).
    let gone = (0..100).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.contains("qemu"));
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        !alive
    });
    assert!(gone, "the VMM is gone after rm");
}
