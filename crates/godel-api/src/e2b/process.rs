//! `process.Process`: commands in a sandbox, kept in a per-sandbox process
//! table (pid → stdin sender, signal sender, output fan-out, tag) so that
//! background commands, `Connect`, `List`, `SendInput`, `CloseStdin` and
//! `SendSignal` work as with E2B's envd.
//!
//! Each started command gets a pump task that reads its [`ExecHandle`] events
//! and fans them out to every attached stream (the `Start` stream and any
//! `Connect` streams); with nobody attached the output is drained, so a
//! background command never blocks on a full pipe. A process leaves the table
//! when it ends; the end event is then sent to everyone attached.
//!
//! No PTY: `pty` requests run on pipes and their output comes back as `pty`
//! data; `Update` (resize) is accepted and ignored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use godel_core::{Error, ExecEvent, ExecRequest, ExitStatus};
use tokio::sync::mpsc;

use super::envd::{Ctx, StreamIn, StreamOut, stream_codec, stream_response, unary, unimplemented};
use super::registry::Entry;
use godel_e2b::connect::parse_timeout;
use godel_e2b::pb::process::process_event::{self, DataEvent, EndEvent, Event, data_event};
use godel_e2b::pb::process::process_input::Input;
use godel_e2b::pb::process::process_selector::Selector;
use godel_e2b::pb::process::stream_input_request::Event as InputEvent;
use godel_e2b::pb::process::{
    CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
    ListResponse, ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector,
    SendInputRequest, SendInputResponse, SendSignalRequest, SendSignalResponse, Signal,
    StartRequest, StartResponse, StreamInputRequest, StreamInputResponse, UpdateRequest,
    UpdateResponse,
};

/// Commands live as long as their sandbox: E2B has no per-command limit.
const COMMAND_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Keepalive interval when the client does not ask for one.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(50);

/// What attached streams receive: events, or an error ending the stream
/// abnormally (the sandbox was killed or paused under the command).
type Item = Result<ProcessEvent, Error>;

struct Subscribers {
    list: Vec<mpsc::Sender<Item>>,
    ended: bool,
}

/// One running command.
pub(crate) struct Proc {
    pid: u32,
    tag: Option<String>,
    config: ProcessConfig,
    pty: bool,
    stdin: Mutex<Option<mpsc::Sender<Bytes>>>,
    signal: Option<mpsc::Sender<i32>>,
    subs: tokio::sync::Mutex<Subscribers>,
    /// The sandbox is going away: streams end with an error, not an exit.
    aborted: AtomicBool,
}

/// How the error broadcast to a process's streams when its sandbox goes
/// away begins; [`follow`] turns it into a dropped connection.
const ABORT_PREFIX: &str = "the connection to the sandbox ended";

fn abort_error(pid: u32) -> Error {
    Error::unavailable(format!(
        "{ABORT_PREFIX} before the stream of process {pid} completed"
    ))
}

fn is_abort(e: &Error) -> bool {
    e.code == godel_core::ErrorCode::Unavailable && e.message.starts_with(ABORT_PREFIX)
}

impl Proc {
    /// Attach a stream; `None` when the process already ended.
    async fn subscribe(&self) -> Option<mpsc::Receiver<Item>> {
        let mut s = self.subs.lock().await;
        if s.ended {
            return None;
        }
        let (tx, rx) = mpsc::channel(256);
        s.list.push(tx);
        Some(rx)
    }

    async fn broadcast(&self, ev: Item, last: bool) {
        let mut s = self.subs.lock().await;
        if s.ended {
            return;
        }
        let mut keep = Vec::with_capacity(s.list.len());
        for tx in s.list.drain(..) {
            if tx.send(ev.clone()).await.is_ok() {
                keep.push(tx);
            }
        }
        s.list = if last { Vec::new() } else { keep };
        s.ended |= last;
    }

    fn stdin_sender(&self) -> Option<mpsc::Sender<Bytes>> {
        self.stdin.lock().clone()
    }

    fn close_stdin(&self) {
        drop(self.stdin.lock().take())
    }
}

/// The process table of one sandbox.
#[derive(Default)]
pub(crate) struct ProcessTable {
    map: Mutex<HashMap<u32, Arc<Proc>>>,
    synthetic: AtomicU32,
}

impl ProcessTable {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<u32, Arc<Proc>>> {
        self.map.lock()
    }

