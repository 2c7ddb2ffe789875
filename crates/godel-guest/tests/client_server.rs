//! The host client against the guest server logic, over a real Unix
//! socketpair, with a temporary directory standing for the guest's `/`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{ErrorCode, ExecEvent, ExecRequest, FileKind};
use godel_guest::protocol::{Frame, FrameDecoder, Message};
use godel_guest::{GuestClient, Server, ServerConfig};

struct Guest {
    client: GuestClient,
    root: tempfile::TempDir,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

fn guest_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("home/user")).unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/hostname"), "guest\n").unwrap();
    root
}

fn start_server(
    root: &std::path::Path,
    junk: &[u8],
) -> (
    std::os::unix::net::UnixStream,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let (host, mut guest) = std::os::unix::net::UnixStream::pair().unwrap();
    guest.write_all(junk).unwrap();
    let server = Server::new(ServerConfig::rooted(root));
    let thread = std::thread::spawn(move || {
        let w = guest.try_clone()?;
        server.serve(guest, w)
    });
    (host, thread)
}

async fn guest() -> Guest {
    let root = guest_root();
    let (host, thread) = start_server(root.path(), b"READY up=0.5\nGDL");
    host.set_nonblocking(true).unwrap();
    let s = tokio::net::UnixStream::from_std(host).unwrap();
    let client = GuestClient::from_stream(s, Duration::from_secs(10))
        .await
        .unwrap();
    Guest {
        client,
        root,
        thread,
    }
}

#[tokio::test]
async fn sync_ping_and_hello() {
    let g = guest().await;
    let hello = g.client.hello().unwrap();
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.hostname, "guest");
    g.client.ping().await.unwrap();
    g.client.ping().await.unwrap();
}

