//! The agent's side of the protocol: decode frames from the channel, run
//! each request on its own thread, write replies through one shared writer.
//!
//! The same code runs as PID 1 in the VM (`root = /`, `system = true`,
//! `reap_all = true`) and on the host in tests (`root` = a temporary
//! directory standing for the guest's `/`, no clock/hostname/RNG syscalls,
//! children waited for individually).
//!
//! Connection handling:
//! 1. [`Server::serve`] reads one connection until EOF (tests, sockets).
//! 2. [`Server::serve_port`] serves the virtio-serial port forever: on EOF
//!    (host side disconnected: `read` returns 0 while nobody is connected) it
//!    forgets partial input, releases flow-control windows, announces `Hello`
//!    (the write blocks until a host connects) and reads again. That is what
//!    lets a restored snapshot with a new host socket resume.

mod exec;
mod files;
mod system;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use godel_core::{Error, WORKSPACE_MOUNT};
use parking_lot::{Condvar, Mutex};

use crate::protocol::{CONTROL, Frame, FrameDecoder, Message, WINDOW};

pub use exec::Procs;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The directory that stands for the guest's `/`.
    pub root: PathBuf,
    /// Change the real system: clock, hostname, RNG credit, power off.
    pub system: bool,
    /// Reap every child (the agent is PID 1); otherwise wait per child.
    pub reap_all: bool,
}

impl ServerConfig {
    /// For tests and host use: everything under `root`, no system changes.
    pub fn rooted(root: impl Into<PathBuf>) -> Self {
        ServerConfig {
            root: root.into(),
            system: false,
            reap_all: false,
        }
    }
}

/// Per-stream send window for guest→host bulk data.
#[derive(Debug)]
pub(crate) struct Credit {
    avail: Mutex<i64>,
    cv: Condvar,
    released: AtomicBool,
}

impl Credit {
    fn new() -> Arc<Self> {
        Arc::new(Credit {
            avail: Mutex::new(WINDOW as i64),
            cv: Condvar::new(),
            released: AtomicBool::new(false),
        })
    }
    /// Wait until the host has room, then take `n` bytes of window.
    pub(crate) fn take(&self, n: usize) {
        let mut a = self.avail.lock();
        while *a <= 0 && !self.released.load(Ordering::SeqCst) {
            self.cv.wait(&mut a);
        }
        *a -= n as i64;
    }
    fn give(&self, n: u64) {
        *self.avail.lock() += n as i64;
        self.cv.notify_all();
    }
    /// Stop flow control (the host went away or cancelled).
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        let _a = self.avail.lock();
        self.cv.notify_all();
    }
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

/// What the reader thread keeps per open stream.
pub(crate) enum StreamState {
    Exec(exec::ExecStream),
    Write(files::WriteStream),
    Upload(files::UploadStream),
    /// Guest→host bulk (read file, tar download).
    Sending(Arc<Credit>),
    /// A request that already failed; swallow its remaining frames.
    Failed,
}

/// Shared state of a running server.
pub struct Shared {
    pub(crate) cfg: ServerConfig,
    out: Mutex<Option<Box<dyn Write + Send>>>,
    pub(crate) streams: Mutex<HashMap<u32, StreamState>>,
    pub(crate) procs: Procs,
    pub(crate) restores: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Read once at start: `Sync` after a restore is answered without
    /// touching a file (the reply path runs on a cold translation cache
    /// under TCG, so every avoided syscall path counts).
    pub(crate) boot_id: String,
    /// The hostname as last set or read (`None` until first needed).
    pub(crate) hostname: Mutex<Option<String>>,
    /// `/dev/urandom` open for writing (system mode), for the restore reseed.
    pub(crate) urandom: Option<std::fs::File>,
}

