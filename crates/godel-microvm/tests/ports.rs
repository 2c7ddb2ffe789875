//! A port inside a microVM, reached through the guest agent (the VM has no
//! network device): a server started in the guest answers an HTTP request
//! over `connect_port`, and a closed port is `UNAVAILABLE`. Under TCG.

mod common;

use godel_core::{ErrorCode, ExecRequest, RuntimeProvider, SpawnSpec};
use godel_microvm::{Accel, MicrovmConfig, MicrovmProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_port_answers_through_the_agent() {
    godel_testkit::require!(godel_testkit::Need::Qemu);
    tokio::task::spawn_blocking(common::ensure_image)
        .await
        .unwrap();
    let home = common::TestHome::new();
    let cfg = MicrovmConfig::new(home.path()).with_accel(Accel::Tcg);
    let p = MicrovmProvider::new(cfg).unwrap();
    p.spawn("rt-port", &SpawnSpec::default()).await.unwrap();
    // A one-shot HTTP server with the guest's busybox nc: it answers once
    // the request line has arrived.
    let server = concat!(
        "printf '#!/bin/sh\\nread line\\nprintf \"HTTP/1.1 200 OK\\\\r\\\\nContent-Length: 2\\\\r\\\\n\\\\r\\\\nok\"\\n' > /tmp/srv.sh; ",
        "chmod +x /tmp/srv.sh; (nc -l -p 8000 -e /tmp/srv.sh >/dev/null 2>&1 &); sleep 0.5"
    );
    let out = p
        .exec_collect("rt-port", ExecRequest::new(["sh", "-c", server]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let mut s = p.connect_port("rt-port", 8000).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let t = std::time::Instant::now();
    while !got.ends_with(b"ok") && t.elapsed() < std::time::Duration::from_secs(30) {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.ends_with(b"ok"));
    drop(s);
    let e = p.connect_port("rt-port", 8001).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    p.terminate("rt-port").await.unwrap();
}
