//! A sandbox port reached through the runtime's interactive exec (the way
//! in of runtimes without a network namespace the daemon can enter, such as
//! microVMs): the bridge really runs (here through godel-testkit's
//! `FakeRuntime`, whose commands are host processes) and the stream carries
//! an HTTP exchange both ways; a closed port is `UNAVAILABLE`.

use godel_core::port_exec::via_exec;
use godel_core::{ErrorCode, RuntimeProvider, SpawnSpec};
use godel_testkit::FakeRuntime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_exec_bridge_carries_bytes_both_ways() {
    let fake = FakeRuntime::new("microvm");
    fake.spawn("rt-bridge", &SpawnSpec::default())
        .await
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = vec![0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(b"pong:").await.unwrap();
        s.write_all(&got).await.unwrap();
        // Reads to the end: the client's shutdown reaches the server.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let mut st = via_exec(&fake, "rt-bridge", port).await.unwrap();
    st.write_all(b"hello").await.unwrap();
    let mut back = vec![0u8; 10];
    st.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pong:hello");
    st.write_all(&[7u8; 100_000]).await.unwrap();
    st.shutdown().await.unwrap();
    let rest = server.await.unwrap();
    assert_eq!(rest.len(), 100_000);
    let mut end = Vec::new();
    st.read_to_end(&mut end).await.unwrap();
    assert!(end.is_empty());

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = match via_exec(&fake, "rt-bridge", closed).await {
        Err(e) => e,
        Ok(_) => panic!("a closed port connected"),
    };
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(e.message.contains("is not open"), "{e}");
}