impl Shared {
    /// Write one frame; errors (host gone) are logged and dropped.
    pub(crate) fn send(&self, f: &Frame) {
        let buf = match f.encode() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("godel-guest: cannot encode reply: {e}");
                return;
            }
        };
        let mut out = self.out.lock();
        if let Some(w) = out.as_mut()
            && let Err(e) = w.write_all(&buf).and_then(|_| w.flush())
        {
            eprintln!("godel-guest: write to host failed: {e}");
        }
    }

    pub(crate) fn reply(&self, stream: u32, msg: Message) {
        self.send(&Frame::new(stream, msg));
    }

    pub(crate) fn error(&self, stream: u32, e: Error) {
        self.reply(stream, Message::Error(e));
    }

    /// Map a path from the request to the local file system: absolute paths
    /// are under `root`, relative ones under `root/home/user`. `..` never
    /// climbs above `root`.
    pub(crate) fn resolve(&self, p: &str) -> godel_core::Result<PathBuf> {
        if p.contains('\0') {
            return Err(Error::invalid("path contains a NUL byte"));
        }
        let (base, rest) = match p.strip_prefix('/') {
            Some(r) => (PathBuf::new(), r.to_owned()),
            None => (PathBuf::from(&WORKSPACE_MOUNT[1..]), p.to_owned()),
        };
        let mut rel = base;
        for c in Path::new(&rest).components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::ParentDir => {
                    rel.pop();
                }
                _ => {}
            }
        }
        Ok(self.cfg.root.join(rel))
    }

    /// The path as the guest sees it (for `FileEntry::path`): relative to the
    /// workspace when inside it, absolute otherwise.
    pub(crate) fn display_path(&self, local: &Path) -> String {
        let inside = local.strip_prefix(&self.cfg.root).unwrap_or(local);
        let ws = Path::new(&WORKSPACE_MOUNT[1..]);
        match inside.strip_prefix(ws) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => format!("/{}", inside.to_string_lossy()),
        }
    }

    /// Give new files under the workspace to the workspace's owner.
    pub(crate) fn chown_like_workspace(&self, p: &Path) {
        use std::os::unix::fs::MetadataExt;
        if crate::sys::geteuid() != 0 {
            return;
        }
        let ws = self.cfg.root.join(&WORKSPACE_MOUNT[1..]);
        if !p.starts_with(&ws) || p == ws {
            return;
        }
        if let Ok(m) = std::fs::metadata(&ws)
            && m.uid() != 0
        {
            let _ = std::os::unix::fs::lchown(p, Some(m.uid()), Some(m.gid()));
        }
    }
}

