//! Escape attempts run inside a real sandbox (real namespaces, cgroups,
//! seccomp). Each must fail, and each test asserts *how* it fails. They need
//! root and skip with a printed reason otherwise. The sandboxes are claimed
//! from a warm pool (jails made ahead, the path most creates take); the cold
//! path runs the same isolation setup with the workspace attached at once
//! (tests/lifecycle.rs runs cold jails).

mod common;

use common::*;
use godel_sandbox::{Jail, JailLimits};
use godel_testkit::Need;

#[tokio::test]
async fn host_shadow_and_root_home_are_out_of_reach() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let a = spawn(&iso, "shadow", JailLimits::default()).await;
    let out = sh(&*a.sb, "cat /etc/shadow").await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("/etc/shadow: Permission denied"),
        "{out:?}"
    );
    // /root and the rest of /home are not there at all.
    let out = sh(&*a.sb, "ls /root; ls /opt; ls -A /home").await;
    assert!(
        out.stderr
            .contains("cannot access '/opt': No such file or directory"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("cannot access '/root': No such file or directory"),
        "{out:?}"
    );
    assert_eq!(out.stdout.trim(), "user");
    // Nor is the daemon's state (this test's temp dir) or the run dir.
    let state = a.dir.path().display().to_string();
    let out = sh(&*a.sb, &format!("ls {state}; ls /run/godel-sandbox")).await;
    assert!(
        out.stderr.contains(&format!(
            "cannot access '{state}': No such file or directory"
        )),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("cannot access '/run/godel-sandbox': No such file or directory"),
        "{out:?}"
    );
    // The agent is `user`, unprivileged even inside.
    let out = sh(
        &*a.sb,
        "whoami; grep -E '^(SigBlk|CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    )
    .await;
    assert_eq!(
        out.stdout,
        "user\nSigBlk:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n",
        "{out:?}"
    );
    // No signal stays blocked from the init (checked without a shell in between).
    let out = run(&*a.sb, &["grep", "SigBlk", "/proc/self/status"]).await;
    assert_eq!(out.stdout, "SigBlk:\t0000000000000000\n", "{out:?}");
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn writes_outside_the_workspace_fail() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let a = spawn(&iso, "write", JailLimits::default()).await;
    for (path, why) in [
        ("/usr/escape", "Read-only file system"),
        ("/etc/escape", "Read-only file system"),
        ("/escape", "Read-only file system"),
        ("/var/escape", "Read-only file system"),
        ("/opt/escape", "No such file or directory"),
    ] {
        let out = sh(&*a.sb, &format!("echo x > {path}")).await;
        assert_eq!(out.code, 1, "{path}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{path}: {why}")),
            "{path}: {out:?}"
        );
        assert!(
            !std::path::Path::new(path).exists(),
            "{path} appeared on the host"
        );
    }
    // The workspace and /tmp are writable; workspace files land on the host
    // owned by root (the idmapped mount), so the daemon's file API sees them as its own.
    let out = sh(
        &*a.sb,
        "echo hi > /home/user/ok && echo t > /tmp/t && cat /tmp/t && stat -c %U ok",
    )
    .await;
    assert_eq!(out.stdout, "t\nuser\n", "{out:?}");
    let host_file = a.cfg.workspace.join("ok");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "hi\n");
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(&host_file).unwrap().uid();
    let h: godel_sandbox::JailHandle = serde_json::from_value(a.sb.handle()).unwrap();
    if h.idmapped {
        assert_eq!(uid, 0);
    } else {
        assert_eq!(uid, h.uid_base + 1000);
    }
    // /tmp is private: nothing reached the host's /tmp.
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn two_agents_cannot_see_or_signal_each_other() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let a = spawn(&iso, "pair-a", JailLimits::default()).await;
    let b = spawn(&iso, "pair-b", JailLimits::default()).await;
    std::fs::write(b.cfg.workspace.join("secret-b"), "b").unwrap();
    // B runs a long process.
    let mut long =
        b.sb.launch(godel_sandbox::ProcessSpec {
            argv: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let b_pid = long.pid;
    // A sees only its own processes: its init (1) and the shell.
    let out = sh(&*a.sb, "ls /proc | grep -E '^[0-9]+$' | sort -n | head -n 5 | tr '\\n' ' '; ps -eo comm= | grep -c sleep").await;
    assert!(out.stdout.starts_with("1 "), "{out:?}");
    assert!(
        out.stdout.trim_end().ends_with('0'),
        "A sees B's sleep: {out:?}"
    );
    // A cannot reach B's files by B's host path or its own view.
    let bws = b.cfg.workspace.display().to_string();
    let out = sh(
        &*a.sb,
        &format!("cat {bws}/secret-b; cat /home/user/secret-b"),
    )
    .await;
    assert!(
        out.stderr
            .contains(&format!("{bws}/secret-b: No such file or directory")),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("/home/user/secret-b: No such file or directory"),
        "{out:?}"
    );
    // A cannot signal B's process by its host pid: no such process in A's namespace.
    let out = sh(&*a.sb, &format!("kill -9 {b_pid}")).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("No such process"), "{out:?}");
    // On the host, A and B run as different uids (distinct ranges per agent).
    let uid_of = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    let a_init = uid_of(a.sb.init_pid().unwrap());
    let b_child = uid_of(b_pid);
    assert_ne!(a_init, 0);
    assert_ne!(b_child, 0);
    assert_ne!(a_init / 65536, b_child / 65536, "agents share a uid range");
    // B's process is still alive and ends only when we say so.
    (long.signal)(9).unwrap();
    let st = long.exit.await.unwrap();
    assert_eq!(st.signal, Some(9));
    let mut s = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut long.stdout, &mut s).await;
    a.sb.destroy().await.unwrap();
    b.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn no_network_beyond_loopback_in_none_mode() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let a = spawn(&iso, "net", JailLimits::default()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // The host's loopback is not the sandbox's loopback.
    let out = sh(&*a.sb, &format!("echo hi > /dev/tcp/127.0.0.1/{port}")).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Connection refused"), "{out:?}");
    // Any other address: no route at all.
    let out = sh(&*a.sb, "echo hi > /dev/tcp/10.1.2.3/80").await;
    assert!(out.stderr.contains("Network is unreachable"), "{out:?}");
    let out = sh(
        &*a.sb,
        "ip -o link show | awk -F': ' '{print $2}' | tr '\\n' ' '; ip route",
    )
    .await;
    assert_eq!(out.stdout.trim(), "lo", "{out:?}");
    // The host listener never saw a connection.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    // Loopback inside works.
    let out = sh(
        &*a.sb,
        "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(); c=socket.create_connection(s.getsockname()); print(\"loopback ok\")'",
    )
    .await;
    assert_eq!(out.stdout.trim(), "loopback ok", "{out:?}");
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let limits = JailLimits {
        pids: Some(48),
        ..Default::default()
    };
    let a = spawn(&iso, "forkbomb", limits).await;
    let mut p =
        a.sb.launch(godel_sandbox::ProcessSpec {
            argv: vec!["bash".into(), "-c".into(), "b(){ b | b & }; b".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Wait for the first refused fork.
    let mut err = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut p.stderr, &mut buf)
            .await
            .unwrap();
        assert!(
            n > 0,
            "stderr closed before any fork failed: {}",
            String::from_utf8_lossy(&err)
        );
        err.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&err).contains("Resource temporarily unavailable") {
            break;
        }
    }
    let usage = a.sb.usage().await.unwrap();
    assert!(usage.pids <= 48, "pids {} over the limit", usage.pids);
    // The host is unaffected: it still starts processes.
    let st = std::process::Command::new("true").status().unwrap();
    assert!(st.success());
    // Exec into the full sandbox is refused with a resource error, or works
    // if a slot happened to be free; either way the daemon side copes.
    match a
        .sb
        .launch(godel_sandbox::ProcessSpec {
            argv: vec!["true".into()],
            ..Default::default()
        })
        .await
    {
        Err(e) => assert_eq!(e.code, godel_core::ErrorCode::ResourceExhausted, "{e}"),
        Ok(q) => {
            (q.signal)(9).ok();
            let _ = q.exit.await;
        }
    }
    a.sb.destroy().await.unwrap();
    assert!(!a.sb.alive().await);
}

