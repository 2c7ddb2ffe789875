//! [`local_exec`]: run an [`ExecRequest`] as a plain local process and hand it
//! back as a streaming [`ExecHandle`], the way a real runtime would. No
//! isolation whatsoever: tests only.
//!
//! - `req.cmd` is the argv (`cmd[0]` looked up in `PATH`); use
//!   `["sh", "-c", script]` for shell syntax.
//! - The working directory is `dir`, or `req.cwd` resolved inside it
//!   (relative, or absolute under `/home/user` as in a real runtime).
//! - `HOME` is `dir`; `USER` is `req.user` (default `user`; no real user
//!   switch); `req.env` is added on top.
//! - The command leads its own process group: signals sent through
//!   `ExecHandle::signal` and the timeout's `SIGKILL` reach the whole group.
//! - Events: `Started { pid }` first, then `Stdout`/`Stderr` chunks as they
//!   come, then one `Exit` (`code` 128 + signal when killed, `timed_out`
//!   set by the timeout) or `Error`. Output of grandchildren that keep the
//!   pipes open is awaited at most 2 s after the command exits.
//! - `req.stdin` is written to stdin (then closed unless `interactive`);
//!   with `interactive`, `ExecHandle::stdin` feeds it until dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use godel_core::{
    Error, ExecEvent, ExecHandle, ExecRequest, ExitStatus, Result, workspace_relative,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Send `sig` to process group `pgid` (errors ignored: it may be gone).
pub fn kill_group(pgid: u32, sig: i32) {
    if let (Ok(s), Ok(pgid)) = (nix::sys::signal::Signal::try_from(sig), i32::try_from(pgid)) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), s);
    }
}

/// Run `req` as a local process in `dir`; see the module docs for the rules.
pub fn local_exec(dir: &Path, req: ExecRequest) -> Result<ExecHandle> {
    use std::os::unix::process::ExitStatusExt;
    req.validate()?;
    let cwd = match &req.cwd {
        Some(c) => dir.join(workspace_relative(c)?),
        None => dir.to_path_buf(),
    };
    let keep_stdin = req.interactive || req.stdin.is_some();
    let mut child = tokio::process::Command::new(&req.cmd[0])
        .args(&req.cmd[1..])
        .current_dir(&cwd)
        .env("HOME", dir)
        .env("USER", req.user.as_deref().unwrap_or("user"))
        .envs(&req.env)
        .stdin(if keep_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::exec(format!("cannot start {:?}: {e}", req.cmd[0])))?;
    let pid = child
        .id()
        .ok_or_else(|| Error::exec("the process vanished"))?;
    let (tx, rx) = mpsc::channel::<ExecEvent>(256);
    // The channel is empty: `Started` always comes first.
    let _ = tx.try_send(ExecEvent::Started { pid });

    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
    if let Some(mut w) = child.stdin.take() {
        let initial = req.stdin.clone();
        let interactive = req.interactive;
        tokio::spawn(async move {
            if let Some(s) = initial {
                let _ = w.write_all(s.as_bytes()).await;
            }
            while interactive && let Some(b) = in_rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
                let _ = w.flush().await;
            }
        });
    }

    let (sig_tx, mut sig_rx) = mpsc::channel::<i32>(4);
    tokio::spawn(async move {
        while let Some(s) = sig_rx.recv().await {
            kill_group(pid, s);
        }
    });

    let outputs: [(Option<Box<dyn AsyncRead + Send + Unpin>>, bool); 2] = [
        (child.stdout.take().map(|s| Box::new(s) as _), false),
        (child.stderr.take().map(|s| Box::new(s) as _), true),
    ];
    let mut readers = Vec::new();
    for (out, is_err) in outputs {
        let Some(mut out) = out else { continue };
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let data = Bytes::copy_from_slice(&buf[..n]);
                let ev = if is_err {
                    ExecEvent::Stderr { data }
                } else {
                    ExecEvent::Stdout { data }
                };
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        }));
    }

    let timeout = req.timeout();
    tokio::spawn(async move {
        let started = Instant::now();
        let (status, timed_out) = tokio::select! {
            st = child.wait() => (st, false),
            _ = tokio::time::sleep_until(started + timeout) => {
                kill_group(pid, nix::sys::signal::Signal::SIGKILL as i32);
                (child.wait().await, true)
            }
        };
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        let ev = match status {
            Ok(st) => ExecEvent::Exit(ExitStatus {
                code: st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
                signal: st.signal(),
                timed_out,
                duration_ms: started.elapsed().as_millis() as u64,
            }),
            Err(e) => ExecEvent::Error(Error::exec(format!("waiting for the command: {e}"))),
        };
        let _ = tx.send(ev).await;
    });

    let events = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
    )
    .boxed();
    Ok(ExecHandle {
        pid: Some(pid),
        stdin: req.interactive.then_some(in_tx),
        signal: Some(sig_tx),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_in_dir_with_env_stdin_exit_codes_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut req = ExecRequest::new(["sh", "-c", "pwd; echo $A $HOME >&2; cat; exit 4"]);
        req.cwd = Some("sub".into());
        req.env.insert("A".into(), "a".into());
        req.stdin = Some("in".into());
        let out = local_exec(dir.path(), req)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let root = dir.path().display().to_string();
        assert_eq!(out.stdout, format!("{root}/sub\nin"));
        assert_eq!(out.stderr, format!("a {root}\n"));
        assert_eq!(out.exit_code, 4);

        let mut req = ExecRequest::new(["sh", "-c", "sleep 5 & sleep 5"]);
        req.timeout_ms = Some(100);
        let h = local_exec(dir.path(), req).unwrap();
        let t0 = std::time::Instant::now();
        let e = h.collect().await.unwrap_err();
        assert_eq!(e.code, godel_core::ErrorCode::Timeout);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the whole group was killed"
        );
    }
}
