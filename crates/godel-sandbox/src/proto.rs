//! The control protocol between the daemon and a sandbox's init.
//!
//! 1. The init listens on a `SOCK_SEQPACKET` Unix socket (`<run_dir>/<id>/ctl.sock`,
//!    mode 0600, bound on the host before the namespaces were made, so only
//!    host root can connect; agents never see the path).
//! 2. One connection carries one request. `Exec` arrives with file
//!    descriptors as `SCM_RIGHTS`: a status socket (a `SOCK_SEQPACKET`
//!    socketpair end), then stdin only when asked for, stdout and stderr.
//! 3. The forked child sends `Pid` on the status socket before it executes:
//!    the daemon reads the sender's pid from `SCM_CREDENTIALS`, which the
//!    kernel translates into the daemon's PID namespace (the host pid). A
//!    failure follows as 5 bytes `[stage, errno]`; the socket closing without
//!    one means the exec succeeded (it is close-on-exec).
//! 4. The init later sends `Exit` on the connection; the daemon may send
//!    `Kill` on it at any time (the init signals the whole process group).
//!    Messages are JSON, one per datagram.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

/// Largest message either side sends.
pub const MAX_MSG: usize = 256 * 1024;

/// A request from the daemon to an init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with `Pong`.
    Ping,
    /// Start a process; stdio fds ride along.
    Exec {
        argv: Vec<String>,
        /// Complete environment, already merged by the daemon.
        env: Vec<(String, String)>,
        /// Absolute working directory inside the sandbox.
        cwd: String,
        /// Whether a stdin fd is attached (otherwise `/dev/null`).
        stdin: bool,
    },
    /// Signal the process group of this connection's process.
    Kill { sig: i32 },
    /// Hand a jail made ahead (a warm-pool jail, see [`crate::pool`]) to one
    /// sandbox: the workspace mount rides along as a detached mount fd
    /// (`open_tree(OPEN_TREE_CLONE)`, idmapped by the daemon) and is attached
    /// at `/home/user`; the hostname and the size of `/tmp` are set. Answered
    /// with `Claimed` or `Failed`. An init refuses `Exec` until claimed and
    /// refuses a second `Claim`.
    Claim { hostname: String, tmp_bytes: u64 },
}

/// A message from an init (or its freshly forked child) to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        pid: i32,
    },
    /// Sent by the child itself on the status socket; its host pid is in the credentials.
    Pid,
    /// The process ended.
    Exit {
        code: i32,
        signal: Option<i32>,
    },
    /// The jail now belongs to the sandbox that claimed it.
    Claimed,
    /// A request could not be carried out (e.g. `Claim` twice).
    Failed {
        message: String,
    },
}

/// Send one JSON message with optional fds.
pub fn send_msg<T: Serialize>(sock: RawFd, msg: &T, fds: &[RawFd]) -> std::io::Result<()> {
    let data = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let iov = [IoSlice::new(&data)];
    let rights;
    let cmsgs: &[ControlMessage] = if fds.is_empty() {
        &[]
    } else {
        rights = [ControlMessage::ScmRights(fds)];
        &rights
    };
    loop {
        match sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One received message: its bytes, fds and the sender's credentials (if the
/// socket has `SO_PASSCRED`). `None` when the peer closed the connection.
pub struct Received {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub creds: Option<UnixCredentials>,
}

/// Receive one message (blocking or not, as the socket is).
pub fn recv_msg(sock: RawFd, flags: MsgFlags) -> std::io::Result<Option<Received>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut cmsg = nix::cmsg_space!([RawFd; 4], UnixCredentials);
    let (bytes, fds, creds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock,
            &mut iov,
            Some(&mut cmsg),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                let mut creds = None;
                for c in msg.cmsgs()? {
                    match c {
                        ControlMessageOwned::ScmRights(raw) => {
                            for fd in raw {
                                // SAFETY: the kernel just installed this fd in our
                                // table for us; nothing else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                        ControlMessageOwned::ScmCredentials(c) => creds = Some(c),
                        _ => {}
                    }
                }
                break (msg.bytes, fds, creds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if bytes == 0 {
        return Ok(None);
    }
    buf.truncate(bytes);
    Ok(Some(Received {
        data: buf,
        fds,
        creds,
    }))
}

/// Parse a received message.
pub fn parse<T: for<'de> Deserialize<'de>>(data: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A new `SOCK_SEQPACKET` Unix socket (close-on-exec).
pub fn seqpacket_socket() -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Connect to an init's control socket, with `SO_PASSCRED` on.
pub fn connect(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{UnixAddr, setsockopt, sockopt};
    let fd = seqpacket_socket()?;
    setsockopt(&fd, sockopt::PassCred, &true)?;
    let addr = UnixAddr::new(path)?;
    loop {
        match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(fd),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};

    #[test]
    fn messages_round_trip_with_fds_and_credentials() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        setsockopt(&b, sockopt::PassCred, &true).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let req = Request::Exec {
            argv: vec!["true".into()],
            env: vec![("A".into(), "b".into())],
            cwd: "/home/user".into(),
            stdin: false,
        };
        send_msg(a.as_raw_fd(), &req, &[w.as_raw_fd()]).unwrap();
        let got = recv_msg(b.as_raw_fd(), MsgFlags::empty()).unwrap().unwrap();
        assert_eq!(parse::<Request>(&got.data).unwrap(), req);
        assert_eq!(got.fds.len(), 1);
        assert_eq!(got.creds.unwrap().pid(), std::process::id() as i32);
        // The passed fd is the same pipe.
        nix::unistd::write(&got.fds[0], b"x").unwrap();
        let mut buf = [0u8; 1];
        nix::unistd::read(&r, &mut buf).unwrap();
        assert_eq!(&buf, b"x");
        drop(a);
        assert!(
            recv_msg(b.as_raw_fd(), MsgFlags::empty())
                .unwrap()
                .is_none()
        );
    }
}
