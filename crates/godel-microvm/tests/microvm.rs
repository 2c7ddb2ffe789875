//! End to end against real QEMU (TCG here): spawn, exec, files, pause,
//! snapshot → change → restore (files and a running process's memory),
//! fork, restore into a pre-started QEMU, snapshot of a restored VM, death detection, adoption by a new
//! provider instance, and the warm pool.
//!
//! VM boots are the expensive part, so one scenario shares its guests
//! across assertions: 2 cold boots, 7 restores (one into a pre-started
//! QEMU). Skips (passing, with the
//! reason printed) when QEMU is not installed.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{
    ErrorCode, ExecEvent, ExecOutput, ExecRequest, RuntimeProvider, SandboxState, SnapshotInfo,
    SnapshotRequest, SnapshotTarget, SpawnSpec,
};
use godel_microvm::{Accel, MicrovmConfig, MicrovmProvider};
use sha2::{Digest, Sha256};

async fn sh(p: &MicrovmProvider, id: &str, script: &str) -> ExecOutput {
    p.exec_collect(id, ExecRequest::new(["sh", "-c", script]))
        .await
        .unwrap_or_else(|e| panic!("exec in {id}: {e}"))
}

/// A background process in the guest that keeps a counter in memory only:
/// `inc` increments it, `get` prints it (two FIFOs, no polling; the input
/// FIFO stays open in the server so no request is lost between reads).
const COUNTER: &str = "mkfifo /tmp/in /tmp/out; \
    setsid sh -c 'exec 3<>/tmp/in; n=0; while read c <&3; do \
    case $c in inc) n=$((n+1));; get) echo $n > /tmp/out;; esac; done' \
    </dev/null >/dev/null 2>&1 &";

async fn counter(p: &MicrovmProvider, id: &str) -> u32 {
    let out = sh(p, id, "echo get > /tmp/in; cat /tmp/out").await;
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out:?}"))
}

async fn inc(p: &MicrovmProvider, id: &str, n: usize) {
    for _ in 0..n {
        sh(p, id, "echo inc > /tmp/in").await;
    }
}

fn info(id: &str, runtime_id: &str, dir: &std::path::Path) -> SnapshotInfo {
    SnapshotInfo {
        id: id.into(),
        runtime_id: runtime_id.into(),
        runtime: "microvm".into(),
        team: "t".into(),
        created_at: chrono::Utc::now(),
        size_bytes: 0,
        kind: "vm".into(),
        name: None,
        description: None,
        labels: Default::default(),
        dir: dir.to_path_buf(),
        data: Default::default(),
    }
}

