//! The sandbox as a runtime uses it: exec semantics (exit codes, stdin,
//! cwd, env, errors), signalling whole process groups, usage, pause/resume,
//! re-adoption after a daemon restart, destroy, and the NAT network mode.

mod common;

use std::time::Duration;

use common::*;
use godel_core::{ErrorCode, NetworkConfig, NetworkMode};
use godel_sandbox::{Isolator, JailHandle, JailLimits, ProcessSpec};
use godel_testkit::Need;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn exec_semantics() {
    godel_testkit::require!(Need::Root);
    let iso = isolator(&Events::default());
    let a = spawn(&iso, "exec", JailLimits::default()).await;
    std::fs::create_dir(a.cfg.workspace.join("sub")).unwrap();
    // Exit codes and signals.
    assert_eq!(sh(&*a.sb, "exit 7").await.code, 7);
    let out = sh(&*a.sb, "kill -TERM $$").await;
    assert_eq!((out.code, out.signal), (128 + 15, Some(15)));
    // cwd (relative and absolute under /home/user) and env.
    let mut p =
        a.sb.launch(ProcessSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "pwd; echo $FOO $HOME $USER".into(),
            ],
            env: [("FOO".to_string(), "bar".to_string())].into(),
            cwd: Some("sub".into()),
            stdin: false,
        })
        .await
        .unwrap();
    let mut s = String::new();
    p.stdout.read_to_string(&mut s).await.unwrap();
    assert_eq!(s, "/home/user/sub\nbar /home/user user\n");
    assert_eq!(p.exit.await.unwrap().code, 0);
    // stdin.
    let mut p =
        a.sb.launch(ProcessSpec {
            argv: vec!["tr".into(), "a-z".into(), "A-Z".into()],
            cwd: Some("/home/user/sub".into()),
            stdin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut w = p.stdin.take().unwrap();
    w.write_all(b"hello sandbox").await.unwrap();
    drop(w);
    let mut s = String::new();
    p.stdout.read_to_string(&mut s).await.unwrap();
    assert_eq!(s, "HELLO SANDBOX");
    // Errors carry the right code.
    let e =
        a.sb.launch(ProcessSpec {
            argv: vec!["no-such-command".into()],
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::ExecutionError);
    assert!(
        e.message.contains("command not found: no-such-command"),
        "{e}"
    );
    let e =
        a.sb.launch(ProcessSpec {
            argv: vec!["true".into()],
            cwd: Some("missing".into()),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    let e =
        a.sb.launch(ProcessSpec {
            argv: vec!["true".into()],
            cwd: Some("/nonexistent".into()),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.message.contains("/nonexistent"), "{e}");
    // Absolute paths of the agent's own view work (the sandbox's /tmp).
    let mut p =
        a.sb.launch(ProcessSpec {
            argv: vec!["pwd".into()],
            cwd: Some("/tmp".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut s = String::new();
    p.stdout.read_to_string(&mut s).await.unwrap();
    assert_eq!(s, "/tmp\n");
    std::fs::write(a.cfg.workspace.join("noexec.sh"), "#!/bin/sh\n").unwrap();
    let e =
        a.sb.launch(ProcessSpec {
            argv: vec!["./noexec.sh".into()],
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::PermissionDenied, "{e}");
    a.sb.destroy().await.unwrap();
    // Destroy is idempotent and exec afterwards is refused.
    a.sb.destroy().await.unwrap();
    assert!(
        a.sb.launch(ProcessSpec {
            argv: vec!["true".into()],
            ..Default::default()
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn signal_kills_the_whole_process_group() {
    godel_testkit::require!(Need::Root);
    let iso = isolator(&Events::default());
    let a = spawn(&iso, "pgrp", JailLimits::default()).await;
    let mut p =
        a.sb.launch(ProcessSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "sleep 1000 & sleep 1000 & echo started; wait".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    // The reported pid is a host pid of our process.
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", p.pid)).unwrap();
    assert!(cmdline.starts_with("sh\0-c\0"), "{cmdline:?}");
    let mut buf = [0u8; 8];
    let n = p.stdout.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"started\n");
    let before = a.sb.usage().await.unwrap().pids;
    assert!(before >= 4, "init + sh + 2 sleeps, got {before}");
    (p.signal)(libc::SIGKILL).unwrap();
    let st = p.exit.await.unwrap();
    assert_eq!(st.signal, Some(libc::SIGKILL));
    // Both sleeps die with the group: only the init remains.
    let mut pids = before;
    for _ in 0..400 {
        pids = a.sb.usage().await.unwrap().pids;
        if pids == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pids, 1);
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn usage_freeze_and_adopt_after_restart() {
    godel_testkit::require!(Need::Root);
    let iso = isolator(&Events::default());
    let limits = JailLimits {
        cpu_millis: Some(500),
        memory_bytes: Some(256 << 20),
        pids: Some(64),
        disk_bytes: Some(64 << 20),
    };
    let a = spawn(&iso, "adopt", limits).await;
    let out = sh(&*a.sb, "head -c 3000000 /dev/urandom > blob; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; df -k /tmp | tail -1 | awk '{print $2}'").await;
    assert_eq!(
        out.stdout.trim(),
        "65536",
        "/tmp size follows the disk limit: {out:?}"
    );
    // The limits are really in the kernel.
    let h: JailHandle = serde_json::from_value(a.sb.handle()).unwrap();
    let read = |p: String| std::fs::read_to_string(p).unwrap().trim().to_string();
    if h.cgroup_version == 1 {
        let id = &a.cfg.id;
        assert_eq!(
            read(format!("/sys/fs/cgroup/cpu/godel/{id}/cpu.cfs_quota_us")),
            "50000"
        );
        assert_eq!(
            read(format!(
                "/sys/fs/cgroup/memory/godel/{id}/memory.limit_in_bytes"
            )),
            (256u64 << 20).to_string()
        );
        assert_eq!(
            read(format!("/sys/fs/cgroup/pids/godel/{id}/pids.max")),
            "64"
        );
        let procs = read(format!("/sys/fs/cgroup/memory/godel/{id}/cgroup.procs"));
        assert_eq!(procs, h.init_pid.to_string());
    } else {
        let d = format!("/sys/fs/cgroup/godel/{}", a.cfg.id);
        assert_eq!(read(format!("{d}/cpu.max")), "50000 100000");
        assert_eq!(read(format!("{d}/pids.max")), "64");
    }
    let u = a.sb.usage().await.unwrap();
    assert!(u.cpu_seconds > 0.0, "{u:?}");
    assert!(u.memory_peak_bytes > 0, "{u:?}");
    assert!(u.disk_bytes >= 3_000_000, "{u:?}");
    assert_eq!(u.pids, 1);

    // Pause: the freezer holds everything; resume and exec works again.
    a.sb.freeze(true).await.unwrap();
    let h: JailHandle = serde_json::from_value(a.sb.handle()).unwrap();
    if h.cgroup_version == 1 {
        let state = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/freezer/godel/{}/freezer.state",
            a.cfg.id
        ))
        .unwrap();
        assert_ne!(state.trim(), "THAWED");
    }
    a.sb.freeze(false).await.unwrap();
    assert_eq!(sh(&*a.sb, "echo thawed").await.stdout, "thawed\n");

    // A "restarted daemon": a new isolator adopts the live sandbox by handle.
    let handle = a.sb.handle();
    let long =
        a.sb.launch(ProcessSpec {
            argv: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let long_pid = long.pid;
    // The old in-memory sandbox is forgotten (the test guard still holds it;
    // its later destroy must not disturb anything: destroy is idempotent).
    drop(long);
    let iso2 = isolator(&Events::default());
    let sb = iso2
        .adopt(a.cfg.clone(), &handle)
        .await
        .unwrap()
        .expect("sandbox survived the restart");
    let _g = Guard(sb.clone());
    assert_eq!(sb.init_pid(), Some(h.init_pid));
    assert!(std::path::Path::new(&format!("/proc/{long_pid}")).exists());
    assert_eq!(sh(&*sb, "cat blob | wc -c").await.stdout.trim(), "3000000");
    sb.destroy().await.unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{}/cmdline", h.init_pid)).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", h.init_pid))
                .unwrap_or_default()
                .contains(") Z")
    );
    // Gone for good: adopt says so, and nothing is left behind.
    assert!(iso2.adopt(a.cfg.clone(), &handle).await.unwrap().is_none());
    assert!(!h.dir.exists());
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/pids/godel/{}", a.cfg.id)).exists());
}

#[tokio::test]
async fn nat_mode_allows_only_the_allowlist_and_never_other_agents() {
    godel_testkit::require!(Need::Root, Need::Nft);
    let iso = isolator(&Events::default());
    let mk = |name: &str, allow: Vec<String>| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir, &id(name), JailLimits::default());
        cfg.network = NetworkConfig {
            mode: NetworkMode::Nat,
            allow,
            ..Default::default()
        };
        (dir, cfg)
    };
    let (_d1, cfg_b) = mk("nat-b", vec![]);
    let b = iso.create(cfg_b).await.unwrap();
    let _gb = Guard(b.clone());
    let hb: JailHandle = serde_json::from_value(b.handle()).unwrap();
    let b_setup = godel_sandbox::nat::nat_setup(hb.slot);
    // B listens on its own address.
    let mut b_listener = b
        .launch(ProcessSpec {
            argv: vec![
                "python3".into(),
                "-c".into(),
                "import socket; s=socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen(); print('listening', flush=True); s.accept(); print('ACCEPTED', flush=True)".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut buf = [0u8; 10];
    b_listener.stdout.read_exact(&mut buf).await.unwrap();

    // A may reach TCP port P on its gateway (the host) and nothing else.
    let probe = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let (_d2, cfg_a) = mk("nat-a", vec![format!("10.200.0.0/14:{port}")]);
    let a = iso.create(cfg_a).await.unwrap();
    let _ga = Guard(a.clone());
    let ha: JailHandle = serde_json::from_value(a.handle()).unwrap();
    let a_setup = godel_sandbox::nat::nat_setup(ha.slot);
    let allowed = std::net::TcpListener::bind((a_setup.host_ip.as_str(), port)).unwrap();
    let denied = std::net::TcpListener::bind((a_setup.host_ip.as_str(), 0)).unwrap();
    let denied_port = denied.local_addr().unwrap().port();
    let out = sh(
        &*a,
        &format!("echo hi > /dev/tcp/{}/{port} && echo sent", a_setup.host_ip),
    )
    .await;
    assert_eq!(out.stdout, "sent\n", "{out:?}");
    let (mut conn, peer) = allowed.accept().unwrap();
    assert_eq!(peer.ip().to_string(), a_setup.agent_ip);
    let mut got = String::new();
    std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
    assert_eq!(got, "hi\n");
    let u = a.usage().await.unwrap();
    assert!(u.tx_bytes > 0 && u.rx_bytes > 0, "{u:?}");
    // A port not on the list: rejected at once.
    let out = sh(
        &*a,
        &format!("echo hi > /dev/tcp/{}/{denied_port}", a_setup.host_ip),
    )
    .await;
    assert!(out.stderr.contains("No route to host"), "{out:?}");
    // The other agent, even on an allowlisted range: rejected.
    let out = sh(
        &*a,
        &format!("echo hi > /dev/tcp/{}/8080", b_setup.agent_ip),
    )
    .await;
    assert!(out.stderr.contains("No route to host"), "{out:?}");
    // B never accepted anything.
    (b_listener.signal)(libc::SIGKILL).unwrap();
    let mut rest = String::new();
    b_listener.stdout.read_to_string(&mut rest).await.unwrap();
    assert!(!rest.contains("ACCEPTED"), "{rest}");
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    // Tables and veths are gone.
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains(&format!("godel_{}", ha.slot)), "{tables}");
    assert!(!std::path::Path::new(&format!("/sys/class/net/{}", a_setup.host_if)).exists());
}

#[tokio::test]
async fn overlay_workspace_is_writable_and_owned_by_the_agent() {
    godel_testkit::require!(Need::Root);
    // The worktree runtime's copy-on-write workspace: overlayfs over a checkout.
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper, work, merged) = (
        dir.path().join("lower"),
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(lower.join("README"), "from the repo\n").unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let iso = isolator(&Events::default());
    let cfg = godel_sandbox::JailConfig {
        id: id("overlay"),
        workspace: merged.clone(),
        state_dir: dir.path().join("state"),
        limits: JailLimits::default(),
        network: Default::default(),
        env: Default::default(),
        volumes: Vec::new(),
    };
    let sb = iso.create(cfg).await.unwrap();
    let _g = Guard(sb.clone());
    let h: JailHandle = serde_json::from_value(sb.handle()).unwrap();
    eprintln!(
        "overlay workspace idmapped: {} {:?}",
        h.idmapped, h.idmap_error
    );
    let out = sh(
        &*sb,
        "cat README && echo changed >> README && echo new > new && stat -c '%U %n' README new",
    )
    .await;
    assert_eq!(
        out.stdout, "from the repo\nuser README\nuser new\n",
        "{out:?}"
    );
    sb.destroy().await.unwrap();
    // Copy-up went to the upper dir; the lower layer is untouched.
    assert_eq!(
        std::fs::read_to_string(upper.join("README")).unwrap(),
        "from the repo\nchanged\n"
    );
    assert_eq!(
        std::fs::read_to_string(lower.join("README")).unwrap(),
        "from the repo\n"
    );
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "new\n");
    if h.idmapped {
        assert_eq!(sb.workspace_owner(), None);
    } else {
        let agent = h.agent_host_uid.unwrap_or(h.uid_base + 1000);
        assert_eq!(sb.workspace_owner(), Some((agent, agent)));
    }
    if h.idmapped {
        // Files the agent wrote are root's on disk: no chown, no copy-up of untouched files.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(upper.join("new")).unwrap().uid(), 0);
    }
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
}

#[tokio::test]
async fn disk_limit_is_reported() {
    godel_testkit::require!(Need::Root);
    let events = Events::default();
    let iso = isolator(&events);
    let limits = JailLimits {
        disk_bytes: Some(1 << 20),
        ..Default::default()
    };
    let a = spawn(&iso, "disk", limits).await;
    // /tmp is capped by the limit; the workspace is measured.
    let out = sh(&*a.sb, "head -c 2000000 /dev/zero > /tmp/big").await;
    assert!(out.stderr.contains("No space left on device"), "{out:?}");
    let u = a.sb.usage().await.unwrap();
    assert!(u.disk_bytes < 1 << 20, "{u:?}");
    assert!(!events.all().iter().any(|e| e.kind == "disk_limit_exceeded"));
    let a2 = spawn(
        &iso,
        "disk2",
        JailLimits {
            disk_bytes: Some(1 << 20),
            ..Default::default()
        },
    )
    .await;
    sh(&*a2.sb, "head -c 2000000 /dev/urandom > big").await;
    let u = a2.sb.usage().await.unwrap();
    assert!(u.disk_bytes >= 2_000_000, "{u:?}");
    let ev: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.kind == "disk_limit_exceeded")
        .collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].runtime_id.as_deref(), Some(a2.cfg.id.as_str()));
    a.sb.destroy().await.unwrap();
    a2.sb.destroy().await.unwrap();
}
