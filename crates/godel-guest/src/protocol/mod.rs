//! The host↔guest protocol: framed, multiplexed messages over one byte
//! channel (a virtio-serial port named `agent` in the guest, a Unix socket
//! chardev on the host).
//!
//! How a conversation goes:
//! 1. The host connects and sends `Sync{nonce}` on stream 0, repeating it
//!    every [`SYNC_INTERVAL_MS`] until the guest answers `SyncAck{nonce, hello}`.
//!    Bytes before the matching ack are ignored. This covers the port not yet
//!    being open (bytes lost), leftovers of an earlier connection, and a
//!    snapshot restore (new host socket, same guest fd).
//! 2. The guest also announces itself with `Hello` whenever the host side
//!    (re)connects; a host may treat it as a hint to sync.
//! 3. Every request opens a new stream id chosen by the host (non-zero); all
//!    replies and data for it carry the same id. Streams end with one of
//!    `Ok`, `Exit`, `End`, a typed reply, or `Error`.
//! 4. Bulk bytes (file contents, tar archives, output, stdin) travel in the
//!    frame payload, in chunks of at most [`frame::CHUNK`]; host→guest bulk
//!    ends with `End`. Guest→host bulk is flow controlled: the guest sends at
//!    most [`WINDOW`] unacknowledged payload bytes per stream and the host
//!    returns `Credit{bytes}` as it consumes them.
//! 5. Errors are `godel_core::Error` values (stable codes) on the stream.

pub mod frame;

use std::collections::BTreeMap;

use godel_core::{Error, ExitStatus, FileEntry};
use serde::{Deserialize, Serialize};

pub use frame::{CHUNK, Frame, FrameDecoder, FrameError, MAX_DATA, MAX_JSON};

/// How often the host repeats `Sync` until acknowledged.
pub const SYNC_INTERVAL_MS: u64 = 200;
/// Unacknowledged guest→host payload bytes allowed per stream.
pub const WINDOW: u64 = 4 << 20;
/// The control stream.
pub const CONTROL: u32 = 0;
/// The guest agent version (this crate's version).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who the guest is and how long it has been up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub agent_version: String,
    pub protocol: u8,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    pub uptime_ms: u64,
    pub hostname: String,
    /// How many `Restored` messages this boot has processed.
    #[serde(default)]
    pub restores: u64,
}

/// A command to start in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStart {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; relative paths are relative to `/home/user`.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run as this user (name from the guest's `/etc/passwd`); `None` = the agent's user (root).
    #[serde(default)]
    pub user: Option<String>,
    /// Give the command a stdin pipe fed by `Stdin` frames (closed by `StdinClose`);
    /// otherwise stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
}

/// Resource usage as the guest sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestUsage {
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    /// total − available.
    pub mem_used_bytes: u64,
    /// CPU time spent in non-idle states since boot, seconds (all CPUs).
    pub cpu_busy_seconds: f64,
    pub cpu_count: u32,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    /// The workspace file system.
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub processes: u64,
    pub uptime_ms: u64,
}

impl GuestUsage {
    /// The godel-core view of this report.
    pub fn to_resource_usage(&self) -> godel_core::ResourceUsage {
        godel_core::ResourceUsage {
            cpu_seconds: self.cpu_busy_seconds,
            memory_bytes: self.mem_used_bytes,
            memory_peak_bytes: self.mem_used_bytes,
            pids: self.processes,
            disk_bytes: self.disk_used_bytes,
            ..Default::default()
        }
    }
}

