//! The host side of the protocol: an async client over the Unix socket that
//! QEMU's virtio-serial chardev listens on.
//!
//! One reader task decodes frames and routes them by stream id to the
//! request waiting for them; one writer task owns the socket's write half.
//! `connect` retries the socket until it appears, then syncs (see
//! [`crate::protocol`]): the client is usable only once the guest has
//! acknowledged the nonce, so stale bytes from before are never mistaken for
//! answers. Exec maps straight onto `godel_core::ExecHandle`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{Error, ExecEvent, ExecHandle, ExecRequest, FileEntry};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::protocol::{
    CHUNK, CONTROL, ExecStart, Frame, FrameDecoder, GuestUsage, Hello, Message, SYNC_INTERVAL_MS,
    WINDOW,
};

/// Default bound on waiting for any single reply frame.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

type StreamMap = HashMap<u32, mpsc::UnboundedSender<Frame>>;

struct Shared {
    streams: Mutex<StreamMap>,
    closed: AtomicBool,
    /// Latest `SyncAck` (nonce, hello) or `Hello` (nonce 0) seen.
    hello: watch::Sender<Option<(u64, Hello)>>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Vec<u8>>,
    next_stream: AtomicU32,
    request_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A connection to one guest agent. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct GuestClient {
    inner: Arc<Inner>,
}

/// Removes a stream's route when the request is finished or abandoned.
struct StreamGuard {
    shared: Arc<Shared>,
    id: u32,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.shared.streams.lock().remove(&self.id);
    }
}

struct Stream {
    id: u32,
    rx: mpsc::UnboundedReceiver<Frame>,
    _guard: StreamGuard,
}

fn closed_error() -> Error {
    Error::unavailable("the guest agent channel is closed")
}

fn random_u64() -> u64 {
    rand::random::<u64>()
}

impl GuestClient {
    /// Connect to the chardev socket at `path` (retrying until it exists) and
    /// sync with the guest agent, all within `timeout`.
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> godel_core::Result<Self> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Err(Error::timeout(format!(
                            "cannot connect to the guest socket {}: {e}",
                            path.display()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        Self::from_stream(stream, left).await
    }

    /// Use an already connected socket (tests, socketpairs) and sync within `timeout`.
    pub async fn from_stream(stream: UnixStream, timeout: Duration) -> godel_core::Result<Self> {
        let client = Self::from_stream_unsynced(stream);
        client.sync(timeout).await?;
        Ok(client)
    }

    /// Use an already connected socket without syncing: the caller runs
    /// [`GuestClient::sync`] itself, possibly with requests queued right
    /// behind it (a restore sends `restored` in the same round trip).
    pub fn from_stream_unsynced(stream: UnixStream) -> Self {
        let (mut rd, mut wr) = stream.into_split();
        let (hello_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            streams: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            hello: hello_tx,
        });
        let (tx, mut wrx) = mpsc::channel::<Vec<u8>>(64);
        let wshared = shared.clone();
        let writer = tokio::spawn(async move {
            while let Some(buf) = wrx.recv().await {
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            wshared.closed.store(true, Ordering::SeqCst);
        });
        let rshared = shared.clone();
        let reader = tokio::spawn(async move {
            let mut dec = FrameDecoder::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                dec.feed(&buf[..n]);
                while let Some(r) = dec.next_frame() {
                    match r {
                        Ok(f) => route(&rshared, f),
                        Err(e) => tracing::debug!("guest channel: {e}"),
                    }
                }
            }
            rshared.closed.store(true, Ordering::SeqCst);
            // Dropping the senders ends every waiting request with "closed".
            rshared.streams.lock().clear();
            rshared.hello.send_replace(None);
        });
        GuestClient {
            inner: Arc::new(Inner {
                shared,
                tx,
                next_stream: AtomicU32::new((random_u64() as u32 >> 8).max(1)),
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                tasks: vec![writer, reader],
            }),
        }
    }

    /// The same connection with another per-reply timeout.
    pub fn with_request_timeout(self, t: Duration) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.request_timeout = t;
                GuestClient {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => GuestClient { inner },
        }
    }

