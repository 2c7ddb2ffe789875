//! Reaching a port inside a sandbox from the daemon without opening a host
//! port: a TCP socket is created *inside* the sandbox's network namespace
//! (a short-lived thread `setns`es into `/proc/<init>/ns/net`, calls
//! `socket()` and exits; a socket belongs to the namespace it was created
//! in for its whole life) and then connected, non-blocking, from the
//! daemon's runtime to `127.0.0.1:<port>`, the sandbox's own loopback.
//! Nothing else of the thread or the daemon changes namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};

use godel_core::{Error, ErrorCode, Result};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP socket created in the network namespace of process `pid`.
fn socket_in(pid: u32) -> std::io::Result<OwnedFd> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::Builder::new()
        .name("godel-netns".into())
        .spawn(move || -> std::io::Result<OwnedFd> {
            // This thread is ours alone and ends right after: changing its
            // network namespace affects nothing else.
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(std::io::Error::from)
        })?
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Connect to `127.0.0.1:port` inside the network namespace of `pid`.
pub async fn connect_in_netns(pid: u32, port: u16, id: &str) -> Result<TcpStream> {
    let fd = tokio::task::spawn_blocking(move || socket_in(pid))
        .await
        .map_err(|e| Error::internal(format!("namespace socket task: {e}")))?
        .map_err(|e| Error::io(format!("open a socket in sandbox {id}'s network"), &e))?;
    // SAFETY: `fd` is a freshly created, owned TCP socket; ownership moves
    // into the std stream (and from there into tokio's socket).
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
    let sock = TcpSocket::from_std_stream(std_stream);
    connect(sock, port, id).await
}

/// Connect to `127.0.0.1:port` on the host (sandboxes without isolation).
pub async fn connect_host(port: u16, id: &str) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4().map_err(|e| Error::io("open a socket", &e))?;
    connect(sock, port, id).await
}

async fn connect(sock: TcpSocket, port: u16, id: &str) -> Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = sock.connect(addr).await.map_err(|e| closed(id, port, &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The error of a port nothing listens on (or that cannot be reached).
pub fn closed(id: &str, port: u16, e: &std::io::Error) -> Error {
    let why = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        "nothing listens on it".to_string()
    } else {
        e.to_string()
    };
    Error::new(
        ErrorCode::Unavailable,
        format!("port {port} of sandbox {id} is not open: {why}"),
    )
    .with_runtime(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_namespace_connects_and_closed_port_says_so() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let s = connect_in_netns(std::process::id(), port, "rt-x")
            .await
            .unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
        drop(l);
        let e = connect_host(port, "rt-x").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("is not open"), "{}", e.message);
    }
}