#[tokio::test]
async fn exec_collects_output_and_status() {
    let g = guest().await;
    let out = g
        .client
        .exec(ExecRequest::new(["echo", "hi"]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(out.exit_code, 0);

    let mut req = ExecRequest::new(["sh", "-c", "pwd; echo err >&2; echo $FOO; exit 3"]);
    req.env.insert("FOO".into(), "bar".into());
    let out = g.client.exec(req).await.unwrap().collect().await.unwrap();
    let ws = g.root.path().join("home/user");
    assert_eq!(out.stdout, format!("{}\nbar\n", ws.display()));
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.exit_code, 3);
}

#[tokio::test]
async fn exec_stdin_buffered_and_interactive() {
    let g = guest().await;
    let mut req = ExecRequest::new(["cat"]);
    req.stdin = Some("abc".into());
    let out = g.client.exec(req).await.unwrap().collect().await.unwrap();
    assert_eq!(out.stdout, "abc");

    let mut req = ExecRequest::new(["cat"]);
    req.interactive = true;
    let mut h = g.client.exec(req).await.unwrap();
    assert!(matches!(
        h.events.next().await,
        Some(ExecEvent::Started { .. })
    ));
    let stdin = h.stdin.take().unwrap();
    stdin.send(Bytes::from_static(b"line one\n")).await.unwrap();
    match h.events.next().await {
        Some(ExecEvent::Stdout { data }) => assert_eq!(&data[..], b"line one\n"),
        other => panic!("expected output, got {other:?}"),
    }
    drop(stdin);
    let out = h.collect().await.unwrap();
    assert_eq!(out.exit_code, 0);
}

#[tokio::test]
async fn exec_timeout_signal_and_missing_command() {
    let g = guest().await;
    let mut req = ExecRequest::new(["sleep", "30"]);
    req.timeout_ms = Some(200);
    let err = g
        .client
        .exec(req)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);

    let mut h = g
        .client
        .exec(ExecRequest::new(["sleep", "30"]))
        .await
        .unwrap();
    h.signal
        .as_ref()
        .unwrap()
        .send(libc::SIGTERM)
        .await
        .unwrap();
    let mut status = None;
    while let Some(ev) = h.events.next().await {
        if let ExecEvent::Exit(st) = ev {
            status = Some(st);
        }
    }
    let st = status.unwrap();
    assert_eq!(st.signal, Some(libc::SIGTERM));
    assert_eq!(st.code, 128 + libc::SIGTERM);

    let err = g
        .client
        .exec(ExecRequest::new(["no-such-command-xyz"]))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn exec_output_larger_than_the_window_flows() {
    let g = guest().await;
    let out = g
        .client
        .exec(ExecRequest::new([
            "sh",
            "-c",
            "head -c 20000000 /dev/zero | tr '\\0' a",
        ]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 20_000_000);
    assert_eq!(out.exit_code, 0);
}

#[tokio::test]
async fn large_file_round_trip() {
    let g = guest().await;
    let data: Vec<u8> = (0..50u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let data = Bytes::from(data);
    g.client
        .write_file("big/dir/file.bin", data.clone())
        .await
        .unwrap();
    let on_disk = std::fs::read(g.root.path().join("home/user/big/dir/file.bin")).unwrap();
    assert!(on_disk == data[..]);
    let back = g
        .client
        .read_file("/home/user/big/dir/file.bin")
        .await
        .unwrap();
    assert!(back == data);
}

#[tokio::test]
async fn file_operations_and_error_codes() {
    let g = guest().await;
    let c = &g.client;
    c.write_file("a.txt", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    c.make_dir("d/e").await.unwrap();
    c.make_dir("d/e").await.unwrap();
    let st = c.stat("a.txt").await.unwrap();
    assert_eq!(st.kind, FileKind::File);
    assert_eq!(st.size, 5);
    assert_eq!(st.path, "a.txt");
    let names: Vec<String> = c
        .list_dir("")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a.txt", "d"]);
    c.rename("a.txt", "d/b.txt").await.unwrap();
    assert_eq!(&c.read_file("d/b.txt").await.unwrap()[..], b"hello");
    assert_eq!(c.stat("a.txt").await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(
        c.read_file("nope").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.read_file("d").await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        c.remove("d", false).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    c.remove("d", true).await.unwrap();
    assert_eq!(c.list_dir("d").await.unwrap_err().code, ErrorCode::NotFound);
    // Absolute paths address the guest's whole file system.
    assert_eq!(&c.read_file("/etc/hostname").await.unwrap()[..], b"guest\n");
    // `..` never leaves the guest root.
    assert_eq!(
        &c.read_file("/../../etc/hostname").await.unwrap()[..],
        b"guest\n"
    );
}

#[tokio::test]
async fn tar_upload_and_download() {
    let g = guest().await;
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in [("x/one.txt", "1"), ("x/sub/two.txt", "22")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    let tar = Bytes::from(b.into_inner().unwrap());
    g.client.upload_tar("up", tar).await.unwrap();
    let ws = g.root.path().join("home/user");
    assert_eq!(
        std::fs::read_to_string(ws.join("up/x/sub/two.txt")).unwrap(),
        "22"
    );

    let back = g.client.download_tar("up").await.unwrap();
    let mut ar = tar::Archive::new(&back[..]);
    let mut names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.iter().any(|n| n.ends_with("x/sub/two.txt")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("x/one.txt")), "{names:?}");
}

#[tokio::test]
async fn usage_restored_and_shutdown() {
    let g = guest().await;
    let u = g.client.usage().await.unwrap();
    assert!(u.mem_total_bytes > 0);
    assert!(u.cpu_count > 0);
    assert!(u.disk_total_bytes > 0);
    g.client
        .restored(&[1, 2, 3, 4], SystemTime::now(), Some("clone-7"))
        .await
        .unwrap();
    let hello = g.client.sync(Duration::from_secs(5)).await.unwrap();
    assert_eq!(hello.hostname, "clone-7");
    assert_eq!(hello.restores, 1);
    let err = g
        .client
        .restored(&[], SystemTime::now(), Some("bad name!"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    g.client.shutdown(true).await.unwrap();
    g.thread.join().unwrap().unwrap();
}

#[tokio::test]
async fn concurrent_requests_are_multiplexed() {
    let g = guest().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = g.client.clone();
        tasks.push(tokio::spawn(async move {
            let p = format!("f{i}");
            c.write_file(&p, Bytes::from(vec![i as u8; 300_000]))
                .await
                .unwrap();
            let out = c
                .exec(ExecRequest::new(["sh", "-c", &format!("echo {i}")]))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(out.stdout, format!("{i}\n"));
            assert_eq!(c.read_file(&p).await.unwrap().len(), 300_000);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A raw host: a corrupted frame and a truncated one do not stop the guest
/// from answering the next good frame.
#[test]
fn server_survives_corrupted_and_truncated_frames() {
    use std::io::Read;
    let root = guest_root();
    let (mut host, thread) = start_server(root.path(), b"");
    let mut bad = Frame::new(5, Message::Ping { nonce: 5 }).encode().unwrap();
    let n = bad.len();
    bad[n - 3] ^= 0x20;
    host.write_all(&bad).unwrap();
    let good = Frame::new(6, Message::Ping { nonce: 6 }).encode().unwrap();
    host.write_all(&good[..good.len() / 2]).unwrap(); // truncated
    for i in 100..164 {
        host.write_all(&Frame::new(7, Message::Ping { nonce: i }).encode().unwrap())
            .unwrap();
    }
    let mut dec = FrameDecoder::new();
    let mut pongs = Vec::new();
    let mut buf = [0u8; 4096];
    while !pongs.contains(&163) {
        let n = host.read(&mut buf).unwrap();
        assert!(n > 0, "guest closed the channel");
        dec.feed(&buf[..n]);
        while let Some(r) = dec.next_frame() {
            match r.unwrap().msg {
                Message::Pong { nonce } => pongs.push(nonce),
                Message::Hello(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(
        !pongs.contains(&5),
        "the corrupted ping must not be answered"
    );
    drop(host);
    thread.join().unwrap().unwrap();
}

/// The tail of a frame that never comes (a restore cut the old host off
/// mid-write) must not swallow the new host's sync.
#[tokio::test]
async fn a_partial_frame_never_completed_does_not_block_the_sync() {
    let root = guest_root();
    let (mut host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = Server::new(ServerConfig::rooted(root.path()));
    let thread = std::thread::spawn(move || {
        let w = guest.try_clone()?;
        server.serve(guest, w)
    });
    let big = Frame::with_data(9, Message::Data, vec![1u8; 900_000])
        .encode()
        .unwrap();
    host.write_all(&big[..1000]).unwrap();
    host.set_nonblocking(true).unwrap();
    let s = tokio::net::UnixStream::from_std(host).unwrap();
    let client = GuestClient::from_stream(s, Duration::from_secs(30))
        .await
        .unwrap();
    client.ping().await.unwrap();
    drop(client);
    // Join off the runtime so the client's aborted tasks can close the socket.
    tokio::task::spawn_blocking(move || thread.join().unwrap().unwrap())
        .await
        .unwrap();
}
