//! A sandbox port reached through the runtime's own exec channel, for
//! runtimes with no other way in (a microVM's guest agent): a small bridge
//! runs inside the sandbox, connects to `127.0.0.1:<port>` there, prints
//! one `+` once connected, then copies its stdin to the socket and the
//! socket to its stdout. [`via_exec`] turns that interactive exec into a
//! [`PortStream`]; a port nothing listens on ends the bridge before the `+`
//! and is `UNAVAILABLE` with its message. The bridge is `python3` when the
//! sandbox has it, else bash's `/dev/tcp`, else `nc` (busybox guests).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::error::{Error, ErrorCode, Result};
use crate::exec::{ExecEvent, ExecRequest};
use crate::port::PortStream;
use crate::provider::RuntimeProvider;

const PY: &str = r#"
import os, socket, sys, threading
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    sys.stderr.write(str(e)); sys.exit(111)
os.write(1, b"+")
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR); return
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    os.write(1, d)
"#;

const BASH: &str =
    r#"exec 3<>/dev/tcp/127.0.0.1/$1 || exit 111; printf +; cat <&3 & cat >&3; wait"#;

/// busybox: `nc` gives no sign of connecting, so the bridge says `+` once
/// it is still connected a moment later (a server that speaks first
/// within that moment is reported closed).
/// (A background job's stdin is /dev/null before its own redirections,
/// hence stdin goes through fd 3.)
const NC: &str = r#"exec 3<&0; nc 127.0.0.1 "$1" <&3 3<&- & p=$!; exec 3<&-; sleep 0.2; kill -0 $p 2>/dev/null || { wait $p; exit 111; }; printf +; wait $p"#;

/// How long a bridged connection may live (the exec's timeout).
const BRIDGE_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// The bridge command for `port`.
pub fn bridge_command(port: u16) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        concat!(
            "if command -v python3 >/dev/null 2>&1; then exec python3 -c \"$1\" \"$4\"; fi; ",
            "if command -v bash >/dev/null 2>&1; then exec bash -c \"$2\" bridge \"$4\"; fi; ",
            "if command -v nc >/dev/null 2>&1; then exec sh -c \"$3\" bridge \"$4\"; fi; ",
            "echo 'the sandbox has no python3, bash or nc to reach its ports with' >&2; exit 127"
        )
        .into(),
        "bridge".into(),
        PY.into(),
        BASH.into(),
        NC.into(),
        port.to_string(),
    ]
}

type Permit = Pin<Box<dyn Future<Output = Option<mpsc::OwnedPermit<Bytes>>> + Send>>;

/// An interactive exec of the bridge as a byte stream.
struct ExecStream {
    events: BoxStream<'static, ExecEvent>,
    pending: Bytes,
    done: bool,
    stdin: Option<mpsc::Sender<Bytes>>,
    permit: Option<Permit>,
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            match self.events.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(ExecEvent::Stdout { data })) => self.pending = data,
                Poll::Ready(Some(ExecEvent::Started { .. } | ExecEvent::Stderr { .. })) => {}
                Poll::Ready(_) => self.done = true,
            }
        }
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let broken = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        if self.permit.is_none() {
            let Some(tx) = self.stdin.clone() else {
                return Poll::Ready(Err(broken()));
            };
            self.permit = Some(Box::pin(async move { tx.reserve_owned().await.ok() }));
        }
        let Some(fut) = self.permit.as_mut() else {
            return Poll::Ready(Err(broken()));
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(p) => {
                self.permit = None;
                match p {
                    Some(p) => {
                        p.send(Bytes::copy_from_slice(buf));
                        Poll::Ready(Ok(buf.len()))
                    }
                    None => Poll::Ready(Err(broken())),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Closing stdin tells the bridge to half-close the socket.
        self.permit = None;
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}

/// Reach `port` inside sandbox `id` through `provider`'s interactive exec.
pub async fn via_exec<P: RuntimeProvider + ?Sized>(
    provider: &P,
    id: &str,
    port: u16,
) -> Result<PortStream> {
    let mut req = ExecRequest::new(bridge_command(port));
    req.interactive = true;
    req.timeout_ms = Some(BRIDGE_TIMEOUT_MS);
    let mut h = provider.exec(id, req).await?;
    let mut stderr = Vec::new();
    loop {
        match h.events.next().await {
            Some(ExecEvent::Stdout { data }) if data.first() == Some(&b'+') => {
                return Ok(Box::new(ExecStream {
                    events: h.events,
                    pending: data.slice(1..),
                    done: false,
                    stdin: h.stdin.take(),
                    permit: None,
                }));
            }
            Some(ExecEvent::Stderr { data }) => stderr.extend_from_slice(&data),
            Some(ExecEvent::Started { .. }) => {}
            Some(ExecEvent::Error(e)) => return Err(e),
            Some(ExecEvent::Stdout { .. }) | Some(ExecEvent::Exit(_)) | None => {
                let why = String::from_utf8_lossy(&stderr).trim().to_string();
                let why = if why.is_empty() {
                    "nothing listens on it".to_string()
                } else {
                    why
                };
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!("port {port} of sandbox {id} is not open: {why}"),
                )
                .with_runtime(id));
            }
        }
    }
}
