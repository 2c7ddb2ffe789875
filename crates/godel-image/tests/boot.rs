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

fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn image() -> ImageInfo {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("godel-image-test-home");
    let opts = ImageOptions {
        godel_home: Some(home),
        rebuild_guest: true,
        ..Default::default()
    };
    build_image(opts, &|p| eprintln!("[image] {}: {}", p.step, p.message)).expect("image build")
}

fn boot(img: &ImageInfo) -> (Qemu, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
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
        .arg(format!(
            "file={},format=raw,if=none,id=d0,snapshot=on,cache=unsafe",
            img.rootfs.path.display()
        ))
        .args(["-device", "virtio-blk-device,drive=d0"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
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
    if !have_qemu() {
        eprintln!(
            "qemu-system-x86_64 not installed: skipping (scripts/setup.d/30-microvm.sh installs it)"
        );
        return;
    }
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