/// The agent's protocol server.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(cfg: ServerConfig) -> Self {
        let procs = Procs::new(cfg.reap_all);
        let urandom = if cfg.system {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/urandom")
                .ok()
        } else {
            None
        };
        Server {
            shared: Arc::new(Shared {
                cfg,
                out: Mutex::new(None),
                streams: Mutex::new(HashMap::new()),
                procs,
                restores: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                boot_id: system::read_trim("/proc/sys/kernel/random/boot_id"),
                hostname: Mutex::new(None),
                urandom,
            }),
        }
    }

    /// The process table (PID 1 runs its reaper on it).
    pub fn procs(&self) -> &Procs {
        &self.shared.procs
    }

    /// Serve one connection until EOF or a shutdown request.
    pub fn serve(&self, reader: impl Read, writer: impl Write + Send + 'static) -> io::Result<()> {
        *self.shared.out.lock() = Some(Box::new(writer));
        self.shared
            .reply(CONTROL, Message::Hello(system::hello(&self.shared)));
        let r = self.read_loop(reader);
        self.disconnected();
        r
    }

    /// Serve a virtio-serial port forever (see the module docs).
    pub fn serve_port(&self, port: std::fs::File) -> io::Result<()> {
        let writer = port.try_clone()?;
        *self.shared.out.lock() = Some(Box::new(writer));
        let mut reader = port;
        loop {
            // Blocks until a host is connected.
            self.shared
                .reply(CONTROL, Message::Hello(system::hello(&self.shared)));
            if let Err(e) = self.read_loop(&mut reader) {
                eprintln!("godel-guest: read from host failed: {e}");
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.disconnected();
            // `read` returns 0 at once while the host is away and the write
            // above blocks; this pause only guards against a tight loop.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_loop(&self, mut reader: impl Read) -> io::Result<()> {
        let mut dec = FrameDecoder::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            dec.feed(&buf[..n]);
            while let Some(r) = dec.next_frame() {
                match r {
                    Ok(f) => self.handle(f),
                    Err(e) => eprintln!("godel-guest: {e}"),
                }
                if self.shared.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
        }
        if let Err(e) = dec.finish() {
            eprintln!("godel-guest: {e}");
        }
        Ok(())
    }

    /// The host went away: stop waiting for its credit; pending uploads end.
    fn disconnected(&self) {
        let mut streams = self.shared.streams.lock();
        streams.retain(|_, st| match st {
            StreamState::Exec(e) => {
                e.credit.release();
                true
            }
            StreamState::Sending(c) => {
                c.release();
                false
            }
            _ => false,
        });
    }

    fn handle(&self, f: Frame) {
        let sh = &self.shared;
        let id = f.stream;
        match f.msg {
            Message::Sync { nonce } => {
                let hello = system::hello(sh);
                sh.reply(CONTROL, Message::SyncAck { nonce, hello });
            }
            Message::Ping { nonce } => sh.reply(id, Message::Pong { nonce }),
            Message::Exec(start) => exec::start(self.shared.clone(), id, start),
            Message::ReadFile { path } => files::read_file(self.shared.clone(), id, &path),
            Message::WriteFile { path, mode } => files::write_open(sh, id, &path, mode),
            Message::TarUpload { path } => files::upload_open(self.shared.clone(), id, &path),
            Message::TarDownload { path } => files::download(self.shared.clone(), id, &path),
            Message::ListDir { path } => files::list_dir(sh, id, &path),
            Message::Stat { path } => files::stat(sh, id, &path),
            Message::MakeDir { path } => files::make_dir(sh, id, &path),
            Message::Rename { from, to } => files::rename(sh, id, &from, &to),
            Message::Remove { path, recursive } => files::remove(sh, id, &path, recursive),
            Message::Usage => sh.reply(id, Message::UsageReport(system::usage(sh))),
            Message::Restored { unix_ns, hostname } => {
                system::restored(sh, id, &f.data, unix_ns, hostname.as_deref())
            }
            Message::Shutdown { poweroff } => system::shutdown(sh, id, poweroff),
            Message::Data | Message::End { .. } | Message::Stdin | Message::StdinClose => {
                self.stream_input(id, f.msg, f.data)
            }
            Message::Signal { signal } => {
                if let Some(StreamState::Exec(e)) = sh.streams.lock().get(&id) {
                    e.signal(signal);
                }
            }
            Message::Credit { bytes } => match sh.streams.lock().get(&id) {
                Some(StreamState::Exec(e)) => e.credit.give(bytes),
                Some(StreamState::Sending(c)) => c.give(bytes),
                _ => {}
            },
            Message::Cancel => {
                let st = sh.streams.lock().remove(&id);
                match st {
                    Some(StreamState::Exec(e)) => {
                        e.signal(libc::SIGKILL);
                        e.credit.release();
                    }
                    Some(StreamState::Sending(c)) => c.release(),
                    _ => {}
                }
            }
            other => eprintln!("godel-guest: unexpected message on stream {id}: {other:?}"),
        }
    }

    fn stream_input(&self, id: u32, msg: Message, data: bytes::Bytes) {
        let sh = &self.shared;
        let mut streams = sh.streams.lock();
        let Some(st) = streams.get_mut(&id) else {
            return;
        };
        let finished = match st {
            StreamState::Exec(e) => e.input(msg, data),
            StreamState::Write(w) => w.input(sh, id, msg, &data),
            StreamState::Upload(u) => u.input(msg, data),
            StreamState::Sending(_) => false,
            StreamState::Failed => matches!(msg, Message::End { .. }),
        };
        if finished {
            streams.remove(&id);
        }
    }
}