/// Every message of the protocol. The JSON form is `{"op": "<snake_case>", ...}`.
/// Messages marked "payload" carry their bytes in the frame payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Message {
    // ---- control (stream 0) ----
    /// host → guest: please acknowledge with this nonce.
    Sync {
        nonce: u64,
    },
    /// guest → host.
    SyncAck {
        nonce: u64,
        hello: Hello,
    },
    /// guest → host, unsolicited on every (re)connect.
    Hello(Hello),

    // ---- requests (host → guest, each on a new stream) ----
    Ping {
        nonce: u64,
    },
    Exec(ExecStart),
    /// Read a whole file; answered by `Data` chunks then `End`.
    ReadFile {
        path: String,
    },
    /// Write a file (parents created): followed by `Data` chunks and `End`; answered by `Ok`.
    WriteFile {
        path: String,
        #[serde(default)]
        mode: Option<u32>,
    },
    ListDir {
        path: String,
    },
    Stat {
        path: String,
    },
    MakeDir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    /// Unpack a tar into a directory: followed by `Data` chunks and `End`; answered by `Ok`.
    TarUpload {
        path: String,
    },
    /// Pack a directory or file: answered by `Data` chunks then `End`.
    TarDownload {
        path: String,
    },
    Usage,
    /// The VM was restored from a snapshot. Payload: entropy to mix into the RNG.
    Restored {
        /// Host wall-clock time to step the guest clock to.
        unix_ns: u64,
        #[serde(default)]
        hostname: Option<String>,
    },
    /// Sync disks, answer `Ok`, then power off (or reboot).
    Shutdown {
        poweroff: bool,
    },

    // ---- within a stream, either direction ----
    /// Payload: stdin bytes for an exec.
    Stdin,
    StdinClose,
    /// Send a signal to the exec's process group.
    Signal {
        signal: i32,
    },
    /// Abandon the stream (kills an exec).
    Cancel,
    /// Payload: a chunk of bulk data.
    Data,
    /// End of bulk data.
    End {
        bytes: u64,
    },
    /// host → guest: the host consumed this many payload bytes of the stream.
    Credit {
        bytes: u64,
    },

    // ---- replies (guest → host) ----
    Pong {
        nonce: u64,
    },
    Started {
        pid: u32,
    },
    /// Payload: output bytes.
    Stdout,
    /// Payload: output bytes.
    Stderr,
    Exit(ExitStatus),
    Ok,
    Entries {
        entries: Vec<FileEntry>,
    },
    Entry {
        entry: FileEntry,
    },
    UsageReport(GuestUsage),
    Error(Error),
}

impl Message {
    /// Whether this message ends its stream (guest → host direction).
    pub fn is_terminal_reply(&self) -> bool {
        matches!(
            self,
            Message::Pong { .. }
                | Message::Exit(_)
                | Message::Ok
                | Message::Entries { .. }
                | Message::Entry { .. }
                | Message::UsageReport(_)
                | Message::Error(_)
                | Message::End { .. }
        )
    }
}

/// Map an OS error number to a godel error code (ENOENT → NOT_FOUND ...).
pub fn errno_error(context: impl std::fmt::Display, err: &std::io::Error) -> Error {
    use godel_core::ErrorCode as C;
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) => C::NotFound,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => C::PermissionDenied,
        Some(libc::EEXIST | libc::ENOTEMPTY | libc::EBUSY | libc::ETXTBSY) => C::Conflict,
        Some(
            libc::ENOTDIR
            | libc::EISDIR
            | libc::EINVAL
            | libc::ENAMETOOLONG
            | libc::ELOOP
            | libc::EXDEV
            | libc::E2BIG,
        ) => C::InvalidArgument,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE | libc::ENOMEM) => {
            C::ResourceExhausted
        }
        Some(libc::ETIMEDOUT) => C::Timeout,
        Some(_) => C::Internal,
        None => return Error::io(context, err),
    };
    Error::new(code, format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use godel_core::ErrorCode;

    #[test]
    fn wire_names_are_snake_case() {
        let j = serde_json::to_string(&Message::ReadFile { path: "a".into() }).unwrap();
        assert_eq!(j, r#"{"op":"read_file","path":"a"}"#);
        let j = serde_json::to_string(&Message::StdinClose).unwrap();
        assert_eq!(j, r#"{"op":"stdin_close"}"#);
        let m = Message::Exit(ExitStatus {
            code: 1,
            signal: None,
            timed_out: false,
            duration_ms: 3,
        });
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&j).unwrap(), m);
        let m = Message::Error(Error::not_found("x"));
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&j).unwrap(), m);
    }

    #[test]
    fn errno_mapping() {
        let e = |n| errno_error("op", &std::io::Error::from_raw_os_error(n)).code;
        assert_eq!(e(libc::ENOENT), ErrorCode::NotFound);
        assert_eq!(e(libc::EACCES), ErrorCode::PermissionDenied);
        assert_eq!(e(libc::EEXIST), ErrorCode::Conflict);
        assert_eq!(e(libc::ENOTEMPTY), ErrorCode::Conflict);
        assert_eq!(e(libc::ENOTDIR), ErrorCode::InvalidArgument);
        assert_eq!(e(libc::ENOSPC), ErrorCode::ResourceExhausted);
        assert_eq!(e(libc::EIO), ErrorCode::Internal);
    }
}