    /// Send `Sync{nonce}` until the guest acknowledges it. Called by `connect`;
    /// call again after anything that may have disturbed the channel.
    pub async fn sync(&self, timeout: Duration) -> godel_core::Result<Hello> {
        let deadline = Instant::now() + timeout;
        let nonce = random_u64() | 1;
        let mut rx = self.inner.shared.hello.subscribe();
        loop {
            if self.is_closed() {
                return Err(closed_error());
            }
            self.send(Frame::new(CONTROL, Message::Sync { nonce }))
                .await?;
            let step = (Instant::now() + Duration::from_millis(SYNC_INTERVAL_MS)).min(deadline);
            let mut changed = false;
            loop {
                let seen = rx.borrow_and_update().clone();
                match seen {
                    Some((n, hello)) if n == nonce => return Ok(hello),
                    // A new `Hello` (nonce 0): the guest has just (re)opened
                    // its port, so a `Sync` sent before may be lost: send
                    // again now instead of waiting out the interval.
                    Some((0, _)) if changed => break,
                    _ => {}
                }
                match timeout_at(step, rx.changed()).await {
                    Ok(Ok(())) => {
                        changed = true;
                        continue;
                    }
                    Ok(Err(_)) => return Err(closed_error()),
                    Err(_) => break,
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "guest agent did not answer the sync within {} ms",
                    timeout.as_millis()
                )));
            }
        }
    }

    /// The guest's latest self-description (from the sync or a later `Hello`).
    pub fn hello(&self) -> Option<Hello> {
        self.inner
            .shared
            .hello
            .borrow()
            .as_ref()
            .map(|(_, h)| h.clone())
    }

    /// Whether the channel is gone (the VM exited or the socket closed).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::SeqCst)
    }

    // ---- plumbing ----

    async fn send(&self, frame: Frame) -> godel_core::Result<()> {
        let buf = frame
            .encode()
            .map_err(|e| Error::internal(format!("guest protocol: {e}")))?;
        self.inner.tx.send(buf).await.map_err(|_| closed_error())
    }

    fn open(&self) -> Stream {
        let id = loop {
            let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
            if id != CONTROL {
                break id;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.shared.streams.lock().insert(id, tx);
        Stream {
            id,
            rx,
            _guard: StreamGuard {
                shared: self.inner.shared.clone(),
                id,
            },
        }
    }

    async fn recv(&self, s: &mut Stream) -> godel_core::Result<Frame> {
        let t = self.inner.request_timeout;
        match tokio::time::timeout(t, s.rx.recv()).await {
            Ok(Some(Frame {
                msg: Message::Error(e),
                ..
            })) => Err(e),
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(closed_error()),
            Err(_) => {
                let _ = self.send(Frame::new(s.id, Message::Cancel)).await;
                Err(Error::timeout(format!(
                    "guest agent sent nothing for {} ms",
                    t.as_millis()
                )))
            }
        }
    }

    /// One request, one reply.
    async fn call(&self, msg: Message) -> godel_core::Result<Message> {
        let mut s = self.open();
        self.send(Frame::new(s.id, msg)).await?;
        Ok(self.recv(&mut s).await?.msg)
    }

    async fn expect_ok(&self, msg: Message) -> godel_core::Result<()> {
        match self.call(msg).await? {
            Message::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Send bulk bytes on a stream as `Data` chunks and an `End`.
    async fn send_bulk(&self, id: u32, data: &Bytes) -> godel_core::Result<()> {
        let mut off = 0;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            self.send(Frame::with_data(id, Message::Data, data.slice(off..end)))
                .await?;
            off = end;
        }
        self.send(Frame::new(
            id,
            Message::End {
                bytes: data.len() as u64,
            },
        ))
        .await
    }

    /// Receive `Data` chunks until `End`, returning credit as it goes.
    async fn recv_bulk(&self, s: &mut Stream) -> godel_core::Result<Bytes> {
        let mut out = Vec::new();
        let mut unacked = 0u64;
        loop {
            let f = self.recv(s).await?;
            match f.msg {
                Message::Data => {
                    out.extend_from_slice(&f.data);
                    unacked += f.data.len() as u64;
                    if unacked >= WINDOW / 4 {
                        self.send(Frame::new(s.id, Message::Credit { bytes: unacked }))
                            .await?;
                        unacked = 0;
                    }
                }
                Message::End { bytes } => {
                    if bytes != out.len() as u64 {
                        return Err(Error::internal(format!(
                            "guest sent {} bytes but announced {bytes}",
                            out.len()
                        )));
                    }
                    return Ok(Bytes::from(out));
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    // ---- the API ----

    /// Round trip to the agent; returns the elapsed time.
    pub async fn ping(&self) -> godel_core::Result<Duration> {
        let start = Instant::now();
        let nonce = random_u64();
        match self.call(Message::Ping { nonce }).await? {
            Message::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
            other => Err(unexpected(&other)),
        }
    }

    /// Start a command. Output streams through the handle's `events`; the
    /// handle's `stdin` is present when `req.interactive`.
    pub async fn exec(&self, req: ExecRequest) -> godel_core::Result<ExecHandle> {
        req.validate()?;
        let pipe = req.interactive || req.stdin.is_some();
        let mut s = self.open();
        let id = s.id;
        let start = ExecStart {
            argv: req.cmd.clone(),
            env: req.env.clone(),
            cwd: req.cwd.clone(),
            timeout_ms: Some(req.timeout().as_millis() as u64),
            user: req.user.clone(),
            stdin: pipe,
        };
        self.send(Frame::new(id, Message::Exec(start))).await?;
        if let Some(input) = &req.stdin {
            let data = Bytes::from(input.clone().into_bytes());
            let mut off = 0;
            while off < data.len() {
                let end = (off + CHUNK).min(data.len());
                self.send(Frame::with_data(id, Message::Stdin, data.slice(off..end)))
                    .await?;
                off = end;
            }
        }
        if pipe && !req.interactive {
            self.send(Frame::new(id, Message::StdinClose)).await?;
        }
        let pid = match self.recv(&mut s).await?.msg {
            Message::Started { pid } => pid,
            other => return Err(unexpected(&other)),
        };
        let stdin = if req.interactive {
            let (tx, mut rx) = mpsc::channel::<Bytes>(16);
            let c = self.clone();
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    for part in chunk.chunks(CHUNK) {
                        let f = Frame::with_data(id, Message::Stdin, Bytes::copy_from_slice(part));
                        if c.send(f).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = c.send(Frame::new(id, Message::StdinClose)).await;
            });
            Some(tx)
        } else {
            None
        };
        let (sig_tx, mut sig_rx) = mpsc::channel::<i32>(4);
        let c = self.clone();
        tokio::spawn(async move {
            while let Some(signal) = sig_rx.recv().await {
                if c.send(Frame::new(id, Message::Signal { signal }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let first = futures::stream::iter([ExecEvent::Started { pid }]);
        let state = (s, self.clone(), false);
        let rest = futures::stream::unfold(state, |(mut s, c, done)| async move {
            if done {
                return None;
            }
            // No idle timeout here: the guest enforces the exec timeout, and a
            // dead channel ends the stream through the reader task.
            let ev = match s.rx.recv().await {
                None => ExecEvent::Error(closed_error()),
                Some(f) => match f.msg {
                    Message::Stdout | Message::Stderr => {
                        let n = f.data.len() as u64;
                        let _ = c.send(Frame::new(s.id, Message::Credit { bytes: n })).await;
                        if matches!(f.msg, Message::Stdout) {
                            ExecEvent::Stdout { data: f.data }
                        } else {
                            ExecEvent::Stderr { data: f.data }
                        }
                    }
                    Message::Exit(st) => ExecEvent::Exit(st),
                    Message::Error(e) => ExecEvent::Error(e),
                    other => ExecEvent::Error(unexpected(&other)),
                },
            };
            let done = matches!(ev, ExecEvent::Exit(_) | ExecEvent::Error(_));
            Some((ev, (s, c, done)))
        });
        Ok(ExecHandle {
            pid: Some(pid),
            stdin,
            signal: Some(sig_tx),
            events: first.chain(rest).boxed(),
        })
    }

    /// Read a whole file.
    pub async fn read_file(&self, path: &str) -> godel_core::Result<Bytes> {
        let mut s = self.open();
        self.send(Frame::new(s.id, Message::ReadFile { path: path.into() }))
            .await?;
        self.recv_bulk(&mut s).await
    }

    /// Write a file, creating parent directories.
    pub async fn write_file(&self, path: &str, data: Bytes) -> godel_core::Result<()> {
        let mut s = self.open();
        let msg = Message::WriteFile {
            path: path.into(),
            mode: None,
        };
        self.send(Frame::new(s.id, msg)).await?;
        self.send_bulk(s.id, &data).await?;
        match self.recv(&mut s).await?.msg {
            Message::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_dir(&self, path: &str) -> godel_core::Result<Vec<FileEntry>> {
        match self.call(Message::ListDir { path: path.into() }).await? {
            Message::Entries { entries } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn stat(&self, path: &str) -> godel_core::Result<FileEntry> {
        match self.call(Message::Stat { path: path.into() }).await? {
            Message::Entry { entry } => Ok(entry),
            other => Err(unexpected(&other)),
        }
    }

    /// Create a directory and its parents (no error if it exists).
    pub async fn make_dir(&self, path: &str) -> godel_core::Result<()> {
        self.expect_ok(Message::MakeDir { path: path.into() }).await
    }

    pub async fn rename(&self, from: &str, to: &str) -> godel_core::Result<()> {
        self.expect_ok(Message::Rename {
            from: from.into(),
            to: to.into(),
        })
        .await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> godel_core::Result<()> {
        self.expect_ok(Message::Remove {
            path: path.into(),
            recursive,
        })
        .await
    }

    /// Unpack a tar archive into a directory (created if missing).
    pub async fn upload_tar(&self, path: &str, tar: Bytes) -> godel_core::Result<()> {
        let mut s = self.open();
        self.send(Frame::new(s.id, Message::TarUpload { path: path.into() }))
            .await?;
        self.send_bulk(s.id, &tar).await?;
        match self.recv(&mut s).await?.msg {
            Message::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Pack a directory (or one file) into a tar archive.
    pub async fn download_tar(&self, path: &str) -> godel_core::Result<Bytes> {
        let mut s = self.open();
        self.send(Frame::new(s.id, Message::TarDownload { path: path.into() }))
            .await?;
        self.recv_bulk(&mut s).await
    }

    /// Memory, CPU, disk and load as the guest sees them.
    pub async fn usage(&self) -> godel_core::Result<GuestUsage> {
        match self.call(Message::Usage).await? {
            Message::UsageReport(u) => Ok(u),
            other => Err(unexpected(&other)),
        }
    }

    /// Tell the guest it was restored from a snapshot: mix `entropy` into its
    /// RNG, step its clock to `time`, and take `hostname` if given.
    pub async fn restored(
        &self,
        entropy: &[u8],
        time: SystemTime,
        hostname: Option<&str>,
    ) -> godel_core::Result<()> {
        if entropy.len() > crate::protocol::MAX_DATA {
            return Err(Error::invalid("restore entropy is larger than one frame"));
        }
        let unix_ns = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut s = self.open();
        let msg = Message::Restored {
            unix_ns,
            hostname: hostname.map(str::to_owned),
        };
        self.send(Frame::with_data(s.id, msg, Bytes::copy_from_slice(entropy)))
            .await?;
        match self.recv(&mut s).await?.msg {
            Message::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Ask the guest to sync its disks and power off (or reboot). Returns once
    /// the guest acknowledged; the VM exits shortly after.
    pub async fn shutdown(&self, poweroff: bool) -> godel_core::Result<()> {
        self.expect_ok(Message::Shutdown { poweroff }).await
    }
}

fn route(shared: &Shared, f: Frame) {
    if f.stream == CONTROL {
        match f.msg {
            Message::SyncAck { nonce, hello } => {
                shared.hello.send_replace(Some((nonce, hello)));
            }
            Message::Hello(hello) => {
                shared.hello.send_replace(Some((0, hello)));
            }
            other => tracing::debug!("guest control message ignored: {other:?}"),
        }
        return;
    }
    let id = f.stream;
    let mut streams = shared.streams.lock();
    let gone = match streams.get(&id) {
        Some(tx) => tx.send(f).is_err(),
        None => false,
    };
    if gone {
        streams.remove(&id);
    }
}

fn unexpected(m: &Message) -> Error {
    let name = serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Error::internal(format!("unexpected reply from the guest agent: {name}"))
}
