//! A fault-injecting [`RuntimeProvider`] for tests (cargo feature `fault`).
//!
//! `FaultProvider` is a real, if simple, runtime: each spawned runtime gets a
//! directory under a private temporary root, exec runs the command as a local
//! process in that directory (no isolation whatsoever: tests only), file calls
//! work on it and snapshots copy it. What makes it useful is that its
//! behaviour is set at run time, per operation ([`Op::Spawn`], [`Op::Exec`]):
//! fail with a code N times or always, hang (for a while or until cancelled),
//! add latency; spawned runtimes can be made to die after a delay or at once
//! ([`FaultProvider::kill`]) or to stop answering exec
//! ([`FaultProvider::set_unresponsive`]). Every call is recorded with its
//! `tokio::time::Instant` for assertions on order, counts and timing.
//!
//! Several instances with different names (`flaky-a`, `flaky-b`) can be
//! registered side by side to test fallback chains.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use godel_core::{
    Availability, Capabilities, Error, ErrorCode, ExecEvent, ExecHandle, ExecRequest, ExitStatus,
    FileEntry, FileKind, Result, RuntimeProvider, RuntimeState, RuntimeStatus, SnapshotArtifact,
    SnapshotInfo, SnapshotRequest, SnapshotTarget, SpawnSpec, Spawned, workspace_relative,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The operations whose behaviour can be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Spawn,
    Exec,
}

/// How an operation behaves. Applied in order: latency, hang, failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Added to every call.
    pub latency: Duration,
    /// Hang before answering: `Some(None)` until cancelled, `Some(Some(d))` for `d`.
    pub hang: Option<Option<Duration>>,
    /// Fail with this code; `times: None` = always, `Some(n)` = the next n calls.
    pub fail: Option<(ErrorCode, Option<u32>)>,
    /// (spawn only) The runtime dies this long after spawning.
    pub die_after: Option<Duration>,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `spawn`, `exec`, `terminate`, `status`, `restore`, ...
    pub op: &'static str,
    pub id: String,
    pub at: Instant,
}

struct Rt {
    dir: PathBuf,
    state: RuntimeState,
    reason: Option<String>,
    die_at: Option<Instant>,
    unresponsive: bool,
}

impl Rt {
    fn refresh(&mut self) {
        if let Some(t) = self.die_at
            && Instant::now() >= t
            && !self.state.is_terminal()
        {
            self.state = RuntimeState::Error;
            self.reason = Some("died (injected fault)".into());
            self.die_at = None;
        }
    }
}

struct State {
    behaviour: HashMap<Op, Behaviour>,
    available: Availability,
    runtimes: BTreeMap<String, Rt>,
    calls: Vec<Call>,
}

/// The fault-injecting provider. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct FaultProvider {
    name: String,
    root: Arc<tempfile::TempDir>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProvider")
            .field("name", &self.name)
            .finish()
    }
}