async fn snapshot(
    p: &MicrovmProvider,
    id: &str,
    root: &std::path::Path,
    snap: &str,
) -> SnapshotInfo {
    // Staged then published by a rename, as the control plane does.
    let staging = root.join(format!(".staging-{snap}"));
    std::fs::create_dir_all(&staging).unwrap();
    let target = SnapshotTarget {
        snapshot_id: snap.into(),
        dir: staging.clone(),
    };
    let art = p
        .snapshot(id, &SnapshotRequest::default(), &target)
        .await
        .unwrap();
    assert_eq!(art.kind, "vm");
    assert!(art.size_bytes > 0);
    let dir = root.join(snap);
    std::fs::rename(&staging, &dir).unwrap();
    let mut i = info(snap, id, &dir);
    i.size_bytes = art.size_bytes;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_lifecycle_snapshot_fork_adopt() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    tokio::task::spawn_blocking(common::ensure_image)
        .await
        .unwrap();
    let home = common::TestHome::new();
    let (events, log) = common::recorder();
    let cfg = MicrovmConfig::new(home.path())
        .with_events(events.clone())
        .with_accel(Accel::Tcg);
    let p = MicrovmProvider::new(cfg.clone()).unwrap();
    let avail = p.available().await;
    assert!(avail.available, "{avail:?}");
    eprintln!("available: {}", avail.reason);

    // ---- spawn (cold boot) ----
    let t = std::time::Instant::now();
    let spawned = p.spawn("rt-one", &SpawnSpec::default()).await.unwrap();
    eprintln!("cold boot to ready: {:?}", t.elapsed());
    assert!(spawned.pid.is_some());
    let st = p.status("rt-one").await.unwrap();
    assert_eq!(st.state, SandboxState::Running);
    assert_eq!(st.pid, spawned.pid);
    assert_eq!(st.details["accel"], "tcg");
    assert!(st.details.contains_key("qmp_socket"));
    assert!(st.usage.is_some());

    // ---- exec: output, exit codes, stderr, streaming ----
    let out = sh(&p, "rt-one", "echo hello; echo oops >&2; exit 3").await;
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
        ("hello\n", "oops\n", 3)
    );
    assert_eq!(sh(&p, "rt-one", "hostname").await.stdout, "rt-one\n");
    let mut h = p
        .exec(
            "rt-one",
            ExecRequest::new([
                "sh",
                "-c",
                "for i in 1 2 3; do echo line$i; sleep 0.2; done",
            ]),
        )
        .await
        .unwrap();
    let mut chunks = Vec::new();
    let mut exit = None;
    while let Some(ev) = h.events.next().await {
        match ev {
            ExecEvent::Stdout { data } => chunks.push(String::from_utf8_lossy(&data).into_owned()),
            ExecEvent::Exit(s) => exit = Some(s.code),
            _ => {}
        }
    }
    assert_eq!(exit, Some(0));
    drop(h);
    assert_eq!(chunks.concat(), "line1\nline2\nline3\n");
    assert!(
        chunks.len() >= 2,
        "output should stream in pieces: {chunks:?}"
    );

    // ---- files, including 50 MiB with a checksum ----
    p.write_file("rt-one", "notes/a.txt", Bytes::from_static(b"abc"))
        .await
        .unwrap();
    assert_eq!(
        &p.read_file("rt-one", "/home/user/notes/a.txt")
            .await
            .unwrap()[..],
        b"abc"
    );
    let big: Vec<u8> = (0..50u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let want = hex::encode(Sha256::digest(&big));
    let t = std::time::Instant::now();
    p.write_file("rt-one", "big.bin", Bytes::from(big))
        .await
        .unwrap();
    eprintln!("50 MiB upload: {:?}", t.elapsed());
    let out = sh(&p, "rt-one", "sha256sum /home/user/big.bin").await;
    assert!(out.stdout.starts_with(&want), "{out:?}");
    let back = p.read_file("rt-one", "big.bin").await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&back)), want);
    let entries = p.list_dir("rt-one", "").await.unwrap();
    assert!(entries.iter().any(|e| e.name == "big.bin"));
    p.remove("rt-one", "big.bin", false).await.unwrap();

    // ---- pause / resume ----
    p.pause("rt-one").await.unwrap();
    assert_eq!(
        p.status("rt-one").await.unwrap().state,
        SandboxState::Paused
    );
    let e = p
        .exec_collect("rt-one", ExecRequest::new(["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    p.resume("rt-one").await.unwrap();
    assert_eq!(sh(&p, "rt-one", "echo back").await.stdout, "back\n");

    // ---- snapshot → change → restore shows the old state ----
    sh(&p, "rt-one", COUNTER).await;
    inc(&p, "rt-one", 3).await;
    assert_eq!(counter(&p, "rt-one").await, 3);
    sh(&p, "rt-one", "echo before > state.txt").await;
    let snaps = home.path().join("snapshots");
    let t = std::time::Instant::now();
    let s1 = snapshot(&p, "rt-one", &snaps, "snap-1").await;
    eprintln!(
        "snapshot of a cold-booted VM: {:?}, {} bytes",
        t.elapsed(),
        s1.size_bytes
    );
    inc(&p, "rt-one", 2).await;
    sh(&p, "rt-one", "echo after > state.txt; touch after.txt").await;
    assert_eq!(counter(&p, "rt-one").await, 5);

    let t = std::time::Instant::now();
    p.restore("rt-two", &s1, &SpawnSpec::default())
        .await
        .unwrap();
    eprintln!("restore to ready: {:?}", t.elapsed());
    assert_eq!(counter(&p, "rt-two").await, 3, "process memory comes back");
    assert_eq!(
        sh(
            &p,
            "rt-two",
            "cat state.txt; ls after.txt 2>&1 >/dev/null | wc -l"
        )
        .await
        .stdout,
        "before\n1\n"
    );
    assert_eq!(sh(&p, "rt-two", "hostname").await.stdout, "rt-two\n");
    assert_eq!(counter(&p, "rt-one").await, 5, "the source is untouched");
    let st = p.status("rt-two").await.unwrap();
    assert_eq!(st.details["snapshot_base"], serde_json::json!(s1.dir));

    // ---- fork -n 3: three independent VMs ----
    let t = std::time::Instant::now();
    let forks = ["rt-f1", "rt-f2", "rt-f3"];
    let spec = SpawnSpec::default();
    let res = futures::future::join_all(forks.iter().map(|id| p.restore(id, &s1, &spec))).await;
    for r in res {
        r.unwrap();
    }
    eprintln!("3 concurrent restores: {:?}", t.elapsed());
    inc(&p, "rt-f1", 1).await;
    sh(&p, "rt-f2", "echo f2 > state.txt").await;
    assert_eq!(counter(&p, "rt-f1").await, 4);
    assert_eq!(counter(&p, "rt-f2").await, 3);
    assert_eq!(counter(&p, "rt-f3").await, 3);
    assert_eq!(sh(&p, "rt-f3", "cat state.txt").await.stdout, "before\n");
    assert_eq!(sh(&p, "rt-f2", "cat state.txt").await.stdout, "f2\n");
    let ids: Vec<String> = futures::future::join_all(forks.iter().map(|id| {
        let p = &p;
        async move {
            sh(p, id, "cat /proc/sys/kernel/random/uuid; hostname")
                .await
                .stdout
        }
    }))
    .await;
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3,
        "{ids:?}"
    );

    // ---- pre-started QEMU: after a restore a spare waits for the snapshot,
    // and the next restore uses it (same guest state, new identity) ----
    p.prepare_restores(&s1).await.unwrap();
    assert_eq!(p.vmms().ready(&s1.dir), 1);
    let spare_pid = p.vmms().pids(&s1.dir)[0];
    p.restore("rt-f4", &s1, &SpawnSpec::default())
        .await
        .unwrap();
    let vm4 = p.vm("rt-f4").unwrap();
    assert_eq!(vm4.pid, spare_pid, "the restore used the waiting QEMU");
    let timings = vm4.restore_timings.lock().unwrap();
    assert!(timings.prestarted, "{timings:?}");
    eprintln!("restore into a pre-started QEMU: {timings:?}");
    assert_eq!(counter(&p, "rt-f4").await, 3);
    assert_eq!(sh(&p, "rt-f4", "hostname").await.stdout, "rt-f4\n");
    assert_eq!(sh(&p, "rt-f4", "cat state.txt").await.stdout, "before\n");
    p.terminate("rt-f4").await.unwrap();

    // The snapshot is in use: deleting it is refused.
    assert_eq!(
        p.delete_snapshot(&s1).await.unwrap_err().code,
        ErrorCode::Conflict
    );

    // ---- snapshot of a restored VM (copy-on-write RAM), restored again ----
    let t = std::time::Instant::now();
    let s2 = snapshot(&p, "rt-f1", &snaps, "snap-2").await;
    eprintln!("snapshot of a restored VM: {:?}", t.elapsed());
    inc(&p, "rt-f1", 1).await;
    p.restore("rt-f1b", &s2, &SpawnSpec::default())
        .await
        .unwrap();
    assert_eq!(counter(&p, "rt-f1b").await, 4);
    assert_eq!(counter(&p, "rt-f1").await, 5);
    p.terminate("rt-f1b").await.unwrap();
    p.delete_snapshot(&s2).await.unwrap();

    // ---- kill -9 of a QEMU is detected and reported ----
    let pid = p.status("rt-f3").await.unwrap().pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut st = p.status("rt-f3").await.unwrap();
    for _ in 0..800 {
        if st.state == SandboxState::Error {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        st = p.status("rt-f3").await.unwrap();
    }
    assert_eq!(st.state, SandboxState::Error);
    assert!(
        st.reason
            .as_deref()
            .unwrap_or("")
            .contains("exited unexpectedly"),
        "{st:?}"
    );
    assert!(
        log.lock()
            .iter()
            .any(|e| e.kind == "died" && e.runtime_id.as_deref() == Some("rt-f3")),
        "a died event is emitted"
    );
    assert_eq!(
        p.exec_collect("rt-f3", ExecRequest::new(["true"]))
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unavailable
    );
    p.terminate("rt-f3").await.unwrap();
    p.terminate("rt-f3").await.unwrap();

    // ---- adopt: a new provider instance re-attaches live VMs ----
    let handle = spawned.clone();
    p.terminate("rt-f1").await.unwrap();
    p.terminate("rt-f2").await.unwrap();
    p.terminate("rt-two").await.unwrap();
    // Spares of a snapshot never block its deletion: they are stopped.
    p.prepare_restores(&s1).await.unwrap();
    let spares = p.vmms().pids(&s1.dir);
    assert_eq!(spares.len(), 1);
    p.delete_snapshot(&s1).await.unwrap();
    assert_eq!(p.vmms().ready(&s1.dir), 0);
    assert!(
        spares.iter().all(|pid| !godel_microvm::vm::pid_alive(*pid)),
        "spare QEMU stopped"
    );
    p.shutdown(false).await;
    drop(p);
    let p2 = MicrovmProvider::new(cfg.clone()).unwrap();
    let adopted = p2
        .adopt("rt-one", &SpawnSpec::default(), &handle)
        .await
        .unwrap();
    assert_eq!(adopted.unwrap().pid, handle.pid);
    assert_eq!(counter(&p2, "rt-one").await, 5, "same process, same memory");
    assert_eq!(p2.list().await.unwrap(), vec!["rt-one".to_string()]);
    let gone = p2
        .adopt(
            "rt-gone",
            &SpawnSpec::default(),
            &godel_core::Spawned::default(),
        )
        .await
        .unwrap();
    assert!(gone.is_none());
    p2.terminate("rt-one").await.unwrap();
    assert!(
        !home
            .path()
            .join("microvm/vms")
            .read_dir()
            .unwrap()
            .any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))),
        "terminate removes VM directories"
    );
    p2.shutdown(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_claims_a_ready_vm() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    tokio::task::spawn_blocking(common::ensure_image)
        .await
        .unwrap();
    let home = common::TestHome::new();
    let cfg = MicrovmConfig::new(home.path())
        .with_accel(Accel::Tcg)
        .with_warm_pool(1);
    let p = MicrovmProvider::new(cfg).unwrap();
    p.fill_pool().await.unwrap();
    assert_eq!(p.pool().ready(), 1);
    let t = std::time::Instant::now();
    p.spawn("rt-warm", &SpawnSpec::default()).await.unwrap();
    eprintln!("warm claim: {:?}", t.elapsed());
    assert_eq!(p.pool().stats().claims, 1);
    assert_eq!(sh(&p, "rt-warm", "hostname").await.stdout, "rt-warm\n");
    // The background refill brings the pool back to its size.
    p.fill_pool().await.unwrap();
    assert_eq!(p.pool().ready(), 1);
    p.terminate("rt-warm").await.unwrap();
    p.shutdown(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accelerator_probe_decides_and_caches() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    let image = tokio::task::spawn_blocking(common::ensure_image)
        .await
        .unwrap();
    let qemu = godel_microvm::launch::which("qemu-system-x86_64").unwrap();
    let home = common::image_home();
    let v = godel_microvm::detect_accel(&home, &qemu, &image).await;
    eprintln!("accelerator: {} ({})", v.accel, v.reason);
    assert!(v.accel == "kvm" || v.accel == "tcg");
    assert!(!v.reason.is_empty());
    let again = godel_microvm::detect_accel(&home, &qemu, &image).await;
    assert_eq!(again.accel, v.accel);
    if std::path::Path::new("/dev/kvm").exists() {
        assert!(again.cached, "the verdict is cached");
    }
}

/// A spawn or a restore whose caller gives up half-way (its future dropped
/// while QEMU runs, as a spawn deadline does) leaves no QEMU, RAM file or
/// VM directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_dropped_half_way_leave_nothing_behind() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    tokio::task::spawn_blocking(common::ensure_image)
        .await
        .unwrap();
    let home = common::TestHome::new();
    let p = MicrovmProvider::new(MicrovmConfig::new(home.path()).with_accel(Accel::Tcg)).unwrap();
    let vms = home.path().join("microvm/vms");
    // The VM directories with a QEMU pid file, other than those in `known`.
    let started = |known: &[std::path::PathBuf]| -> Option<(std::path::PathBuf, u32)> {
        std::fs::read_dir(&vms).ok()?.flatten().find_map(|e| {
            if known.contains(&e.path()) {
                return None;
            }
            let pid = std::fs::read_to_string(e.path().join("qemu.pid")).ok()?;
            Some((e.path(), pid.trim().parse().ok()?))
        })
    };
    // Poll `fut` until a new QEMU runs, then drop it and check what is left.
    async fn drop_once_started<F: std::future::Future>(
        fut: F,
        started: impl Fn() -> Option<(std::path::PathBuf, u32)>,
        home: &std::path::Path,
    ) {
        let mut fut = Box::pin(fut);
        let (dir, pid) = loop {
            tokio::select! {
                _ = &mut fut => panic!("it ended before QEMU's pid file was seen"),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {
                    if let Some(found) = started() {
                        break found;
                    }
                }
            }
        };
        let key = dir.file_name().unwrap().to_str().unwrap().to_string();
        drop(fut);
        let gone = |pid: u32| !godel_microvm::vm::pid_alive(pid);
        for _ in 0..200 {
            if gone(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone(pid), "QEMU {pid} still runs");
        assert!(!dir.exists(), "{} left behind", dir.display());
        for ram in ["/dev/shm", &format!("{}/microvm/ram", home.display())] {
            let f = std::path::Path::new(ram).join(format!("godel-{key}.ram"));
            assert!(!f.exists(), "{} left behind", f.display());
        }
    }

    let spec = SpawnSpec::default();
    drop_once_started(p.spawn("rt-dropped", &spec), || started(&[]), home.path()).await;
    assert!(p.status("rt-dropped").await.is_err());

    // A restore: from a snapshot of a VM booted to the end.
    p.spawn("rt-src", &spec).await.unwrap();
    let snap = snapshot(&p, "rt-src", home.path(), "snap-1").await;
    let known: Vec<_> = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    drop_once_started(
        p.restore("rt-restored", &snap, &spec),
        || started(&known),
        home.path(),
    )
    .await;
    assert!(p.status("rt-restored").await.is_err());
    p.terminate("rt-src").await.unwrap();
    p.shutdown(true).await;
}