#[tokio::test]
async fn memory_hog_is_oom_killed_and_reported() {
    godel_testkit::require!(Need::Root);
    let events = Events::default();
    let iso = warm_isolator(&events, 2).await;
    let limits = JailLimits {
        memory_bytes: Some(64 << 20),
        ..Default::default()
    };
    let a = spawn(&iso, "oom", limits).await;
    // `tail` buffers /dev/zero looking for a newline that never comes.
    let out = run(&*a.sb, &["tail", "/dev/zero"]).await;
    assert_eq!(out.signal, Some(9), "{out:?}");
    assert_eq!(out.code, 137);
    let usage = a.sb.usage().await.unwrap();
    assert!(usage.oom_kills >= 1, "{usage:?}");
    assert!(usage.memory_peak_bytes <= 64 << 20, "{usage:?}");
    let ooms: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.kind == "oom")
        .collect();
    assert!(!ooms.is_empty(), "no oom event");
    assert_eq!(ooms[0].runtime_id.as_deref(), Some(a.cfg.id.as_str()));
    // The sandbox (and this daemon) live on.
    assert!(a.sb.alive().await);
    assert_eq!(sh(&*a.sb, "echo alive").await.stdout, "alive\n");
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn ptrace_mount_modules_and_friends_are_denied() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let a = spawn(&iso, "seccomp", JailLimits::default()).await;
    let me = std::process::id();
    let sb: &dyn Jail = &*a.sb;
    // ptrace the daemon (PTRACE_ATTACH), and the sandbox's own init.
    assert_eq!(
        libc_call(sb, &format!("l.ptrace(16, {me}, 0, 0)")).await,
        "-1 EPERM"
    );
    assert_eq!(libc_call(sb, "l.ptrace(16, 1, 0, 0)").await, "-1 EPERM");
    // mount anything.
    assert_eq!(
        libc_call(sb, "l.mount(b'none', b'/tmp', b'tmpfs', 0, None)").await,
        "-1 EPERM"
    );
    let out = sh(sb, "mount -t tmpfs none /tmp").await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("ermission denied")
            || out.stderr.contains("not permitted")
            || out.stderr.contains("must be superuser"),
        "{out:?}"
    );
    // load a module (init_module 175, finit_module 313 on x86_64).
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            libc_call(sb, "l.syscall(175, None, 0, b'')").await,
            "-1 EPERM"
        );
        assert_eq!(libc_call(sb, "l.syscall(313, 0, b'', 0)").await, "-1 EPERM");
        // kexec_load 246, keyctl 250, bpf 321, perf_event_open 298.
        for nr in [246, 250, 321, 298] {
            assert_eq!(
                libc_call(sb, &format!("l.syscall({nr}, 0, 0, 0, 0, 0)")).await,
                "-1 EPERM",
                "syscall {nr}"
            );
        }
    }
    // No new user namespaces (unshare or clone), so no way to regain privilege.
    assert_eq!(libc_call(sb, "l.unshare(0x10000000)").await, "-1 EPERM");
    // clone(CLONE_NEWUSER | SIGCHLD) is refused too; clone3 reports ENOSYS.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            libc_call(sb, "l.syscall(56, 0x10000011, 0, 0, 0, 0)").await,
            "-1 EPERM"
        );
        assert_eq!(libc_call(sb, "l.syscall(435, 0, 0)").await, "-1 ENOSYS");
    }
    let out = sh(sb, "unshare -Ur true").await;
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
    // Ordinary work still runs (threads use clone/clone3 fallback).
    let out = sh(sb, "python3 -c 'import threading; t=threading.Thread(target=print, args=(\"thread ok\",)); t.start(); t.join()'").await;
    assert_eq!(out.stdout.trim(), "thread ok", "{out:?}");
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn own_proc_and_hostname() {
    godel_testkit::require!(Need::Root);
    let iso = warm_isolator(&Events::default(), 2).await;
    let a = spawn(&iso, "proc", JailLimits::default()).await;
    let out = sh(
        &*a.sb,
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc/$$/ >/dev/null && echo own",
    )
    .await;
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some(a.cfg.id.as_str()));
    assert!(
        lines.next().unwrap().contains("godel-sandbox-init"),
        "{out:?}"
    );
    assert_eq!(lines.next(), Some("own"));
    // The daemon's pid is not a process here (or at most an unrelated small pid).
    let out = sh(
        &*a.sb,
        &format!(
            "test -e /proc/{}/cmdline && cat /proc/{}/cmdline",
            std::process::id(),
            std::process::id()
        ),
    )
    .await;
    assert!(!out.stdout.contains("escapes"), "{out:?}");
    a.sb.destroy().await.unwrap();
}

