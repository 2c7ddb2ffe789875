//! The warm pool: jails made ahead run nothing before they are claimed, a
//! claim attaches the workspace and the sandbox's identity and limits, a
//! claimed jail is adopted and destroyed like a cold one, and the unclaimed
//! jails of a daemon that died exit with it and are removed by the next one.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::*;
use godel_sandbox::proto::{self, Reply, Request};
use godel_sandbox::{Isolator, JailHandle, JailLimits, NamespaceIsolator};
use godel_testkit::Need;

fn warm_dirs(run_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(run_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("warm-{}-", std::process::id())))
                        && p.join("pool.json").exists()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn handle_of(dir: &Path) -> JailHandle {
    serde_json::from_slice(&std::fs::read(dir.join("pool.json")).unwrap()).unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z") && !s.contains(") X"))
}

#[tokio::test]
async fn a_warm_jail_runs_nothing_until_claimed_then_is_the_sandbox() {
    godel_testkit::require!(Need::Root);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let iso = isolator_in(&run_dir, 1);
    assert_eq!(iso.prewarm().await, 1);
    let dirs = warm_dirs(&run_dir);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let warm = handle_of(&dirs[0]);
    assert!(alive(warm.init_pid));

    // Before the claim: no exec (the connection is closed on us), no second
    // workspace-less claim either.
    let sock = dirs[0].join("ctl.sock");
    let conn = proto::connect(&sock).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let req = Request::Exec {
        argv: vec!["true".into()],
        env: vec![],
        cwd: "/home/user".into(),
        stdin: false,
    };
    proto::send_msg(
        conn.as_raw_fd(),
        &req,
        &[w.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()],
    )
    .unwrap();
    drop((r, w));
    let got = proto::recv_msg(conn.as_raw_fd(), nix::sys::socket::MsgFlags::empty()).unwrap();
    assert!(got.is_none(), "an unclaimed jail answered an exec");
    let conn = proto::connect(&sock).unwrap();
    let claim = Request::Claim {
        hostname: "x".into(),
        tmp_bytes: 1 << 20,
    };
    proto::send_msg(conn.as_raw_fd(), &claim, &[]).unwrap();
    let got = proto::recv_msg(conn.as_raw_fd(), nix::sys::socket::MsgFlags::empty())
        .unwrap()
        .unwrap();
    assert!(matches!(
        proto::parse::<Reply>(&got.data).unwrap(),
        Reply::Failed { .. }
    ));

    // The claim: the workspace, hostname, limits and /tmp size are the sandbox's.
    let dir = tempfile::tempdir().unwrap();
    let limits = JailLimits {
        pids: Some(77),
        disk_bytes: Some(3 << 20),
        ..Default::default()
    };
    let cfg = config(&dir, &id("claimed"), limits);
    std::fs::write(cfg.workspace.join("note"), "from the host\n").unwrap();
    let sb = iso.create(cfg.clone()).await.unwrap();
    let _g = Guard(sb.clone());
    let h: JailHandle = serde_json::from_value(sb.handle()).unwrap();
    assert_eq!(h.init_pid, warm.init_pid, "the warm jail was claimed");
    let name = h
        .host_name
        .clone()
        .expect("a claimed jail keeps its pool name");
    assert!(name.starts_with("warm-"));
    assert!(!h.dir.join("pool.json").exists());
    let out = sh(
        &*sb,
        "cat note; hostname; cat /etc/hostname; id -u; touch mine && stat -c %u mine; \
         df -B1 --output=size /tmp | tail -1; cat /sys/fs/cgroup/pids.max 2>/dev/null || true",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(
        &lines[..5],
        [
            "from the host",
            cfg.id.as_str(),
            cfg.id.as_str(),
            "1000",
            "1000"
        ],
        "{out:?}"
    );
    assert_eq!(lines[5], (3u64 << 20).to_string(), "{out:?}");
    let pids_max = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/godel/{name}/pids.max"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/godel/{name}/pids.max")))
        .unwrap();
    assert_eq!(pids_max.trim(), "77");

    // A restarted daemon adopts it by its handle; destroy removes the pool name's state.
    let mut opts2 = options(&Events::default(), None, 0);
    opts2.run_dir = run_dir.clone();
    let iso2 = NamespaceIsolator::new(opts2);
    let sb2 = iso2
        .adopt(cfg.clone(), &sb.handle())
        .await
        .unwrap()
        .expect("a claimed jail is adopted");
    assert_eq!(sh(&*sb2, "cat note").await.stdout, "from the host\n");
    sb2.destroy().await.unwrap();
    let left: Vec<_> = std::fs::read_dir(&h.dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(!h.dir.exists(), "{left:?}");
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/godel/{name}")).exists());
    assert!(!Path::new(&format!("/sys/fs/cgroup/godel/{name}")).exists());
    // The pool refills in the background; dropping the isolator kills the warm jails.
    iso.drain().await;
    assert!(warm_dirs(&run_dir).is_empty());
}

