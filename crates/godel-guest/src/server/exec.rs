//! Exec in the guest: spawn a command in its own process group, pump its
//! stdout/stderr to the host under flow control, feed stdin from `Stdin`
//! frames, enforce the timeout, and report the exit status.
//!
//! Waiting: as PID 1 the agent must reap every child, including orphans, so
//! [`Procs::reap_forever`] calls `waitpid(-1)` and hands statuses of our own
//! commands to their exec threads; commands are spawned under the table's
//! lock so the reaper cannot see a pid before it is registered. Outside PID 1
//! (tests) each command is waited for by pid instead.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use godel_core::{Error, ExitStatus};
use parking_lot::{Condvar, Mutex};

use super::{Credit, Shared, StreamState};
use crate::protocol::{CHUNK, ExecStart, Frame, Message, errno_error};
use crate::sys::{self, WaitStatus};

/// How long output may keep flowing after the command exited (background
/// processes holding the pipes open must not delay the exit status forever).
const OUTPUT_GRACE: Duration = Duration::from_millis(250);

/// The table of commands the agent waits for.
pub struct Procs {
    reap_all: bool,
    waiting: Mutex<HashMap<i32, Sender<WaitStatus>>>,
    spawned: Condvar,
}

impl Procs {
    pub fn new(reap_all: bool) -> Self {
        Procs {
            reap_all,
            waiting: Mutex::new(HashMap::new()),
            spawned: Condvar::new(),
        }
    }

    fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<WaitStatus>)> {
        let (tx, rx) = mpsc::channel();
        if self.reap_all {
            let mut w = self.waiting.lock();
            let child = cmd.spawn()?;
            w.insert(child.id() as i32, tx);
            self.spawned.notify_all();
            Ok((child, rx))
        } else {
            let child = cmd.spawn()?;
            let pid = child.id() as i32;
            std::thread::spawn(move || {
                if let Ok((_, st)) = sys::wait(pid) {
                    let _ = tx.send(st);
                }
            });
            Ok((child, rx))
        }
    }

    /// PID 1's reaper loop: wait for any child; route our commands' statuses,
    /// drop orphans'. Never returns.
    pub fn reap_forever(&self) -> ! {
        loop {
            match sys::wait(-1) {
                Ok((pid, st)) => {
                    if let Some(tx) = self.waiting.lock().remove(&pid) {
                        let _ = tx.send(st);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    // No children at all: sleep until a command is spawned.
                    let mut w = self.waiting.lock();
                    self.spawned.wait_for(&mut w, Duration::from_secs(1));
                }
                Err(e) => {
                    eprintln!("godel-guest: waitpid: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The reader thread's view of a running exec.
pub(crate) struct ExecStream {
    pgid: i32,
    stdin: Option<Sender<Bytes>>,
    pub(crate) credit: Arc<Credit>,
}

impl ExecStream {
    /// Stdin input. Never finishes the stream (the exit does).
    pub(crate) fn input(&mut self, msg: Message, data: Bytes) -> bool {
        match msg {
            Message::Stdin => {
                if let Some(tx) = &self.stdin {
                    let _ = tx.send(data);
                }
            }
            Message::StdinClose => self.stdin = None,
            _ => {}
        }
        false
    }

    pub(crate) fn signal(&self, sig: i32) {
        if let Err(e) = sys::kill(-self.pgid, sig) {
            eprintln!("godel-guest: kill -{sig} group {}: {e}", self.pgid);
        }
    }
}

/// A user from the guest's `/etc/passwd`.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn lookup_user(sh: &Shared, name: &str) -> godel_core::Result<User> {
    let passwd = sh.cfg.root.join("etc/passwd");
    let text = std::fs::read_to_string(&passwd).map_err(|e| errno_error("read /etc/passwd", &e))?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7 && f[0] == name {
            let uid = f[2].parse().unwrap_or(u32::MAX);
            let gid = f[3].parse().unwrap_or(u32::MAX);
            if uid == u32::MAX || gid == u32::MAX {
                break;
            }
            return Ok(User {
                name: name.to_owned(),
                uid,
                gid,
                home: f[5].to_owned(),
            });
        }
    }
    Err(Error::not_found(format!("no user {name:?} in the guest")))
}

/// Start a command for stream `id`; replies `Started` or `Error`.
pub(crate) fn start(sh: Arc<Shared>, id: u32, req: ExecStart) {
    match spawn(&sh, id, req) {
        Ok(()) => {}
        Err(e) => sh.error(id, e),
    }
}

fn spawn(sh: &Arc<Shared>, id: u32, req: ExecStart) -> godel_core::Result<()> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return Err(Error::invalid("exec needs a command"));
    }
    let user = req
        .user
        .as_deref()
        .map(|u| lookup_user(sh, u))
        .transpose()?;
    let cwd = match &req.cwd {
        Some(c) => sh.resolve(c)?,
        None => {
            let ws = sh.resolve("")?;
            if ws.is_dir() { ws } else { sh.cfg.root.clone() }
        }
    };
    if !cwd.is_dir() {
        return Err(Error::not_found(format!(
            "working directory {} does not exist",
            sh.display_path(&cwd)
        )));
    }
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..]).env_clear();
    cmd.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    cmd.env("LANG", "C.UTF-8");
    match &user {
        Some(u) => {
            cmd.env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
            if sys::geteuid() == 0 {
                cmd.uid(u.uid).gid(u.gid);
            } else if sys::geteuid() != u.uid {
                return Err(Error::denied(format!(
                    "the agent cannot run commands as {}",
                    u.name
                )));
            }
        }
        None => {
            cmd.env("HOME", "/root")
                .env("USER", "root")
                .env("LOGNAME", "root");
        }
    }
    cmd.envs(&req.env).current_dir(&cwd).process_group(0);
    cmd.stdin(if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let (mut child, status_rx) = sh.procs.spawn(&mut cmd).map_err(|e| {
        let mut err = errno_error(format!("cannot start {:?}", req.argv[0]), &e);
        if e.kind() == io::ErrorKind::NotFound {
            err.message = format!("command not found: {}", req.argv[0]);
        }
        err
    })?;
    let pid = child.id() as i32;
    let credit = Credit::new();
    let stdin_tx = child.stdin.take().map(|mut pipe| {
        let (tx, rx) = mpsc::channel::<Bytes>();
        std::thread::spawn(move || {
            for chunk in rx {
                if pipe.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        tx
    });
    sh.streams.lock().insert(
        id,
        StreamState::Exec(ExecStream {
            pgid: pid,
            stdin: stdin_tx,
            credit: credit.clone(),
        }),
    );
    sh.reply(id, Message::Started { pid: pid as u32 });

    let finished = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut pumps = 0;
    if let Some(out) = child.stdout.take() {
        pump(sh, id, out, true, &credit, &finished, done_tx.clone());
        pumps += 1;
    }
    if let Some(err) = child.stderr.take() {
        pump(sh, id, err, false, &credit, &finished, done_tx.clone());
        pumps += 1;
    }
    drop(done_tx);
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(u64::MAX / 4));
    let sh = sh.clone();
    std::thread::spawn(move || {
        drop(child);
        let mut timed_out = false;
        let status = match status_rx.recv_timeout(timeout) {
            Ok(st) => Some(st),
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = sys::kill(-pid, libc::SIGKILL);
                status_rx.recv().ok()
            }
            Err(RecvTimeoutError::Disconnected) => None,
        };
        let grace_end = Instant::now() + OUTPUT_GRACE;
        for _ in 0..pumps {
            let left = grace_end.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        finished.store(true, Ordering::SeqCst);
        sh.streams.lock().remove(&id);
        let duration_ms = started.elapsed().as_millis() as u64;
        let (code, signal) = match status {
            Some(WaitStatus::Exited(c)) => (c, None),
            Some(WaitStatus::Signaled(s)) => (128 + s, Some(s)),
            None => {
                sh.error(id, Error::exec("lost track of the command's exit status"));
                return;
            }
        };
        sh.reply(
            id,
            Message::Exit(ExitStatus {
                code,
                signal,
                timed_out,
                duration_ms,
            }),
        );
    });
    Ok(())
}

fn pump(
    sh: &Arc<Shared>,
    id: u32,
    mut src: impl Read + Send + 'static,
    stdout: bool,
    credit: &Arc<Credit>,
    finished: &Arc<AtomicBool>,
    done: Sender<()>,
) {
    let sh = sh.clone();
    let credit = credit.clone();
    let finished = finished.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if finished.load(Ordering::SeqCst) {
                continue; // drain so background writers do not block
            }
            credit.take(n);
            let msg = if stdout {
                Message::Stdout
            } else {
                Message::Stderr
            };
            sh.send(&Frame::with_data(
                id,
                msg,
                Bytes::copy_from_slice(&buf[..n]),
            ));
        }
        let _ = done.send(());
    });
}
