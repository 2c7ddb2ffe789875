//! Exec on a remote sandbox: `process.Process/Start` over Connect
//! server-streaming (JSON codec), turned into godel [`ExecEvent`]s. Stdin goes
//! through `SendInput` + `CloseStdin`, signals through `SendSignal` (E2B knows
//! SIGKILL and SIGTERM; other signals are sent as SIGTERM). The request's
//! timeout is enforced here: the command is killed and the exit is reported
//! with `timed_out`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use godel_core::{Error, ExecEvent, ExecHandle, ExecRequest, ExitStatus, Result};
use tokio::sync::mpsc;

use super::client::{Client, EnvdTarget, transport_error};
use super::files::abs;
use crate::connect::{Codec, ConnectError, EnvelopeDecoder, parse_end_stream};
use crate::pb::process::process_event::{EndEvent, Event, data_event};
use crate::pb::process::process_input::Input;
use crate::pb::process::process_selector::Selector;
use crate::pb::process::{
    CloseStdinRequest, CloseStdinResponse, ProcessConfig, ProcessInput, ProcessSelector,
    SendInputRequest, SendInputResponse, SendSignalRequest, SendSignalResponse, Signal,
    StartRequest, StartResponse,
};

/// Reads envelopes from a streaming response body.
pub(crate) struct EnvelopeReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    dec: EnvelopeDecoder,
}

/// One frame of a server stream.
pub(crate) enum Frame {
    Message(Bytes),
    End(Option<ConnectError>),
}

impl EnvelopeReader {
    pub fn new(resp: reqwest::Response) -> Self {
        EnvelopeReader {
            body: resp.bytes_stream().boxed(),
            dec: EnvelopeDecoder::new(),
        }
    }

    /// The next frame; a body that stops without an end-of-stream is an error.
    pub async fn next(&mut self) -> Result<Frame> {
        loop {
            if let Some(env) = self.dec.next_envelope()? {
                let data = env.data()?;
                if env.is_end() {
                    return Ok(Frame::End(parse_end_stream(&data)?));
                }
                return Ok(Frame::Message(data));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.dec.push(&chunk),
                Some(Err(e)) => return Err(transport_error("stream", &e)),
                None => {
                    return Err(Error::unavailable(
                        "the stream ended without an end-of-stream message",
                    ));
                }
            }
        }
    }
}

fn selector(pid: u32) -> Option<ProcessSelector> {
    Some(ProcessSelector {
        selector: Some(Selector::Pid(pid)),
    })
}

async fn send_input(client: &Client, t: &EnvdTarget, pid: u32, data: Bytes) -> Result<()> {
    let req = SendInputRequest {
        process: selector(pid),
        input: Some(ProcessInput {
            input: Some(Input::Stdin(data.to_vec())),
        }),
    };
    client
        .unary::<_, SendInputResponse>(t, "process.Process/SendInput", &req)
        .await
        .map(drop)
}

async fn close_stdin(client: &Client, t: &EnvdTarget, pid: u32) -> Result<()> {
    let req = CloseStdinRequest {
        process: selector(pid),
    };
    client
        .unary::<_, CloseStdinResponse>(t, "process.Process/CloseStdin", &req)
        .await
        .map(drop)
}

async fn send_signal(client: &Client, t: &EnvdTarget, pid: u32, sig: i32) -> Result<()> {
    let signal = if sig == 9 {
        Signal::Sigkill
    } else {
        Signal::Sigterm
    };
    let req = SendSignalRequest {
        process: selector(pid),
        signal: signal as i32,
    };
    client
        .unary::<_, SendSignalResponse>(t, "process.Process/SendSignal", &req)
        .await
        .map(drop)
}

