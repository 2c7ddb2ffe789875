//! Reaching a port inside a sandbox from the daemon without opening a host
//! port: a TCP socket is created *inside* the sandbox's network namespace
//! (a socket belongs to the namespace it was created in for its whole life)
//! and then connected, non-blocking, from the daemon's runtime to
//! `127.0.0.1:<port>`, the sandbox's own loopback.
//!
//! Sockets are made by one worker thread of our own: per request it
//! `setns`es into `/proc/<init>/ns/net`, calls `socket()` and `setns`es back
//! into the daemon's namespace (a few microseconds, no thread per
//! connection). Should it ever fail to get back, it stops and the next
//! request starts a fresh worker; no other thread changes namespace.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;

use godel_core::{Error, ErrorCode, Result};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use parking_lot::Mutex;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

struct Job {
    pid: u32,
    reply: oneshot::Sender<std::io::Result<OwnedFd>>,
}

static WORKER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Start the worker; it remembers the namespace of the thread starting it.
fn start_worker() -> std::io::Result<mpsc::Sender<Job>> {
    let home = File::open("/proc/thread-self/ns/net")?;
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("godel-netns".into())
        .spawn(move || {
            for job in rx {
                let (made, back) = make(job.pid, &home);
                let _ = job.reply.send(made);
                if !back {
                    // Stuck in a sandbox's namespace: stop; the next request
                    // starts a new worker.
                    return;
                }
            }
        })?;
    Ok(tx)
}

/// One socket in `pid`'s namespace; whether the thread got back home.
fn make(pid: u32, home: &File) -> (std::io::Result<OwnedFd>, bool) {
    let ns = match File::open(format!("/proc/{pid}/ns/net")) {
        Ok(f) => f,
        Err(e) => return (Err(e), true),
    };
    if let Err(e) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
        return (Err(e.into()), true);
    }
    let made = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from);
    let back = setns(home.as_fd(), CloneFlags::CLONE_NEWNET).is_ok();
    (made, back)
}

/// A TCP socket (non-blocking, unconnected) created in the network
/// namespace of process `pid`.
pub async fn socket_in_netns(pid: u32) -> std::io::Result<OwnedFd> {
    for _ in 0..2 {
        let (reply, rx) = oneshot::channel();
        let sent = {
            let mut w = WORKER.lock();
            if w.is_none() {
                *w = Some(start_worker()?);
            }
            let ok = w
                .as_ref()
                .is_some_and(|tx| tx.send(Job { pid, reply }).is_ok());
            if !ok {
                *w = None;
            }
            ok
        };
        if sent && let Ok(r) = rx.await {
            return r;
        }
    }
    Err(std::io::Error::other("the namespace worker stopped"))
}

/// Connect to `127.0.0.1:port` inside the network namespace of `pid`.
pub async fn connect_in_netns(pid: u32, port: u16, id: &str) -> Result<TcpStream> {
    let fd = socket_in_netns(pid)
        .await
        .map_err(|e| Error::io(format!("open a socket in sandbox {id}'s network"), &e))?;
    let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
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