impl FaultProvider {
    /// A provider named `name` that succeeds at everything.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("godel-fault-")
            .tempdir()
            .map_err(|e| Error::io("fault provider temp dir", &e))?;
        Ok(FaultProvider {
            name: name.into(),
            root: Arc::new(root),
            state: Arc::new(Mutex::new(State {
                behaviour: HashMap::new(),
                available: Availability::yes("fault runtime (tests only)"),
                runtimes: BTreeMap::new(),
                calls: Vec::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace an operation's behaviour.
    pub fn set(&self, op: Op, b: Behaviour) {
        self.lock().behaviour.insert(op, b);
    }

    /// Back to succeeding at `op`.
    pub fn succeed(&self, op: Op) {
        self.set(op, Behaviour::default());
    }

    /// Fail the next `times` calls of `op` with `code`.
    pub fn fail(&self, op: Op, code: ErrorCode, times: u32) {
        self.lock().behaviour.entry(op).or_default().fail = Some((code, Some(times)));
    }

    /// Fail every call of `op` with `code`.
    pub fn fail_always(&self, op: Op, code: ErrorCode) {
        self.lock().behaviour.entry(op).or_default().fail = Some((code, None));
    }

    /// Hang calls of `op` for `d` (`None`: until cancelled).
    pub fn hang(&self, op: Op, d: Option<Duration>) {
        self.lock().behaviour.entry(op).or_default().hang = Some(d);
    }

    /// Add latency to calls of `op`.
    pub fn slow(&self, op: Op, d: Duration) {
        self.lock().behaviour.entry(op).or_default().latency = d;
    }

    /// Runtimes spawned from now on die `d` after spawning.
    pub fn die_after_spawn(&self, d: Option<Duration>) {
        self.lock()
            .behaviour
            .entry(Op::Spawn)
            .or_default()
            .die_after = d;
    }

    /// What `available()` answers.
    pub fn set_available(&self, available: bool, reason: &str) {
        self.lock().available = if available {
            Availability::yes(reason)
        } else {
            Availability::no(reason)
        };
    }

    /// Make a runtime die now (its status turns `error`).
    pub fn kill(&self, id: &str, reason: &str) -> bool {
        match self.lock().runtimes.get_mut(id) {
            Some(rt) => {
                rt.state = RuntimeState::Error;
                rt.reason = Some(reason.to_string());
                true
            }
            None => false,
        }
    }

    /// Make a runtime's exec hang until its timeout (`true`) or answer again.
    pub fn set_unresponsive(&self, id: &str, unresponsive: bool) -> bool {
        match self.lock().runtimes.get_mut(id) {
            Some(rt) => {
                rt.unresponsive = unresponsive;
                true
            }
            None => false,
        }
    }

    /// Forget the recorded calls.
    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Every recorded call, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// When each call of `op` started.
    pub fn times(&self, op: &str) -> Vec<Instant> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.at)
            .collect()
    }

    /// Ids of live (non-terminal) runtimes.
    pub fn live(&self) -> Vec<String> {
        let mut st = self.lock();
        st.runtimes
            .iter_mut()
            .filter_map(|(id, rt)| {
                rt.refresh();
                (!rt.state.is_terminal()).then(|| id.clone())
            })
            .collect()
    }

    fn record(&self, op: &'static str, id: &str) {
        self.lock().calls.push(Call {
            op,
            id: id.to_string(),
            at: Instant::now(),
        });
    }

    /// Apply latency, hang and failure of `op`.
    async fn inject(&self, op: Op) -> Result<Behaviour> {
        let b = self.lock().behaviour.get(&op).cloned().unwrap_or_default();
        if !b.latency.is_zero() {
            tokio::time::sleep(b.latency).await;
        }
        match b.hang {
            Some(None) => futures::future::pending::<()>().await,
            Some(Some(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        let mut st = self.lock();
        if let Some(entry) = st.behaviour.get_mut(&op)
            && let Some((code, times)) = entry.fail
        {
            let fire = match times {
                None => true,
                Some(0) => false,
                Some(n) => {
                    entry.fail = if n > 1 {
                        Some((code, Some(n - 1)))
                    } else {
                        None
                    };
                    true
                }
            };
            if fire {
                return Err(Error::new(
                    code,
                    format!("injected {code} from runtime {}", self.name),
                ));
            }
        }
        Ok(b)
    }

    fn dir_of(&self, id: &str) -> Result<PathBuf> {
        let mut st = self.lock();
        let rt = st
            .runtimes
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("runtime {id}")))?;
        rt.refresh();
        if rt.state.is_terminal() {
            return Err(Error::conflict(format!("runtime {id} is {}", rt.state)));
        }
        Ok(rt.dir.clone())
    }

    fn path_in(&self, id: &str, path: &str) -> Result<(PathBuf, String)> {
        let rel = workspace_relative(path)?;
        Ok((self.dir_of(id)?.join(&rel), rel))
    }

    fn add_runtime(&self, id: &str, dir: PathBuf, die_after: Option<Duration>) -> Spawned {
        self.lock().runtimes.insert(
            id.to_string(),
            Rt {
                dir: dir.clone(),
                state: RuntimeState::Running,
                reason: None,
                die_at: die_after.map(|d| Instant::now() + d),
                unresponsive: false,
            },
        );
        let mut handle = BTreeMap::new();
        handle.insert(
            "dir".to_string(),
            serde_json::Value::String(dir.display().to_string()),
        );
        Spawned { handle, pid: None }
    }
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::io(what, &e)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut total = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            total += copy_tree(&entry.path(), &dest)?;
        } else if ty.is_file() {
            total += std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(total)
}

fn entry_of(path: &Path, rel: &str) -> Result<FileEntry> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::symlink_metadata(path).map_err(|e| io_err(rel, e))?;
    let kind = if md.is_dir() {
        FileKind::Dir
    } else if md.is_file() {
        FileKind::File
    } else if md.file_type().is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    let name = Path::new(rel)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(FileEntry {
        name,
        path: rel.to_string(),
        kind,
        size: md.len(),
        mode: md.permissions().mode() & 0o7777,
        modified: md.modified().ok().map(chrono_time),
        symlink_target: std::fs::read_link(path)
            .ok()
            .map(|p| p.display().to_string()),
    })
}

fn chrono_time(t: std::time::SystemTime) -> chrono::DateTime<chrono::Utc> {
    t.into()
}

/// Run `req` as a local process in `dir`, streaming events.
fn run_local(dir: PathBuf, req: ExecRequest) -> Result<ExecHandle> {
    use std::os::unix::process::ExitStatusExt;
    let cwd = match &req.cwd {
        Some(c) => dir.join(workspace_relative(c)?),
        None => dir,
    };
    let keep_stdin = req.interactive || req.stdin.is_some();
    let mut child = tokio::process::Command::new(&req.cmd[0])
        .args(&req.cmd[1..])
        .current_dir(&cwd)
        .envs(&req.env)
        .stdin(if keep_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::exec(format!("cannot start {:?}: {e}", req.cmd[0])))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<ExecEvent>(64);
    if let Some(p) = pid {
        // The channel is empty: `Started` always comes first.
        let _ = tx.try_send(ExecEvent::Started { pid: p });
    }
    let (sig_tx, mut sig_rx) = mpsc::channel::<i32>(4);
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
    let mut stdin = child.stdin.take();
    let initial = req.stdin.clone();
    let interactive = req.interactive;
    tokio::spawn(async move {
        if let Some(mut w) = stdin.take() {
            if let Some(s) = initial {
                let _ = w.write_all(s.as_bytes()).await;
            }
            if interactive {
                while let Some(b) = in_rx.recv().await {
                    if w.write_all(&b).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut readers = Vec::new();
    for (out, is_err) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            false,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            true,
        ),
    ] {
        let Some(mut out) = out else { continue };
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
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
        let deadline = started + timeout;
        let mut timed_out = false;
        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                Some(_sig) = sig_rx.recv() => { let _ = child.start_kill(); }
                _ = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    let _ = child.start_kill();
                }
            }
        };
        for r in readers {
            let _ = r.await;
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
        pid,
        stdin: interactive.then_some(in_tx),
        signal: Some(sig_tx),
        events,
    })
}

#[async_trait]
impl RuntimeProvider for FaultProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            workspace_snapshots: true,
            pause: true,
            streaming_exec: true,
            stdin: true,
            isolation: "none".into(),
            ..Default::default()
        }
    }