fn parse_signal(status: &str) -> Option<i32> {
    let name = status.strip_prefix("signal: ")?;
    Some(match name.trim() {
        "killed" => 9,
        "terminated" => 15,
        "interrupt" => 2,
        "hangup" => 1,
        "aborted" => 6,
        "segmentation fault" => 11,
        other => other
            .strip_prefix("signal ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(9),
    })
}

/// An envd end event as a godel exit status.
pub(crate) fn exit_status(end: &EndEvent, started: Instant) -> ExitStatus {
    let signal = if end.exited {
        None
    } else {
        parse_signal(&end.status)
    };
    ExitStatus {
        code: signal.map(|s| 128 + s).unwrap_or(end.exit_code),
        signal,
        timed_out: false,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Start a command and stream its events.
pub(super) async fn start(client: &Client, t: EnvdTarget, req: ExecRequest) -> Result<ExecHandle> {
    let started = Instant::now();
    let (cmd, args) = req
        .cmd
        .split_first()
        .ok_or_else(|| Error::invalid("exec needs a command"))?;
    let start = StartRequest {
        process: Some(ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            envs: req
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: req.cwd.as_deref().map(abs),
        }),
        pty: None,
        tag: None,
        stdin: Some(req.interactive || req.stdin.is_some()),
    };
    let timeout = req.timeout();
    // The server's deadline is a backstop; the local one below kills the command.
    let resp = client
        .open_stream(
            &t,
            "process.Process/Start",
            &start,
            Some(timeout + Duration::from_secs(30)),
            req.user.as_deref(),
        )
        .await?;
    let mut reader = EnvelopeReader::new(resp);
    let pid = match reader.next().await? {
        Frame::Message(m) => {
            let msg: StartResponse = Codec::Json.decode(&m)?;
            match msg.event.and_then(|e| e.event) {
                Some(Event::Start(s)) => s.pid,
                _ => return Err(Error::exec("envd did not send a start event first")),
            }
        }
        Frame::End(Some(e)) => return Err(e.into_godel()),
        Frame::End(None) => return Err(Error::exec("envd ended the stream before starting")),
    };

    let stdin = if req.interactive {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let (c, t) = (client.clone(), t.clone());
        let buffered = req.stdin.clone();
        tokio::spawn(async move {
            if let Some(s) = buffered
                && send_input(&c, &t, pid, Bytes::from(s)).await.is_err()
            {
                return;
            }
            while let Some(b) = rx.recv().await {
                if send_input(&c, &t, pid, b).await.is_err() {
                    return;
                }
            }
            let _ = close_stdin(&c, &t, pid).await;
        });
        Some(tx)
    } else {
        if let Some(s) = req.stdin.clone() {
            let (c, t) = (client.clone(), t.clone());
            tokio::spawn(async move {
                if send_input(&c, &t, pid, Bytes::from(s)).await.is_ok() {
                    let _ = close_stdin(&c, &t, pid).await;
                }
            });
        }
        None
    };

    let (sig_tx, mut sig_rx) = mpsc::channel::<i32>(4);
    {
        let (c, t) = (client.clone(), t.clone());
        tokio::spawn(async move {
            while let Some(sig) = sig_rx.recv().await {
                let _ = send_signal(&c, &t, pid, sig).await;
            }
        });
    }

    let (tx, rx) = mpsc::channel::<ExecEvent>(256);
    let (c, kill_target) = (client.clone(), t.clone());
    tokio::spawn(async move {
        if tx.send(ExecEvent::Started { pid }).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let frame = tokio::select! {
                f = reader.next() => f,
                _ = &mut deadline => {
                    let _ = send_signal(&c, &kill_target, pid, 9).await;
                    let st = ExitStatus {
                        code: 137,
                        signal: Some(9),
                        timed_out: true,
                        duration_ms: started.elapsed().as_millis() as u64,
                    };
                    let _ = tx.send(ExecEvent::Exit(st)).await;
                    return;
                }
                _ = tx.closed() => return,
            };
            let ev = match frame {
                Ok(Frame::Message(m)) => match Codec::Json.decode::<StartResponse>(&m) {
                    Ok(msg) => match msg.event.and_then(|e| e.event) {
                        Some(Event::Data(d)) => match d.output {
                            Some(data_event::Output::Stdout(b))
                            | Some(data_event::Output::Pty(b)) => {
                                ExecEvent::Stdout { data: b.into() }
                            }
                            Some(data_event::Output::Stderr(b)) => {
                                ExecEvent::Stderr { data: b.into() }
                            }
                            None => continue,
                        },
                        Some(Event::End(end)) => ExecEvent::Exit(exit_status(&end, started)),
                        _ => continue,
                    },
                    Err(e) => ExecEvent::Error(e),
                },
                Ok(Frame::End(Some(e))) => ExecEvent::Error(e.into_godel()),
                Ok(Frame::End(None)) => {
                    ExecEvent::Error(Error::exec("the command's stream ended without an exit"))
                }
                Err(e) => ExecEvent::Error(e),
            };
            let last = matches!(ev, ExecEvent::Exit(_) | ExecEvent::Error(_));
            if tx.send(ev).await.is_err() || last {
                return;
            }
        }
    });

    Ok(ExecHandle {
        pid: Some(pid),
        stdin,
        signal: Some(sig_tx),
        events: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_become_exit_statuses() {
        let t = Instant::now();
        let ok = EndEvent {
            exit_code: 3,
            exited: true,
            status: "exit status 3".into(),
            error: None,
        };
        assert_eq!(exit_status(&ok, t).code, 3);
        let killed = EndEvent {
            exit_code: -1,
            exited: false,
            status: "signal: killed".into(),
            error: None,
        };
        let st = exit_status(&killed, t);
        assert_eq!((st.code, st.signal), (137, Some(9)));
        assert_eq!(parse_signal("signal: terminated"), Some(15));
    }
}