    /// Insert under `pid`, or under a fresh synthetic pid when it is taken or unknown.
    fn insert(&self, pid: Option<u32>, make: impl FnOnce(u32) -> Proc) -> Arc<Proc> {
        let mut map = self.lock();
        let pid = match pid {
            Some(p) if p != 0 && !map.contains_key(&p) => p,
            _ => loop {
                let p = 1_000_000 + self.synthetic.fetch_add(1, Ordering::Relaxed);
                if !map.contains_key(&p) {
                    break p;
                }
            },
        };
        let proc = Arc::new(make(pid));
        map.insert(pid, proc.clone());
        proc
    }

    fn find(&self, sel: Option<&ProcessSelector>) -> Option<Arc<Proc>> {
        let map = self.lock();
        match sel.and_then(|s| s.selector.as_ref())? {
            Selector::Pid(pid) => map.get(pid).cloned(),
            Selector::Tag(tag) => map
                .values()
                .find(|p| p.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
        }
    }

    fn remove(&self, proc: &Arc<Proc>) {
        let mut map = self.lock();
        if map.get(&proc.pid).is_some_and(|p| Arc::ptr_eq(p, proc)) {
            map.remove(&proc.pid);
        }
    }

    fn infos(&self) -> Vec<ProcessInfo> {
        let mut v: Vec<ProcessInfo> = self
            .lock()
            .values()
            .map(|p| ProcessInfo {
                config: Some(p.config.clone()),
                pid: p.pid,
                tag: p.tag.clone(),
            })
            .collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    /// Forget every process (the sandbox is being stopped). Attached streams
    /// lose their connection mid-stream, as envd's do when its sandbox goes away.
    pub fn clear(&self) {
        let procs: Vec<Arc<Proc>> = self.lock().drain().map(|(_, p)| p).collect();
        for p in procs {
            p.aborted.store(true, Ordering::SeqCst);
            tokio::spawn(async move {
                p.broadcast(Err(abort_error(p.pid)), true).await;
            });
        }
    }
}

fn selector_text(sel: Option<&ProcessSelector>) -> String {
    match sel.and_then(|s| s.selector.as_ref()) {
        Some(Selector::Pid(p)) => format!("process with pid {p}"),
        Some(Selector::Tag(t)) => format!("process with tag {t:?}"),
        None => "process (no selector given)".to_string(),
    }
}

fn lookup(ctx: &Ctx, sel: Option<&ProcessSelector>) -> godel_core::Result<Arc<Proc>> {
    ctx.entry
        .procs
        .find(sel)
        .ok_or_else(|| Error::not_found(format!("{} not found", selector_text(sel))))
}

pub(super) async fn dispatch(ctx: Ctx, method: &str, headers: HeaderMap, body: Body) -> Response {
    match method {
        "Start" => start(ctx, headers, body).await,
        "Connect" => connect(ctx, headers, body).await,
        "StreamInput" => stream_input(ctx, headers, body).await,
        "List" => {
            unary(&headers, body, |_: ListRequest| async move {
                Ok(ListResponse {
                    processes: ctx.entry.procs.infos(),
                })
            })
            .await
        }
        "SendInput" => {
            unary(&headers, body, |r: SendInputRequest| async move {
                let p = lookup(&ctx, r.process.as_ref())?;
                send_input(&p, r.input).await?;
                Ok(SendInputResponse {})
            })
            .await
        }
        "SendSignal" => {
            unary(&headers, body, |r: SendSignalRequest| async move {
                let p = lookup(&ctx, r.process.as_ref())?;
                let sig = match Signal::try_from(r.signal) {
                    Ok(Signal::Sigterm) => 15,
                    Ok(Signal::Sigkill) => 9,
                    _ => return Err(Error::invalid(format!("unsupported signal {}", r.signal))),
                };
                let tx = p
                    .signal
                    .as_ref()
                    .ok_or_else(|| Error::invalid("this process cannot be signalled"))?;
                tx.send(sig)
                    .await
                    .map_err(|_| Error::not_found(format!("process {} already ended", p.pid)))?;
                Ok(SendSignalResponse {})
            })
            .await
        }
        "CloseStdin" => {
            unary(&headers, body, |r: CloseStdinRequest| async move {
                lookup(&ctx, r.process.as_ref())?.close_stdin();
                Ok(CloseStdinResponse {})
            })
            .await
        }
        "Update" => {
            unary(&headers, body, |r: UpdateRequest| async move {
                lookup(&ctx, r.process.as_ref())?;
                Ok(UpdateResponse {})
            })
            .await
        }
        other => unimplemented("process.Process", other),
    }
}

async fn send_input(p: &Proc, input: Option<ProcessInput>) -> godel_core::Result<()> {
    let data = match input.and_then(|i| i.input) {
        Some(Input::Stdin(b)) | Some(Input::Pty(b)) => b,
        None => return Ok(()),
    };
    let tx = p.stdin_sender().ok_or_else(|| {
        Error::invalid(format!(
            "stdin of process {} is closed or was not enabled (start it with stdin=True)",
            p.pid
        ))
    })?;
    tx.send(Bytes::from(data))
        .await
        .map_err(|_| Error::not_found(format!("process {} already ended", p.pid)))
}

fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

fn event(e: Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
}

fn end_event(st: &ExitStatus) -> EndEvent {
    match st.signal {
        Some(sig) => EndEvent {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_name(sig)),
            error: st.timed_out.then(|| "command timed out".to_string()),
        },
        None => EndEvent {
            exit_code: st.code,
            exited: true,
            status: format!("exit status {}", st.code),
            error: None,
        },
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        9 => "killed".into(),
        15 => "terminated".into(),
        2 => "interrupt".into(),
        1 => "hangup".into(),
        n => format!("signal {n}"),
    }
}

/// Read the command's events and fan them out until it ends.
async fn pump(proc: Arc<Proc>, mut events: BoxStream<'static, ExecEvent>, entry: Weak<Entry>) {
    let mut end = None;
    while let Some(ev) = events.next().await {
        let out = match ev {
            ExecEvent::Started { .. } => continue,
            ExecEvent::Stdout { data } if proc.pty => data_event::Output::Pty(data.to_vec()),
            ExecEvent::Stderr { data } if proc.pty => data_event::Output::Pty(data.to_vec()),
            ExecEvent::Stdout { data } => data_event::Output::Stdout(data.to_vec()),
            ExecEvent::Stderr { data } => data_event::Output::Stderr(data.to_vec()),
            ExecEvent::Exit(st) => {
                end = Some(end_event(&st));
                break;
            }
            ExecEvent::Error(e) => {
                end = Some(EndEvent {
                    exit_code: -1,
                    exited: false,
                    status: "error".into(),
                    error: Some(e.message),
                });
                break;
            }
        };
        let ev = event(Event::Data(DataEvent { output: Some(out) }));
        proc.broadcast(Ok(ev), false).await;
    }
    let end = end.unwrap_or_else(|| EndEvent {
        exit_code: -1,
        exited: false,
        status: "unknown".into(),
        error: Some("the command's output ended without an exit status".into()),
    });
    if let Some(e) = entry.upgrade() {
        e.procs.remove(&proc);
    }
    proc.close_stdin();
    let last = if proc.aborted.load(Ordering::SeqCst) {
        Err(abort_error(proc.pid))
    } else {
        Ok(event(Event::End(end)))
    };
    proc.broadcast(last, true).await;
}

/// Forward events from `rx` to the client, with keepalives and the deadline.
async fn follow<M: prost::Message + serde::Serialize>(
    out: StreamOut,
    mut rx: mpsc::Receiver<Item>,
    keepalive: Duration,
    deadline: Option<Duration>,
    wrap: fn(ProcessEvent) -> M,
) {
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Err(e)) if is_abort(&e) => return out.sever().await,
                Some(Err(e)) => return out.fail(&e).await,
                Some(Ok(ev)) => {
                    let last = matches!(ev.event, Some(Event::End(_)));
                    if !out.send(&wrap(ev)).await {
                        return;
                    }
                    if last {
                        break;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !out.send(&wrap(event(Event::Keepalive(process_event::KeepAlive {})))).await {
                    return;
                }
            }
            _ = &mut sleep => {
                out.fail(&Error::timeout("the stream's deadline (Connect-Timeout-Ms) passed")).await;
                return;
            }
            _ = out.closed() => return,
        }
    }
    out.end(None).await;
}

