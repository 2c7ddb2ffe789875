//! Turning a launched [`Process`] into an [`ExecHandle`]: stdout and stderr
//! are read concurrently and streamed as they arrive, stdin is fed from the
//! request's buffer and/or the handle's channel, signals go to the whole
//! process group, and the timeout kills the group with SIGKILL (so
//! grandchildren die too). `Exit` is sent last, after the output.
//!
//! After the leader exits, output still held open by a background process
//! it left behind (`server &`) is forwarded for [`DRAIN_GRACE`]; then the
//! exec ends. The pipes are still drained (and discarded) so the background
//! process never blocks or dies of SIGPIPE, and its process group stays in
//! the runtime's [`ProcessTable`] until the pipes close, so `terminate`
//! can kill it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{Error, ExecEvent, ExecHandle, ExecRequest, ExitStatus};
use godel_sandbox::{Process, Signaller};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long output is still forwarded after the command's leader exited.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

const READ_CHUNK: usize = 64 * 1024;
const EVENT_QUEUE: usize = 256;

/// The process groups of one runtime's execs that may still be alive.
#[derive(Default)]
pub struct ProcessTable {
    next: AtomicU64,
    groups: Mutex<HashMap<u64, Signaller>>,
}

impl ProcessTable {
    fn add(&self, s: Signaller) -> u64 {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        self.groups.lock().insert(k, s);
        k
    }

    fn remove(&self, k: u64) {
        self.groups.lock().remove(&k);
    }

    /// SIGKILL every group still registered.
    pub fn kill_all(&self) {
        for (_, s) in self.groups.lock().drain() {
            let _ = s(libc::SIGKILL);
        }
    }

    /// Number of groups still registered.
    pub fn len(&self) -> usize {
        self.groups.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where readers forward output; emptied when `Exit` is sent.
type Forward = Arc<tokio::sync::Mutex<Option<mpsc::Sender<ExecEvent>>>>;

/// Start pumping `process`; the returned handle streams its events.
pub fn pump(process: Process, req: &ExecRequest, table: Arc<ProcessTable>) -> ExecHandle {
    let started = Instant::now();
    let Process {
        pid,
        stdin,
        stdout,
        stderr,
        exit,
        signal,
    } = process;
    let key = table.add(signal.clone());
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    // The channel is fresh, so this cannot fail for lack of room.
    let _ = ev_tx.try_send(ExecEvent::Started { pid });

    let stdin_tx = stdin.map(|w| feed_stdin(w, req));

    let forward: Forward = Arc::new(tokio::sync::Mutex::new(Some(ev_tx.clone())));
    let out_task = tokio::spawn(read_pipe(stdout, forward.clone(), true));
    let err_task = tokio::spawn(read_pipe(stderr, forward.clone(), false));
    let (sig_tx, mut sig_rx) = mpsc::channel::<i32>(8);
    let timeout = req.timeout();

    tokio::spawn(async move {
        let mut exit = exit;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut signals_open = true;
        let result = loop {
            tokio::select! {
                r = &mut exit => break r,
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    let _ = signal(libc::SIGKILL);
                }
                s = sig_rx.recv(), if signals_open => match s {
                    Some(sig) => { let _ = signal(sig); }
                    None => signals_open = false,
                },
            }
        };
        if timed_out {
            // Make sure nothing of the group survives a timeout.
            let _ = signal(libc::SIGKILL);
        }
        let mut readers = Box::pin(async move {
            let _ = out_task.await;
            let _ = err_task.await;
        });
        let drained = tokio::time::timeout(DRAIN_GRACE, &mut readers)
            .await
            .is_ok();
        // Waits for a reader's in-flight send, so no output follows `Exit`.
        forward.lock().await.take();
        let ev = match result {
            Ok(st) => ExecEvent::Exit(ExitStatus {
                code: st.code,
                signal: st.signal,
                timed_out,
                duration_ms: started.elapsed().as_millis() as u64,
            }),
            Err(e) => ExecEvent::Error(Error::exec(format!("waiting for the command failed: {e}"))),
        };
        let _ = ev_tx.send(ev).await;
        drop(ev_tx);
        if !drained {
            // Background processes hold the pipes: keep the group killable
            // until they are gone.
            readers.await;
        }
        table.remove(key);
    });

    ExecHandle {
        pid: Some(pid),
        stdin: stdin_tx.flatten(),
        signal: Some(sig_tx),
        events: ReceiverStream::new(ev_rx).boxed(),
    }
}

/// Write the buffered stdin, then (interactive) whatever the handle sends;
/// closing happens when the buffer is written or the sender is dropped.
fn feed_stdin(
    mut w: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    req: &ExecRequest,
) -> Option<mpsc::Sender<Bytes>> {
    let buffered = req.stdin.clone().map(|s| Bytes::from(s.into_bytes()));
    let (tx, mut rx) = if req.interactive {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    tokio::spawn(async move {
        if let Some(b) = buffered
            && w.write_all(&b).await.is_err()
        {
            return;
        }
        if let Some(rx) = rx.as_mut() {
            while let Some(chunk) = rx.recv().await {
                if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        }
        let _ = w.shutdown().await;
    });
    tx
}

async fn read_pipe(mut pipe: std::pin::Pin<Box<dyn AsyncRead + Send>>, fwd: Forward, stdout: bool) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let guard = fwd.lock().await;
                // After `Exit` (or when nobody listens) output is drained and
                // dropped so the writer never blocks on a full pipe.
                if let Some(tx) = guard.as_ref() {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let ev = if stdout {
                        ExecEvent::Stdout { data }
                    } else {
                        ExecEvent::Stderr { data }
                    };
                    let _ = tx.send(ev).await;
                }
            }
        }
    }
}
