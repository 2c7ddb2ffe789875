//! An asynchronous QMP (QEMU Machine Protocol) client over a Unix socket.
//!
//! The protocol, as this client drives it:
//! 1. QEMU greets with `{"QMP": {...}}`; the client answers
//!    `{"execute": "qmp_capabilities"}` and waits for `{"return": {}}`.
//! 2. Every command carries a numeric `id`; a background reader task routes
//!    each `{"return"|"error", "id"}` reply to the caller waiting for that id.
//! 3. Asynchronous `{"event": ...}` messages go to a broadcast channel.
//! 4. When the socket closes (QEMU exited or was killed) every waiting call
//!    fails with `UNAVAILABLE` and [`Qmp::closed`] resolves: the VM supervisor
//!    uses that as its death signal.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use godel_core::{Error, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, broadcast, oneshot, watch};

/// How long one QMP command may take before the call gives up.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// One asynchronous QMP event (`STOP`, `RESUME`, `SHUTDOWN`, `MIGRATION` ...).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub event: String,
    pub data: Value,
}

type Pending = Arc<parking_lot::Mutex<HashMap<u64, oneshot::Sender<Result<Value>>>>>;

/// A connected, capability-negotiated QMP session.
pub struct Qmp {
    writer: Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    closed: watch::Receiver<bool>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

impl Qmp {
    /// Connect to a QMP socket, retrying until `timeout` while QEMU starts.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::io(
                            format!("connect to QMP socket {}", path.display()),
                            &e,
                        )
                        .retryable(true));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::timeout(left.max(Duration::from_secs(2)), Self::handshake(stream))
            .await
            .map_err(|_| Error::timeout(format!("QMP greeting on {}", path.display())))?
    }

    async fn handshake(stream: UnixStream) -> Result<Qmp> {
        let (rd, wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        let greeting = lines
            .next_line()
            .await
            .map_err(|e| Error::io("read QMP greeting", &e))?
            .ok_or_else(|| Error::unavailable("QMP socket closed before the greeting"))?;
        let v: Value = serde_json::from_str(&greeting)
            .map_err(|e| Error::internal(format!("bad QMP greeting {greeting:?}: {e}")))?;
        if v.get("QMP").is_none() {
            return Err(Error::internal(format!(
                "unexpected QMP greeting {greeting}"
            )));
        }
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(256);
        let (closed_tx, closed) = watch::channel(false);
        let reader_pending = pending.clone();
        let reader_events = events.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    tracing::warn!(line, "unparsable QMP message");
                    continue;
                };
                if let Some(ev) = v.get("event").and_then(Value::as_str) {
                    let _ = reader_events.send(QmpEvent {
                        event: ev.to_string(),
                        data: v.get("data").cloned().unwrap_or(Value::Null),
                    });
                    continue;
                }
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let reply = if let Some(r) = v.get("return") {
                    Ok(r.clone())
                } else {
                    let class = v["error"]["class"].as_str().unwrap_or("GenericError");
                    let desc = v["error"]["desc"].as_str().unwrap_or("unknown QMP error");
                    Err(Error::internal(format!("QMP {class}: {desc}")))
                };
                let tx = reader_pending.lock().remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(reply);
                }
            }
            let _ = closed_tx.send(true);
            for (_, tx) in reader_pending.lock().drain() {
                let _ = tx.send(Err(Error::unavailable(
                    "QMP connection closed: QEMU exited",
                )));
            }
        });
        let qmp = Qmp {
            writer: Mutex::new(wr),
            pending,
            next_id: AtomicU64::new(1),
            events,
            closed,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Run one command and return its `return` value.
    pub async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.execute_timeout(command, arguments, QMP_TIMEOUT).await
    }

    /// Run one command with an explicit timeout.
    pub async fn execute_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        if self.is_closed() {
            return Err(Error::unavailable("QMP connection closed: QEMU exited"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let mut line = msg.to_string();
        line.push('\n');
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(line.as_bytes()).await {
                self.forget(id);
                return Err(Error::io(format!("send QMP {command}"), &e).retryable(false));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r.map_err(|e| Error::new(e.code, format!("{command}: {}", e.message))),
            Ok(Err(_)) => Err(Error::unavailable("QMP connection closed: QEMU exited")),
            Err(_) => {
                self.forget(id);
                Err(Error::timeout(format!(
                    "QMP {command} got no answer in {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().remove(&id);
    }

    /// Subscribe to asynchronous events from now on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Whether the socket has closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A receiver that turns `true` when the socket closes.
    pub fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Resolves when the socket closes (QEMU exited).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// `query-status`: the run state (`running`, `paused`, `postmigrate`, `inmigrate` ...).
    pub async fn status(&self) -> Result<String> {
        let v = self.execute("query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// `stop`: pause the vCPUs.
    pub async fn stop(&self) -> Result<()> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: resume the vCPUs.
    pub async fn cont(&self) -> Result<()> {
        self.execute("cont", None).await.map(drop)
    }

    /// `quit`: make QEMU exit. A closed socket counts as success.
    pub async fn quit(&self) -> Result<()> {
        match self
            .execute_timeout("quit", None, Duration::from_secs(5))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == godel_core::ErrorCode::Unavailable => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `migrate-set-capabilities` with the given `(name, state)` pairs.
    pub async fn set_migration_capabilities(&self, caps: &[(&str, bool)]) -> Result<()> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, s)| json!({"capability": c, "state": s}))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(drop)
    }

    /// `migrate` to a URI (QEMU 7.2 has no `file:`: use `exec:cat > FILE`).
    pub async fn migrate(&self, uri: &str) -> Result<()> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate-incoming` on a QEMU started with `-incoming defer`.
    pub async fn migrate_incoming(&self, uri: &str) -> Result<()> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `query-migrate` until the migration completes or fails.
    pub async fn wait_migration(&self, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        loop {
            let v = self.execute("query-migrate", None).await?;
            match v["status"].as_str().unwrap_or("") {
                "completed" => return Ok(v),
                "failed" | "cancelled" => {
                    let why = v["error-desc"].as_str().unwrap_or("no reason given");
                    return Err(Error::internal(format!("migration failed: {why}")));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "migration still {} after {} ms",
                    v["status"],
                    timeout.as_millis()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// Wait for an incoming migration (`-incoming defer` + `migrate-incoming`)
    /// to finish: the run state leaves `inmigrate`.
    pub async fn wait_incoming(&self, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        loop {
            let st = self.status().await?;
            if st != "inmigrate" {
                if st == "shutdown" || st == "internal-error" || st == "guest-panicked" {
                    return Err(Error::internal(format!("incoming migration ended in {st}")));
                }
                return Ok(st);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "incoming migration not done after {} ms",
                    timeout.as_millis()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(10));
        }
    }
}

impl Qmp {
    /// Like [`Qmp::wait_incoming`], but woken by QMP events (`RESUME`,
    /// `MIGRATION` with the `events` capability on) instead of sleeping
    /// between polls: `events` must be subscribed before `migrate-incoming`.
    pub async fn wait_incoming_events(
        &self,
        events: &mut broadcast::Receiver<QmpEvent>,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.status().await?;
            if st != "inmigrate" {
                if st == "shutdown" || st == "internal-error" || st == "guest-panicked" {
                    return Err(Error::internal(format!("incoming migration ended in {st}")));
                }
                return Ok(st);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::timeout(format!(
                    "incoming migration not done after {} ms",
                    timeout.as_millis()
                )));
            }
            let tick = (now + Duration::from_millis(20)).min(deadline);
            loop {
                match tokio::time::timeout_at(tick, events.recv()).await {
                    Ok(Ok(ev)) if ev.event == "MIGRATION" => {
                        let s = ev.data["status"].as_str().unwrap_or("");
                        if s == "failed" {
                            return Err(Error::internal("incoming migration failed"));
                        }
                        if s == "completed" {
                            break;
                        }
                    }
                    Ok(Ok(ev)) if ev.event == "RESUME" => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        return Err(Error::unavailable("QMP connection closed: QEMU exited"));
                    }
                }
            }
        }
    }
}

/// Quote a path for QEMU's `exec:` migration URIs (run through `/bin/sh -c`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A scripted QMP server: greets, then answers each command with
    /// `{"return": {"echo": <command>}}` and emits one event after the first.
    async fn fake_server(listener: UnixListener) {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut n = 0;
        loop {
            let mut chunk = [0u8; 1024];
            let r = s.read(&mut chunk).await.unwrap();
            if r == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..r]);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let v: Value = serde_json::from_slice(&line).unwrap();
                let cmd = v["execute"].as_str().unwrap().to_string();
                if cmd == "quit" {
                    return;
                }
                let reply = if cmd == "bad" {
                    json!({"error": {"class": "GenericError", "desc": "nope"}, "id": v["id"]})
                } else {
                    json!({"return": {"echo": cmd}, "id": v["id"]})
                };
                n += 1;
                if n == 2 {
                    s.write_all(b"{\"event\": \"STOP\", \"data\": {}}\n")
                        .await
                        .unwrap();
                }
                s.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn negotiates_executes_routes_events_and_sees_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(fake_server(listener));
        let qmp = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let mut ev = qmp.events();
        let v = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(v["echo"], "query-status");
        assert_eq!(ev.recv().await.unwrap().event, "STOP");
        let e = qmp.execute("bad", None).await.unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
        qmp.quit().await.unwrap();
        server.await.unwrap();
        qmp.closed().await;
        assert!(qmp.is_closed());
        assert_eq!(
            qmp.execute("cont", None).await.unwrap_err().code,
            godel_core::ErrorCode::Unavailable
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/c'd"), r"'/a b/c'\''d'");
    }
}
