//! `pods/exec` over WebSocket, like the kubelet's streaming server.
//! Protocols `v5.channel.k8s.io` (stdin half-close with `[255, 0]`) and
//! `v4.channel.k8s.io`; frames are `[channel] + bytes` with 0 stdin,
//! 1 stdout, 2 stderr, 3 status (a `Status` JSON: `Success`, or `Failure`
//! with reason `NonZeroExitCode` and an `ExitCode` cause), 4 resize.
//!
//! The command runs as a local process whose working directory and `HOME`
//! are the pod's directory; arguments starting with `/home/user` are
//! rewritten to that directory, so godel's tar copies work for real.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::status::{ApiError, exit_status};

const HOME: &str = "/home/user";

/// Rewrite a `/home/user[/...]` argument to the pod directory.
fn rewrite(arg: &str, dir: &Path) -> String {
    match arg.strip_prefix(HOME) {
        Some("") => dir.display().to_string(),
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", dir.display()),
        _ => arg.to_string(),
    }
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let mut argv = Vec::new();
    let mut want_stdin = false;
    let mut container = None;
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "command" => argv.push(v.into_owned()),
            "stdin" => want_stdin = v == "true" || v == "1",
            "container" => container = Some(v.into_owned()),
            _ => {}
        }
    }
    let pod = shared
        .store
        .lock()
        .get("pods", &ns, &name)
        .map(|e| e.obj.clone());
    let Some(pod) = pod else {
        return ApiError::not_found("pods", &name).into_response();
    };
    if pod["status"]["phase"] != "Running" {
        return ApiError::bad_request(format!(
            "pod {name} is not running (phase {})",
            pod["status"]["phase"].as_str().unwrap_or("Pending")
        ))
        .into_response();
    }
    let spec_container = &pod["spec"]["containers"][0];
    if let Some(c) = &container
        && spec_container["name"] != c.as_str()
    {
        return ApiError::bad_request(format!("container {c} is not valid for pod {name}"))
            .into_response();
    }
    if argv.is_empty() {
        return ApiError::bad_request("you must specify at least 1 command").into_response();
    }
    let dir = shared.pod_dir(&ns, &name);
    let argv: Vec<String> = argv.iter().map(|a| rewrite(a, &dir)).collect();
    let env: Vec<(String, String)> = spec_container["env"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let ws = ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"]);
    let v5 = ws
        .selected_protocol()
        .is_some_and(|p| p == "v5.channel.k8s.io");
    ws.max_message_size(64 << 20)
        .on_upgrade(move |socket| run(socket, argv, dir, env, want_stdin, v5))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, channel: u8, tx: mpsc::Sender<Message>) {
    let Some(mut r) = reader else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn run(
    socket: WebSocket,
    argv: Vec<String>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    want_stdin: bool,
    v5: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&dir)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8");
    for (k, v) in &env {
        cmd.env(k, rewrite(v, &dir));
    }
    cmd.env("HOME", &dir)
        .stdin(if want_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let msg = format!("exec: {:?}: {e}\n", argv[0]);
            let _ = tx.send(frame(2, msg.as_bytes())).await;
            let _ = tx
                .send(frame(3, exit_status(code, &argv).to_string().as_bytes()))
                .await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let stdin = child.stdin.take();
    let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) if !b.is_empty() => match b[0] {
                    0 => {
                        if let Some(s) = stdin.as_mut()
                            && s.write_all(&b[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    255 if b.get(1) == Some(&0) => stdin = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        drop(stdin);
        // v5 clients half-close stdin and keep the connection until the status
        // arrives; a v5 client going away means the exec was abandoned.
        if v5 {
            let _ = kill_tx.send(());
        }
    });
    let out = tokio::spawn(pump(child.stdout.take(), 1, tx.clone()));
    let err = tokio::spawn(pump(child.stderr.take(), 2, tx.clone()));
    let mut killed = false;
    let status = tokio::select! {
        s = child.wait() => s,
        Ok(()) = &mut kill_rx => {
            killed = true;
            let _ = child.start_kill();
            child.wait().await
        }
    };
    if killed {
        out.abort();
        err.abort();
    } else {
        let _ = out.await;
        let _ = err.await;
    }
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        }
        Err(_) => 1,
    };
    let _ = tx
        .send(frame(3, exit_status(code, &argv).to_string().as_bytes()))
        .await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
}