/// Not a test of its own: run by `unclaimed_jails_of_a_dead_daemon_are_reaped`
/// in a child process, which fills a pool in the given run directory and
/// exits without cleaning up (as a daemon killed with SIGKILL would).
#[tokio::test]
async fn leave_a_warm_pool_behind() {
    let Some(run_dir) = std::env::var_os("GODEL_TEST_LEAK_POOL") else {
        return;
    };
    let mut opts = options(&Events::default(), None, 2);
    opts.run_dir = run_dir.into();
    let iso = NamespaceIsolator::new(opts);
    assert_eq!(iso.prewarm().await, 2);
    std::process::exit(0);
}

#[tokio::test]
async fn unclaimed_jails_of_a_dead_daemon_are_reaped() {
    godel_testkit::require!(Need::Root);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "leave_a_warm_pool_behind", "--nocapture"])
        .env("GODEL_TEST_LEAK_POOL", &run_dir)
        .status()
        .unwrap();
    assert!(st.success());
    let left: Vec<(PathBuf, JailHandle)> = std::fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("pool.json").exists())
        .map(|p| {
            let h = handle_of(&p);
            (p, h)
        })
        .collect();
    assert_eq!(left.len(), 2, "the child left two warm jails");
    // An unclaimed init follows its daemon (it watches a pidfd of it).
    for (_, h) in &left {
        let mut waited = 0;
        while alive(h.init_pid) && waited < 500 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
        }
        assert!(
            !alive(h.init_pid),
            "warm init {} outlived its daemon",
            h.init_pid
        );
    }
    // Their run directories, cgroups and slots are left; the next daemon's
    // first fill removes them.
    let iso = isolator_in(&run_dir, 1);
    assert_eq!(iso.prewarm().await, 1);
    for (dir, h) in &left {
        assert!(
            !alive(h.init_pid),
            "stale warm init {} still alive",
            h.init_pid
        );
        assert!(!dir.exists(), "{} left behind", dir.display());
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(!Path::new(&format!("/sys/fs/cgroup/pids/godel/{name}")).exists());
    }
    iso.drain().await;
}

/// A jail whose record cannot be written (a full disk under the state dir)
/// would be found by nothing after a daemon crash: the create fails with the
/// write's error and the jail, claimed from the pool or made cold, is gone.
#[tokio::test]
async fn a_jail_that_cannot_be_recorded_is_destroyed() {
    godel_testkit::require!(Need::Root);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let iso = isolator_in(&run_dir, 1);
    assert_eq!(iso.prewarm().await, 1);
    let warm = handle_of(&warm_dirs(&run_dir)[0]);
    let dir = tempfile::tempdir().unwrap();
    for (what, name) in [("claimed", "unrecorded-warm"), ("cold", "unrecorded-cold")] {
        let mut cfg = config(&dir, &id(name), JailLimits::default());
        // A regular file where the state directory should be.
        let blocker = dir.path().join(format!("{name}-state"));
        std::fs::write(&blocker, "").unwrap();
        cfg.state_dir = blocker.join("sandbox");
        let err = match iso.create(cfg.clone()).await {
            Ok(_) => panic!("{what}: a jail without a record was handed out"),
            Err(e) => e,
        };
        assert!(err.message.contains("record sandbox"), "{what}: {err}");
        if what == "claimed" {
            assert!(!alive(warm.init_pid), "the claimed warm init still runs");
            assert!(!warm.dir.exists(), "{:?} left behind", warm.dir);
        }
        assert!(!Path::new(&format!("/sys/fs/cgroup/pids/godel/{}", cfg.id)).exists());
        assert!(!Path::new(&format!("/sys/fs/cgroup/godel/{}", cfg.id)).exists());
    }
    iso.drain().await;
}
