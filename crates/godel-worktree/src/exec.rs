//! Turning a launched [`Process`] into an [`ExecHandle`]: stdout and stderr
//! are read concurrently and streamed as they arrive, stdin is fed from the
//! request's buffer and/or the handle's channel, signals go to the whole
//! process group, and the timeout kills the group with SIGKILL (so
//! grandchildren die too). `Exit` is sent last, after the output.
//!
//! After the leader exits, output still held open by a background process
//! it left behind (`server &`) is drained for [`DRAIN_GRACE`], then the
//! exec ends; the background process keeps running (its later writes to
//! the closed pipes fail).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{Error, ExecEvent, ExecHandle, ExecRequest, ExitStatus};
use godel_sandbox::Process;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long output is still read after the command's leader exited.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

const READ_CHUNK: usize = 64 * 1024;
const EVENT_QUEUE: usize = 256;

/// Start pumping `process`; the returned handle streams its events.
pub fn pump(process: Process, req: &ExecRequest) -> ExecHandle {
    let started = Instant::now();
    let Process {
        pid,
        stdin,
        stdout,
        stderr,
        exit,
        signal,
    } = process;
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    // The channel is fresh, so this cannot fail for lack of room.
    let _ = ev_tx.try_send(ExecEvent::Started { pid });

    let mut stdin_tx = None;
    if let Some(mut w) = stdin {
        let buffered = req.stdin.clone().map(|s| Bytes::from(s.into_bytes()));
        let mut rx = if req.interactive {
            let (tx, rx) = mpsc::channel::<Bytes>(16);
            stdin_tx = Some(tx);
            Some(rx)
        } else {
            None
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
    }

    let out_task = tokio::spawn(read_pipe(stdout, ev_tx.clone(), true));
    let err_task = tokio::spawn(read_pipe(stderr, ev_tx.clone(), false));
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
        let aborts = [out_task.abort_handle(), err_task.abort_handle()];
        let readers = async {
            let _ = out_task.await;
            let _ = err_task.await;
        };
        tokio::pin!(readers);
        if tokio::time::timeout(DRAIN_GRACE, &mut readers)
            .await
            .is_err()
        {
            // A background process holds the pipes: stop reading them so no
            // output follows `Exit`.
            for a in aborts {
                a.abort();
            }
        }
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
    });

    ExecHandle {
        pid: Some(pid),
        stdin: stdin_tx,
        signal: Some(sig_tx),
        events: ReceiverStream::new(ev_rx).boxed(),
    }
}

async fn read_pipe(
    mut pipe: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    tx: mpsc::Sender<ExecEvent>,
    stdout: bool,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut listening = true;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !listening {
                    // Nobody reads the events any more: keep draining so the
                    // command does not block on a full pipe.
                    continue;
                }
                let data = Bytes::copy_from_slice(&buf[..n]);
                let ev = if stdout {
                    ExecEvent::Stdout { data }
                } else {
                    ExecEvent::Stderr { data }
                };
                if tx.send(ev).await.is_err() {
                    listening = false;
                }
            }
        }
    }
}
