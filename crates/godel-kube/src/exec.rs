//! Exec over the Kubernetes WebSocket exec API (`Api::<Pod>::exec`).
//! stdout and stderr are drained concurrently through large pipes, stdin is
//! written and half-closed (`v5.channel.k8s.io`), and the exit code comes
//! from the status channel (`NonZeroExitCode` / `ExitCode` cause).
//!
//! User commands run as `timeout -s KILL <t> env -C <cwd> K=V... cmd...`
//! inside the container, so a timeout kills the command there (Kubernetes
//! exec has no signal channel), with a client-side deadline as backstop.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{Error, ExecEvent, ExecHandle, ExecRequest, ExitStatus, Result, WORKSPACE_MOUNT};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::errors::map_kube;
use crate::names::CONTAINER;
use crate::provider::{AgentRef, Inner};

/// Size of kube-rs's internal pipes (its default of 1 KiB throttles throughput).
const PIPE: usize = 1 << 20;
/// How long after the in-container timeout the client gives up on its own.
const GRACE: Duration = Duration::from_secs(5);
/// Deadline of internal file commands.
pub(crate) const FILE_OP_TIMEOUT: Duration = Duration::from_secs(600);

fn attach_params(stdin: bool) -> AttachParams {
    AttachParams {
        container: Some(CONTAINER.to_string()),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdin_buf_size: Some(PIPE),
        max_stdout_buf_size: Some(PIPE),
        max_stderr_buf_size: Some(PIPE),
    }
}

/// The exit code in an exec status, or why there is none.
pub(crate) fn exit_code(status: Option<Status>) -> Result<i32> {
    let Some(s) = status else {
        return Err(Error::exec("the exec stream closed without an exit status"));
    };
    if s.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = s
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<i32>().ok())
    {
        return Ok(code);
    }
    Err(Error::exec(format!(
        "exec failed: {} ({})",
        s.message.unwrap_or_default(),
        s.reason.unwrap_or_default()
    )))
}

/// The argv actually run in the container for a user request.
pub(crate) fn wrap_command(req: &ExecRequest) -> Vec<String> {
    let timeout = req.timeout();
    let cwd = match req.cwd.as_deref() {
        None | Some("") => WORKSPACE_MOUNT.to_string(),
        Some(c) if c.starts_with('/') => c.to_string(),
        Some(c) => format!("{WORKSPACE_MOUNT}/{}", c.trim_start_matches("./")),
    };
    let mut argv = vec![
        "timeout".to_string(),
        "-s".into(),
        "KILL".into(),
        format!("{:.3}", timeout.as_secs_f64()),
        "env".into(),
        "-C".into(),
        cwd,
    ];
    argv.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.extend(req.cmd.iter().cloned());
    argv
}

impl Inner {
    async fn attach(
        &self,
        agent: &AgentRef,
        argv: Vec<String>,
        stdin: bool,
    ) -> Result<AttachedProcess> {
        let api: Api<Pod> = Api::namespaced(self.client()?, &agent.namespace);
        api.exec(&agent.pod, argv, &attach_params(stdin))
            .await
            .map_err(|e| map_kube(&format!("exec in pod {}/{}", agent.namespace, agent.pod), e))
    }