#[tokio::test]
async fn without_user_namespaces_agents_are_a_dedicated_unprivileged_uid() {
    godel_testkit::require!(Need::Root);
    let iso = isolator_with(&Events::default(), Some(false));
    let a = spawn(&iso, "nouserns", JailLimits::default()).await;
    let h: godel_sandbox::JailHandle = serde_json::from_value(a.sb.handle()).unwrap();
    let agent = h.uid_base + 1000;
    let out = sh(
        &*a.sb,
        "whoami; id -u; cat /etc/shadow; echo x > /usr/escape; echo ok > mine; cat mine",
    )
    .await;
    assert_eq!(out.stdout, format!("user\n{agent}\nok\n"), "{out:?}");
    assert!(
        out.stderr.contains("/etc/shadow: Permission denied"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("/usr/escape: Read-only file system"),
        "{out:?}"
    );
    // The workspace was handed to the agent's uid; the runtime is told to chown.
    assert_eq!(a.sb.workspace_owner(), Some((agent, agent)));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(a.cfg.workspace.join("mine"))
            .unwrap()
            .uid(),
        agent
    );
    assert_eq!(libc_call(&*a.sb, "l.ptrace(16, 1, 0, 0)").await, "-1 EPERM");
    assert_eq!(libc_call(&*a.sb, "l.unshare(0x10000000)").await, "-1 EPERM");
    let out = sh(
        &*a.sb,
        "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; ip -o link | wc -l",
    )
    .await;
    assert_eq!(
        out.stdout, "CapEff:\t0000000000000000\nNoNewPrivs:\t1\n1\n",
        "{out:?}"
    );
    a.sb.destroy().await.unwrap();
}