    async fn available(&self) -> Availability {
        self.lock().available.clone()
    }

    async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned> {
        self.record("spawn", id);
        spec.validate()?;
        let b = self.inject(Op::Spawn).await?;
        if self.lock().runtimes.contains_key(id) {
            return Err(Error::conflict(format!("runtime {id} already exists")));
        }
        let dir = self.root.path().join(id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("workspace", e))?;
        // A local repository's files are copied in (no git involved).
        if let Some(repo) = spec.repo.as_deref().map(Path::new).filter(|p| p.is_dir()) {
            copy_tree(repo, &dir).map_err(|e| io_err("copying the repository", e))?;
        }
        Ok(self.add_runtime(id, dir, b.die_after))
    }

    async fn adopt(
        &self,
        id: &str,
        _spec: &SpawnSpec,
        handle: &Spawned,
    ) -> Result<Option<Spawned>> {
        self.record("adopt", id);
        let mut st = self.lock();
        Ok(match st.runtimes.get_mut(id) {
            Some(rt) => {
                rt.refresh();
                (!rt.state.is_terminal()).then(|| handle.clone())
            }
            None => None,
        })
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        self.record("terminate", id);
        let rt = self.lock().runtimes.remove(id);
        if let Some(rt) = rt {
            let _ = std::fs::remove_dir_all(&rt.dir);
        }
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<RuntimeStatus> {
        self.record("status", id);
        let mut st = self.lock();
        let rt = st
            .runtimes
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("runtime {id}")))?;
        rt.refresh();
        let mut s = RuntimeStatus::new(rt.state);
        s.reason = rt.reason.clone();
        Ok(s)
    }

    async fn list(&self) -> Result<Vec<String>> {
        Ok(self.lock().runtimes.keys().cloned().collect())
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.record("pause", id);
        let mut st = self.lock();
        let rt = st
            .runtimes
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("runtime {id}")))?;
        rt.state = rt.state.transition(RuntimeState::Paused)?;
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.record("resume", id);
        let mut st = self.lock();
        let rt = st
            .runtimes
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("runtime {id}")))?;
        rt.state = rt.state.transition(RuntimeState::Running)?;
        Ok(())
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        self.record("exec", id);
        req.validate()?;
        let dir = self.dir_of(id)?;
        let unresponsive = self.lock().runtimes.get(id).is_some_and(|r| r.unresponsive);
        if unresponsive {
            tokio::time::sleep(req.timeout()).await;
            return Err(Error::timeout(format!(
                "runtime {id} did not answer within {} ms (injected)",
                req.timeout().as_millis()
            )));
        }
        self.inject(Op::Exec).await?;
        run_local(dir, req)
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes> {
        let (p, rel) = self.path_in(id, path)?;
        std::fs::read(p)
            .map(Bytes::from)
            .map_err(|e| io_err(&rel, e))
    }

    async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()> {
        let (p, rel) = self.path_in(id, path)?;
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(&rel, e))?;
        }
        std::fs::write(p, &data).map_err(|e| io_err(&rel, e))
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        let (p, rel) = self.path_in(id, path)?;
        let mut out = Vec::new();
        for e in std::fs::read_dir(&p).map_err(|e| io_err(&rel, e))? {
            let e = e.map_err(|e| io_err(&rel, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            out.push(entry_of(&e.path(), &child)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileEntry> {
        let (p, rel) = self.path_in(id, path)?;
        entry_of(&p, &rel)
    }

    async fn make_dir(&self, id: &str, path: &str) -> Result<()> {
        let (p, rel) = self.path_in(id, path)?;
        std::fs::create_dir_all(p).map_err(|e| io_err(&rel, e))
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let (a, rel) = self.path_in(id, from)?;
        let (b, _) = self.path_in(id, to)?;
        std::fs::rename(a, b).map_err(|e| io_err(&rel, e))
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let (p, rel) = self.path_in(id, path)?;
        let res = if p.is_dir() {
            if recursive {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_dir(p)
            }
        } else {
            std::fs::remove_file(p)
        };
        res.map_err(|e| io_err(&rel, e))
    }

    async fn upload_tar(&self, _id: &str, _path: &str, _tar: Bytes) -> Result<()> {
        Err(Error::invalid(
            "the fault runtime does not support tar upload",
        ))
    }

    async fn download_tar(&self, _id: &str, _path: &str) -> Result<Bytes> {
        Err(Error::invalid(
            "the fault runtime does not support tar download",
        ))
    }

    async fn snapshot(
        &self,
        id: &str,
        _req: &SnapshotRequest,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact> {
        self.record("snapshot", id);
        let dir = self.dir_of(id)?;
        let size =
            copy_tree(&dir, &target.dir.join("workspace")).map_err(|e| io_err("snapshot", e))?;
        Ok(SnapshotArtifact {
            size_bytes: size,
            kind: "workspace".into(),
            data: BTreeMap::new(),
        })
    }

    async fn restore(
        &self,
        id: &str,
        snapshot: &SnapshotInfo,
        _spec: &SpawnSpec,
    ) -> Result<Spawned> {
        self.record("restore", id);
        let b = self.inject(Op::Spawn).await?;
        let dir = self.root.path().join(id);
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(&snapshot.dir.join("workspace"), &dir).map_err(|e| io_err("restore", e))?;
        Ok(self.add_runtime(id, dir, b.die_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_runs_local_processes_in_the_workspace() {
        let f = FaultProvider::new("fault").unwrap();
        f.spawn("rt-1", &SpawnSpec::default()).await.unwrap();
        f.write_file("rt-1", "a.txt", Bytes::from_static(b"hi"))
            .await
            .unwrap();
        let out = f
            .exec_collect(
                "rt-1",
                ExecRequest::new(["sh", "-c", "cat a.txt; echo err >&2; exit 3"]),
            )
            .await
            .unwrap();
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
            ("hi", "err\n", 3)
        );
        let mut req = ExecRequest::new(["cat"]);
        req.stdin = Some("piped".into());
        assert_eq!(f.exec_collect("rt-1", req).await.unwrap().stdout, "piped");
        let mut req = ExecRequest::new(["sleep", "5"]);
        req.timeout_ms = Some(100);
        assert_eq!(
            f.exec_collect("rt-1", req).await.unwrap_err().code,
            ErrorCode::Timeout
        );
        let mut h = f
            .exec("rt-1", ExecRequest::new(["echo", "x"]))
            .await
            .unwrap();
        assert!(matches!(
            h.events.next().await,
            Some(ExecEvent::Started { .. })
        ));
        let names: Vec<String> = f
            .list_dir("rt-1", "")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a.txt"]);
        f.terminate("rt-1").await.unwrap();
        assert_eq!(
            f.status("rt-1").await.unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[tokio::test(start_paused = true)]
    async fn injected_failures_count_down_and_deaths_show_in_status() {
        let f = FaultProvider::new("flaky-a").unwrap();
        f.fail(Op::Spawn, ErrorCode::SpawnError, 2);
        for _ in 0..2 {
            let e = f.spawn("x", &SpawnSpec::default()).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::SpawnError);
            assert!(e.message.contains("flaky-a"));
        }
        f.die_after_spawn(Some(Duration::from_secs(5)));
        f.spawn("x", &SpawnSpec::default()).await.unwrap();
        assert_eq!(f.count("spawn"), 3);
        assert_eq!(f.status("x").await.unwrap().state, RuntimeState::Running);
        tokio::time::advance(Duration::from_secs(5)).await;
        let st = f.status("x").await.unwrap();
        assert_eq!(st.state, RuntimeState::Error);
        assert!(f.live().is_empty());
    }
}