    /// Run `argv`, feeding `stdin` (then closing it) and copying stdout into
    /// `stdout`. Returns the exit code and stderr.
    pub(crate) async fn exec_raw(
        &self,
        agent: &AgentRef,
        argv: Vec<String>,
        stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
        stdout: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<(i32, Vec<u8>)> {
        let run = async {
            let mut p = self.attach(agent, argv, stdin.is_some()).await?;
            let mut out = p
                .stdout()
                .ok_or_else(|| Error::internal("exec: no stdout"))?;
            let mut err = p
                .stderr()
                .ok_or_else(|| Error::internal("exec: no stderr"))?;
            let status = p
                .take_status()
                .ok_or_else(|| Error::internal("exec: no status"))?;
            let writer = p.stdin();
            let feed = async move {
                if let (Some(mut src), Some(mut w)) = (stdin, writer) {
                    tokio::io::copy(&mut src, &mut w).await?;
                    w.shutdown().await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let mut errbuf = Vec::new();
            let (fed, copied, _) = tokio::join!(
                feed,
                tokio::io::copy(&mut out, stdout),
                err.read_to_end(&mut errbuf)
            );
            let code = exit_code(status.await);
            let _ = p.join().await;
            copied.map_err(|e| Error::io("exec: writing output", &e))?;
            let code = code?;
            if let Err(e) = fed
                && code == 0
            {
                return Err(Error::io("exec: sending input", &e));
            }
            Ok((code, errbuf))
        };
        tokio::time::timeout(FILE_OP_TIMEOUT, run)
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "exec in pod {} took over {} s",
                    agent.pod,
                    FILE_OP_TIMEOUT.as_secs()
                ))
            })?
    }

    /// Start a user command; events stream through the returned handle.
    pub(crate) async fn exec_stream(&self, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        req.validate()?;
        let agent = self.agent(id)?;
        let timeout = req.timeout();
        let want_stdin = req.interactive || req.stdin.is_some();
        let mut p = self
            .attach(&agent, wrap_command(&req), want_stdin)
            .await
            .map_err(|e| e.with_runtime(id))?;
        let started = Instant::now();
        let (ev_tx, ev_rx) = mpsc::channel::<ExecEvent>(64);
        // The stream is attached: the command runs. Kubernetes exec does not
        // report the process id, so `pid` is 0 (unknown).
        let _ = ev_tx.try_send(ExecEvent::Started { pid: 0 });
        let (stdin_tx, stdin_rx) = if req.interactive {
            let (t, r) = mpsc::channel::<Bytes>(16);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let out = p.stdout();
        let err = p.stderr();
        let status = p.take_status();
        let writer = p.stdin();
        let data = req.stdin.clone();
        tokio::spawn(async move {
            let feed = async move {
                let Some(mut w) = writer else { return };
                if let Some(d) = data
                    && w.write_all(d.as_bytes()).await.is_err()
                {
                    return;
                }
                if let Some(mut rx) = stdin_rx {
                    while let Some(b) = rx.recv().await {
                        if w.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = w.shutdown().await;
            };
            let work = async {
                let (_, a, b) = tokio::join!(
                    feed,
                    pump(out, false, ev_tx.clone()),
                    pump(err, true, ev_tx.clone())
                );
                let st = match status {
                    Some(s) => s.await,
                    None => None,
                };
                (a && b, st)
            };
            let ev = match tokio::time::timeout(timeout + GRACE, work).await {
                Ok((false, _)) => None, // the caller dropped the handle
                Ok((true, st)) => Some(match exit_code(st) {
                    Ok(code) => {
                        let elapsed = started.elapsed();
                        let timed_out =
                            code == 137 && elapsed + Duration::from_millis(50) >= timeout;
                        ExecEvent::Exit(ExitStatus {
                            code,
                            signal: timed_out.then_some(9),
                            timed_out,
                            duration_ms: elapsed.as_millis() as u64,
                        })
                    }
                    Err(e) => ExecEvent::Error(e),
                }),
                Err(_) => Some(ExecEvent::Exit(ExitStatus {
                    code: 137,
                    signal: Some(9),
                    timed_out: true,
                    duration_ms: started.elapsed().as_millis() as u64,
                })),
            };
            if let Some(ev) = ev {
                let _ = ev_tx.send(ev).await;
            }
            drop(p);
        });
        Ok(ExecHandle {
            pid: None,
            stdin: stdin_tx,
            signal: None,
            events: ReceiverStream::new(ev_rx).boxed(),
        })
    }
}

/// Forward one output stream as events; false when the receiver is gone.
async fn pump<R: AsyncRead + Unpin>(
    r: Option<R>,
    stderr: bool,
    tx: mpsc::Sender<ExecEvent>,
) -> bool {
    let Some(mut r) = r else { return true };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                let ev = if stderr {
                    ExecEvent::Stderr { data }
                } else {
                    ExecEvent::Stdout { data }
                };
                if tx.send(ev).await.is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_commands() {
        let mut r = ExecRequest::new(["ls", "-l"]);
        r.cwd = Some("src".into());
        r.env.insert("A".into(), "1".into());
        r.timeout_ms = Some(1500);
        assert_eq!(
            wrap_command(&r),
            [
                "timeout",
                "-s",
                "KILL",
                "1.500",
                "env",
                "-C",
                "/home/user/src",
                "A=1",
                "ls",
                "-l"
            ]
        );
    }

    #[test]
    fn exit_codes_from_status() {
        let ok: Status = serde_json::from_str(r#"{"metadata":{},"status":"Success"}"#).unwrap();
        assert_eq!(exit_code(Some(ok)).unwrap(), 0);
        let three: Status = serde_json::from_str(
            r#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
        )
        .unwrap();
        assert_eq!(exit_code(Some(three)).unwrap(), 3);
        let other: Status = serde_json::from_str(
            r#"{"status":"Failure","reason":"InternalError","message":"boom"}"#,
        )
        .unwrap();
        assert!(exit_code(Some(other)).is_err());
        assert!(exit_code(None).is_err());
    }
}
