//! End to end: build (or reuse) the image in a cache directory, boot it with
//! plain QEMU (`-M microvm`, TCG) and drive the guest agent through
//! `GuestClient` over the virtio-serial chardev socket.
//!
//! Runs only where `qemu-system-x86_64` exists (it says so and passes
//! otherwise). First run: downloads the kernel package (~27 MB) and builds
//! the static agent; later runs reuse the cache. A boot under TCG takes a
//! few seconds. `GODEL_BOOT_SAMPLES=N` boots N times and prints the median
//! boot-to-ready time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use godel_core::{ExecRequest, FileKind};
use godel_guest::GuestClient;
use godel_image::{ImageInfo, ImageOptions, build_image, host_tsc_khz, kernel_cmdline};

struct Qemu {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

/// Built once per test binary (the tests share it).
fn image() -> ImageInfo {
    static IMAGE: parking_lot::Mutex<Option<ImageInfo>> = parking_lot::Mutex::new(None);
    let mut slot = IMAGE.lock();
    if let Some(img) = slot.as_ref() {
        return img.clone();
    }
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("godel-image-test-home");
    let opts = ImageOptions {
        godel_home: Some(home),
        rebuild_guest: true,
        ..Default::default()
    };
    let img = build_image(opts, &|p| eprintln!("[image] {}: {}", p.step, p.message))
        .expect("image build");
    *slot = Some(img.clone());
    img
}

fn boot(img: &ImageInfo) -> (Qemu, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let drive = format!(
        "file={},format=raw,if=none,id=d0,snapshot=on,cache=unsafe",
        img.rootfs.path.display()
    );
    boot_with(img, dir, &drive, &[])
}

fn boot_with(
    img: &ImageInfo,
    dir: tempfile::TempDir,
    drive: &str,
    extra: &[String],
) -> (Qemu, PathBuf) {
    let sock = dir.path().join("agent.sock");
    let console = dir.path().join("console.log");
    let cmdline = kernel_cmdline(host_tsc_khz());
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,isa-serial=on,acpi=on",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args(["-m", "256", "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&img.kernel.path)
        .arg("-initrd")
        .arg(&img.initrd.path)
        .arg("-append")
        .arg(&cmdline)
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            sock.display()
        ))
        .args(["-device", "virtio-serial-device,id=vser0"])
        .args([
            "-device",
            "virtserialport,bus=vser0.0,chardev=agent,name=agent",
        ])
        .arg("-drive")
        .arg(drive)
        .args(["-device", "virtio-blk-device,drive=d0"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("start qemu");
    (Qemu { child, dir }, sock)
}

async fn ready(q: &Qemu, sock: &Path) -> (GuestClient, Duration) {
    let t0 = Instant::now();
    match GuestClient::connect(sock, Duration::from_secs(90)).await {
        Ok(c) => (c, t0.elapsed()),
        Err(e) => panic!("guest not ready: {e}\nconsole:\n{}", q.console()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_and_drive_the_guest_agent() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    let t_build = Instant::now();
    let img = tokio::task::spawn_blocking(image).await.unwrap();
    eprintln!(
        "image ready in {:?} ({})",
        t_build.elapsed(),
        img.kernel_format
    );
    assert!(img.kernel.path.exists() && img.initrd.path.exists() && img.rootfs.path.exists());

    let start = Instant::now();
    let (mut q, sock) = boot(&img);
    let (client, _) = ready(&q, &sock).await;
    let boot_to_ready = start.elapsed();
    let hello = client.hello().unwrap();
    eprintln!(
        "boot-to-ready {boot_to_ready:?} (guest uptime {} ms, accel tcg)",
        hello.uptime_ms
    );
    assert_eq!(hello.agent_version, img.agent_version);

    client.ping().await.unwrap();
    let out = client
        .exec(ExecRequest::new(["echo", "hi"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.stdout, "hi\n");

    // Commands as the workspace user, in /home/user.
    let mut req = ExecRequest::new(["sh", "-c", "id -u; pwd; echo $HOME"]);
    req.user = Some("user".into());
    let out = client.exec(req).await.unwrap().collect().await.unwrap();
    assert_eq!(out.stdout, "1000\n/home/user\n/home/user\n", "{out:?}");

    client
        .write_file(
            "notes/hello.txt",
            Bytes::from_static(b"hello from the host\n"),
        )
        .await
        .unwrap();
    let back = client
        .read_file("/home/user/notes/hello.txt")
        .await
        .unwrap();
    assert_eq!(&back[..], b"hello from the host\n");
    let st = client.stat("notes/hello.txt").await.unwrap();
    assert_eq!(st.kind, FileKind::File);
    let mut req = ExecRequest::new([
        "sh",
        "-c",
        "stat -c '%u %U' /home/user /home/user/notes/hello.txt; cat notes/hello.txt",
    ]);
    req.user = Some("user".into());
    let out = client.exec(req).await.unwrap().collect().await.unwrap();
    assert_eq!(
        out.stdout, "1000 user\n1000 user\nhello from the host\n",
        "{out:?}"
    );

    if img.rootfs_contents.iter().any(|c| c == "git") {
        let mut req = ExecRequest::new([
            "sh",
            "-c",
            "git init -q repo && cd repo && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x && git log --format=%s",
        ]);
        req.user = Some("user".into());
        let out = client.exec(req).await.unwrap().collect().await.unwrap();
        assert_eq!(out.stdout, "x\n", "{out:?}");
    }

    let u = client.usage().await.unwrap();
    assert!(u.mem_total_bytes > 100 << 20, "{u:?}");
    assert!(u.disk_total_bytes > 0, "{u:?}");

    client
        .restored(&[7u8; 64], SystemTime::now(), Some("forked-1"))
        .await
        .unwrap();
    let out = client
        .exec(ExecRequest::new(["hostname"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.stdout, "forked-1\n");

    client.shutdown(true).await.unwrap();
    let t = Instant::now();
    loop {
        if let Some(st) = q.child.try_wait().unwrap() {
            eprintln!("qemu exited with {st} after poweroff");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "qemu did not exit after poweroff"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let samples: usize = std::env::var("GODEL_BOOT_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if samples > 0 {
        let mut times = Vec::new();
        for _ in 0..samples {
            let start = Instant::now();
            let (q, sock) = boot(&img);
            let (c, _) = ready(&q, &sock).await;
            times.push(start.elapsed());
            c.shutdown(true).await.unwrap();
            drop(q);
        }
        times.sort();
        eprintln!(
            "boot-to-ready over {samples} boots: median {:?}, all {times:?}",
            times[samples / 2]
        );
    }
}

/// A minimal QMP conversation: one command, its answer (events skipped).
fn qmp(
    conn: &mut (
        std::io::BufReader<std::os::unix::net::UnixStream>,
        std::os::unix::net::UnixStream,
    ),
    cmd: &str,
) -> serde_json::Value {
    use std::io::{BufRead, Write};
    conn.1.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    loop {
        let mut line = String::new();
        assert!(conn.0.read_line(&mut line).unwrap() > 0, "QMP closed");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("event").is_none() {
            return v;
        }
    }
}

fn qmp_connect(
    path: &Path,
) -> (
    std::io::BufReader<std::os::unix::net::UnixStream>,
    std::os::unix::net::UnixStream,
) {
    use std::io::BufRead;
    let t = Instant::now();
    let s = loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(30), "QMP socket: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut conn = (std::io::BufReader::new(s.try_clone().unwrap()), s);
    let mut greeting = String::new();
    conn.0.read_line(&mut greeting).unwrap();
    let r = qmp(&mut conn, r#"{"execute":"qmp_capabilities"}"#);
    assert!(r.get("return").is_some(), "{r}");
    conn
}

/// Snapshot a running guest (QMP stop + migrate to a file), restore it in a
/// new QEMU (new chardev socket, same guest fd) and check that the host can
/// sync again, that files and the boot survive, and that `restored` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restore_resyncs_the_agent() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    let img = tokio::task::spawn_blocking(image).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let overlay = work.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&img.rootfs.path)
        .arg(&overlay)
        .status();
    assert!(st.is_ok_and(|s| s.success()), "qemu-img create");
    let drive = format!(
        "file={},format=qcow2,if=none,id=d0,cache=unsafe",
        overlay.display()
    );
    let state = work.path().join("vm.state");
    let src_dir = tempfile::tempdir().unwrap();
    let qmp_sock = src_dir.path().join("qmp.sock");
    let extra = vec![
        "-qmp".to_owned(),
        format!("unix:{},server=on,wait=off", qmp_sock.display()),
        "-global".to_owned(),
        "migration.store-global-state=off".to_owned(),
    ];
    let (mut q, sock) = boot_with(&img, src_dir, &drive, &extra);
    let (client, _) = ready(&q, &sock).await;
    let boot_id = client.hello().unwrap().boot_id;
    client
        .write_file(
            "before.txt",
            Bytes::from_static(b"written before the snapshot"),
        )
        .await
        .unwrap();
    client
        .exec(ExecRequest::new(["sync"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    // Save: the host client stays connected (the harder case for the guest).
    let state2 = state.clone();
    let qmp_sock2 = qmp_sock.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = qmp_connect(&qmp_sock2);
        qmp(&mut conn, r#"{"execute":"stop"}"#);
        let cmd = serde_json::json!({"execute":"migrate","arguments":{"uri": format!("exec:cat > {}", state2.display())}});
        let r = qmp(&mut conn, &cmd.to_string());
        assert!(r.get("return").is_some(), "{r}");
        loop {
            let r = qmp(&mut conn, r#"{"execute":"query-migrate"}"#);
            match r["return"]["status"].as_str() {
                Some("completed") => break,
                Some("failed") | Some("cancelled") => panic!("migration failed: {r}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // QEMU may close the socket before answering `quit`: send it and
        // read until QEMU hangs up, ignoring errors.
        use std::io::{Read, Write};
        let _ = conn.1.write_all(b"{\"execute\":\"quit\"}\n");
        let _ = conn.1.set_read_timeout(Some(Duration::from_secs(30)));
        let mut sink = Vec::new();
        let _ = conn.0.read_to_end(&mut sink);
    })
    .await
    .unwrap();
    let t = Instant::now();
    while q.child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "source QEMU did not quit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    drop(q);

    // Restore into a new QEMU with a new agent socket.
    let dst_dir = tempfile::tempdir().unwrap();
    let mut extra = vec![
        "-global".to_owned(),
        "migration.store-global-state=off".to_owned(),
    ];
    extra.push("-incoming".to_owned());
    extra.push(format!("exec:cat {}", state.display()));
    let t0 = Instant::now();
    let (q2, sock2) = boot_with(&img, dst_dir, &drive, &extra);
    let (c2, _) = ready(&q2, &sock2).await;
    eprintln!("restore-to-ready {:?}", t0.elapsed());
    assert_eq!(
        c2.hello().unwrap().boot_id,
        boot_id,
        "same boot after restore"
    );
    assert_eq!(
        &c2.read_file("before.txt").await.unwrap()[..],
        b"written before the snapshot"
    );
    c2.restored(&[9u8; 32], SystemTime::now(), Some("restored-1"))
        .await
        .unwrap();
    let out = c2
        .exec(ExecRequest::new(["hostname"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.stdout, "restored-1\n");
    assert_eq!(
        c2.hello().map(|h| h.restores),
        Some(0),
        "hello is from the sync, before restored"
    );
    let h = c2.sync(Duration::from_secs(10)).await.unwrap();
    assert_eq!(h.restores, 1);
    c2.shutdown(true).await.unwrap();
}