fn as_start(ev: ProcessEvent) -> StartResponse {
    StartResponse { event: Some(ev) }
}

fn as_connect(ev: ProcessEvent) -> ConnectResponse {
    ConnectResponse { event: Some(ev) }
}

async fn start(ctx: Ctx, headers: HeaderMap, body: Body) -> Response {
    let codec = match stream_codec(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // The request is read before answering: hyper may end a request body
    // early once the response has started.
    let req: Result<StartRequest, Error> = StreamIn::new(codec, body).one().await;
    let (out, resp) = stream_response(codec);
    let keepalive = keepalive_interval(&headers);
    let deadline = parse_timeout(&headers);
    tokio::spawn(async move {
        let req = match req {
            Ok(r) => r,
            Err(e) => return out.fail(&e).await,
        };
        match launch(&ctx, req).await {
            Ok((proc, rx)) => {
                let start = event(Event::Start(process_event::StartEvent { pid: proc.pid }));
                if !out.send(&as_start(start)).await {
                    return;
                }
                follow(out, rx, keepalive, deadline, as_start).await;
            }
            Err(e) => out.fail(&e).await,
        }
    });
    resp
}

/// Start the command, register it and attach the caller's stream.
async fn launch(
    ctx: &Ctx,
    req: StartRequest,
) -> godel_core::Result<(Arc<Proc>, mpsc::Receiver<Item>)> {
    let config = req.process.unwrap_or_default();
    if config.cmd.is_empty() {
        return Err(Error::invalid("process.cmd is required"));
    }
    let pty = req.pty.is_some();
    let keep_stdin = req.stdin.unwrap_or(true) || pty;
    let mut cmd = vec![config.cmd.clone()];
    cmd.extend(config.args.iter().cloned());
    let exec = ExecRequest {
        cmd,
        env: config
            .envs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: config.cwd.clone().filter(|c| !c.is_empty()),
        timeout_ms: Some(COMMAND_LIFETIME.as_millis() as u64),
        stdin: None,
        interactive: keep_stdin,
        user: ctx.user.clone(),
    };
    let handle = ctx
        .state
        .control
        .exec(&ctx.entry.caller, ctx.id(), exec)
        .await?;
    let (tx, rx) = mpsc::channel(256);
    let proc = ctx.entry.procs.insert(handle.pid, |pid| Proc {
        pid,
        tag: req.tag.clone(),
        config,
        pty,
        stdin: Mutex::new(handle.stdin),
        signal: handle.signal,
        subs: tokio::sync::Mutex::new(Subscribers {
            list: vec![tx],
            ended: false,
        }),
        aborted: AtomicBool::new(false),
    });
    tokio::spawn(pump(
        proc.clone(),
        handle.events,
        Arc::downgrade(&ctx.entry),
    ));
    Ok((proc, rx))
}

async fn connect(ctx: Ctx, headers: HeaderMap, body: Body) -> Response {
    let codec = match stream_codec(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let req: Result<ConnectRequest, Error> = StreamIn::new(codec, body).one().await;
    let (out, resp) = stream_response(codec);
    let keepalive = keepalive_interval(&headers);
    let deadline = parse_timeout(&headers);
    tokio::spawn(async move {
        let req = match req {
            Ok(r) => r,
            Err(e) => return out.fail(&e).await,
        };
        let proc = match lookup(&ctx, req.process.as_ref()) {
            Ok(p) => p,
            Err(e) => return out.fail(&e).await,
        };
        let Some(rx) = proc.subscribe().await else {
            return out
                .fail(&Error::not_found(format!(
                    "process {} already ended",
                    proc.pid
                )))
                .await;
        };
        let start = event(Event::Start(process_event::StartEvent { pid: proc.pid }));
        if !out.send(&as_connect(start)).await {
            return;
        }
        follow(out, rx, keepalive, deadline, as_connect).await;
    });
    resp
}

/// Client stream: `start{process}` then `data{input}`… in order.
async fn stream_input(ctx: Ctx, headers: HeaderMap, body: Body) -> Response {
    let codec = match stream_codec(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Input is forwarded as it arrives; the answer comes when the client
    // closes its side (a client stream answers once).
    let mut input = StreamIn::new(codec, body);
    let mut proc: Option<Arc<Proc>> = None;
    let mut failure = None;
    loop {
        let msg: Option<StreamInputRequest> = match input.next().await {
            Ok(m) => m,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let Some(msg) = msg else { break };
        let res = match msg.event {
            Some(InputEvent::Start(s)) => lookup(&ctx, s.process.as_ref()).map(|p| {
                proc = Some(p);
            }),
            Some(InputEvent::Data(d)) => match &proc {
                Some(p) => send_input(p, d.input).await,
                None => Err(Error::invalid("StreamInput data before start")),
            },
            Some(InputEvent::Keepalive(_)) | None => Ok(()),
        };
        if let Err(e) = res {
            failure = Some(e);
            break;
        }
    }
    let (out, resp) = stream_response(codec);
    tokio::spawn(async move {
        if let Some(e) = failure {
            return out.fail(&e).await;
        }
        out.send(&StreamInputResponse {}).await;
        out.end(None).await;
    });
    resp
}
