//! [`FakeRuntime`]: a configurable fake [`RuntimeProvider`] over host
//! directories with injectable faults, good enough to stand in for a real
//! runtime in end-to-end tests of the control plane and the E2B server.
//!
//! Each spawned runtime is a directory under the fake's root
//! ([`FakeRuntime::dir`]); a local repository named in the spec is copied in.
//! Exec really runs the command there through [`crate::local_exec`] (argv;
//! `sh -c` for scripts), with the spec's `env` under the request's; file
//! calls are real file operations in the directory (tar upload/download
//! too); snapshot copies it into the target's `workspace/`, restore (and so
//! fork) copies it back; pause stops the runtime's process groups
//! (`SIGSTOP`) and resume continues them; terminate kills them and removes
//! the directory. No isolation whatsoever: tests only.
//!
//! What makes it a fake is that its behaviour is set at run time:
//! name and [`Capabilities`] ([`FakeRuntime::with_capabilities`]),
//! availability ([`FakeRuntime::set_available`]), per operation
//! ([`Op::Spawn`] — also restore —, [`Op::Exec`]) failure with a code N
//! times or always, hang (for a while or until cancelled) and latency;
//! spawned runtimes can be made to die after a delay or at once
//! ([`FakeRuntime::kill`]) or to stop answering exec
//! ([`FakeRuntime::set_unresponsive`]). Every lifecycle call (`spawn`,
//! `adopt`, `exec`, `terminate`, `status`, `pause`, `resume`, `snapshot`,
//! `restore`) is recorded with its `tokio::time::Instant` for assertions on
//! order, counts and timing ([`FakeRuntime::calls`], [`FakeRuntime::count`]).
//!
//! Several instances with different names (`flaky-a`, `flaky-b`) can be
//! registered side by side to test fallback chains. Clones share everything.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use godel_core::{
    Availability, Capabilities, Error, ErrorCode, ExecHandle, ExecRequest, FileEntry, Result,
    RuntimeProvider, SandboxState, SandboxStatus, SnapshotArtifact, SnapshotInfo, SnapshotRequest,
    SnapshotTarget, SpawnSpec, Spawned, workspace_relative,
};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::exec::{kill_group, local_exec};
use crate::fs::{copy_tree, entry_of, io_err};

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
    /// The spec's environment, under every exec's own.
    env: BTreeMap<String, String>,
    /// Process groups of the commands started here.
    groups: Vec<u32>,
    state: SandboxState,
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
            self.state = SandboxState::Error;
            self.reason = Some("died (injected fault)".into());
            self.die_at = None;
        }
    }
}

struct State {
    capabilities: Capabilities,
    behaviour: HashMap<Op, Behaviour>,
    available: Availability,
    runtimes: BTreeMap<String, Rt>,
    calls: Vec<Call>,
}

/// The fake runtime. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct FakeRuntime {
    name: String,
    root: Arc<tempfile::TempDir>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("name", &self.name)
            .finish()
    }
}

impl FakeRuntime {
    /// A runtime named `name` that succeeds at everything, with its
    /// runtimes under a fresh temporary directory (removed on drop of the
    /// last clone).
    pub fn new(name: impl Into<String>) -> Self {
        let root = tempfile::Builder::new()
            .prefix("godel-fake-")
            .tempdir()
            .expect("a temporary directory for the fake runtime");
        FakeRuntime {
            name: name.into(),
            root: Arc::new(root),
            state: Arc::new(Mutex::new(State {
                capabilities: Self::default_capabilities(),
                behaviour: HashMap::new(),
                available: Availability::yes("fake runtime (tests only)"),
                runtimes: BTreeMap::new(),
                calls: Vec::new(),
            })),
        }
    }

    /// What it offers unless told otherwise: workspace snapshots, pause,
    /// streaming exec and stdin, isolation `none`.
    pub fn default_capabilities() -> Capabilities {
        Capabilities {
            workspace_snapshots: true,
            pause: true,
            streaming_exec: true,
            stdin: true,
            isolation: "none".into(),
            ..Default::default()
        }
    }

    /// The same runtime answering `capabilities()` with `caps`.
    pub fn with_capabilities(self, caps: Capabilities) -> Self {
        self.lock().capabilities = caps;
        self
    }

    /// The directory the runtimes' directories are made in.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The directory of runtime `id` (its workspace), while it exists.
    pub fn dir(&self, id: &str) -> Option<PathBuf> {
        self.lock().runtimes.get(id).map(|r| r.dir.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
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
                rt.state = SandboxState::Error;
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

    fn add_runtime(
        &self,
        id: &str,
        dir: PathBuf,
        spec: &SpawnSpec,
        die_after: Option<Duration>,
    ) -> Spawned {
        self.lock().runtimes.insert(
            id.to_string(),
            Rt {
                dir: dir.clone(),
                env: spec.env.clone().into_iter().collect(),
                groups: Vec::new(),
                state: SandboxState::Running,
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

    /// Send `sig` to every process group started in runtime `id`.
    fn signal_all(&self, id: &str, sig: Signal) {
        let groups = self
            .lock()
            .runtimes
            .get(id)
            .map(|r| r.groups.clone())
            .unwrap_or_default();
        for g in groups {
            kill_group(g, sig as i32);
        }
    }

    fn set_state(&self, id: &str, to: SandboxState) -> Result<()> {
        let mut st = self.lock();
        let rt = st
            .runtimes
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("runtime {id}")))?;
        rt.refresh();
        rt.state = rt.state.transition(to)?;
        Ok(())
    }
}

#[async_trait]
impl RuntimeProvider for FakeRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.lock().capabilities.clone()
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
        Ok(self.add_runtime(id, dir, spec, b.die_after))
    }

    /// Re-attaches a runtime it knows, or one whose handle's `dir` still
    /// exists (a new `FakeRuntime` after a control-plane restart).
    async fn adopt(&self, id: &str, spec: &SpawnSpec, handle: &Spawned) -> Result<Option<Spawned>> {
        self.record("adopt", id);
        {
            let mut st = self.lock();
            if let Some(rt) = st.runtimes.get_mut(id) {
                rt.refresh();
                return Ok((!rt.state.is_terminal()).then(|| handle.clone()));
            }
        }
        let dir = handle
            .handle
            .get("dir")
            .and_then(|d| d.as_str())
            .map(PathBuf::from);
        Ok(dir
            .filter(|d| d.is_dir())
            .map(|dir| self.add_runtime(id, dir, spec, None)))
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        self.record("terminate", id);
        self.signal_all(id, Signal::SIGKILL);
        let rt = self.lock().runtimes.remove(id);
        if let Some(rt) = rt {
            let _ = std::fs::remove_dir_all(&rt.dir);
        }
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<SandboxStatus> {
        self.record("status", id);
        let mut st = self.lock();
        let rt = st
            .runtimes
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("runtime {id}")))?;
        rt.refresh();
        let mut s = SandboxStatus::new(rt.state);
        s.reason = rt.reason.clone();
        Ok(s)
    }

    async fn list(&self) -> Result<Vec<String>> {
        Ok(self.lock().runtimes.keys().cloned().collect())
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.record("pause", id);
        self.set_state(id, SandboxState::Paused)?;
        self.signal_all(id, Signal::SIGSTOP);
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.record("resume", id);
        self.set_state(id, SandboxState::Running)?;
        self.signal_all(id, Signal::SIGCONT);
        Ok(())
    }

    async fn exec(&self, id: &str, mut req: ExecRequest) -> Result<ExecHandle> {
        self.record("exec", id);
        req.validate()?;
        let dir = self.dir_of(id)?;
        let (unresponsive, paused, env) = match self.lock().runtimes.get(id) {
            Some(r) => (
                r.unresponsive,
                r.state == SandboxState::Paused,
                r.env.clone(),
            ),
            None => (false, false, BTreeMap::new()),
        };
        if paused {
            return Err(Error::conflict(format!("runtime {id} is paused")));
        }
        if unresponsive {
            tokio::time::sleep(req.timeout()).await;
            return Err(Error::timeout(format!(
                "runtime {id} did not answer within {} ms (injected)",
                req.timeout().as_millis()
            )));
        }
        self.inject(Op::Exec).await?;
        for (k, v) in env {
            req.env.entry(k).or_insert(v);
        }
        let h = local_exec(&dir, req)?;
        if let (Some(pid), Some(rt)) = (h.pid, self.lock().runtimes.get_mut(id)) {
            rt.groups.push(pid);
        }
        Ok(h)
    }

    /// The fake's processes run on the host: its sandbox ports are the
    /// host's loopback ports.
    async fn connect_port(&self, id: &str, port: u16) -> Result<godel_core::PortStream> {
        self.dir_of(id)?;
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| {
                Error::unavailable(format!("port {port} of sandbox {id} is not open: {e}"))
            })?;
        Ok(Box::new(s))
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
        crate::fs::list(&p, &rel)
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
        crate::fs::remove(&p, &rel, recursive)
    }

    async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()> {
        let (p, _) = self.path_in(id, path)?;
        crate::fs::unpack_tar(&p, &tar)
    }

    async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes> {
        let (p, rel) = self.path_in(id, path)?;
        crate::fs::pack_tar(&p, &rel).map(Bytes::from)
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
        spec: &SpawnSpec,
    ) -> Result<Spawned> {
        self.record("restore", id);
        let b = self.inject(Op::Spawn).await?;
        let dir = self.root.path().join(id);
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(&snapshot.dir.join("workspace"), &dir).map_err(|e| io_err("restore", e))?;
        Ok(self.add_runtime(id, dir, spec, b.die_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use godel_core::ExecEvent;

    #[tokio::test]
    async fn exec_runs_local_processes_in_the_workspace() {
        let f = FakeRuntime::new("fault");
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
        let f = FakeRuntime::new("flaky-a");
        f.fail(Op::Spawn, ErrorCode::SpawnError, 2);
        for _ in 0..2 {
            let e = f.spawn("x", &SpawnSpec::default()).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::SpawnError);
            assert!(e.message.contains("flaky-a"));
        }
        f.die_after_spawn(Some(Duration::from_secs(5)));
        f.spawn("x", &SpawnSpec::default()).await.unwrap();
        assert_eq!(f.count("spawn"), 3);
        assert_eq!(f.status("x").await.unwrap().state, SandboxState::Running);
        tokio::time::advance(Duration::from_secs(5)).await;
        let st = f.status("x").await.unwrap();
        assert_eq!(st.state, SandboxState::Error);
        assert!(f.live().is_empty());
    }

    #[tokio::test]
    async fn tar_pause_snapshot_restore_and_adopt_work_on_real_files() {
        let f = FakeRuntime::new("fake");
        let mut spec = SpawnSpec::default();
        spec.env.insert("FROM_SPEC".into(), "yes".into());
        let sp = f.spawn("a", &spec).await.unwrap();
        let mut req = ExecRequest::new(["sh", "-c", "mkdir -p d && echo $FROM_SPEC > d/x"]);
        req.env.insert("UNUSED".into(), "1".into());
        assert_eq!(f.exec_collect("a", req).await.unwrap().exit_code, 0);
        let tar = f.download_tar("a", "d").await.unwrap();
        f.upload_tar("a", "e", tar).await.unwrap();
        assert_eq!(&f.read_file("a", "e/x").await.unwrap()[..], b"yes\n");
        f.rename("a", "e/x", "y").await.unwrap();
        assert_eq!(f.stat("a", "y").await.unwrap().size, 4);
        f.remove("a", "e", false).await.unwrap();

        f.pause("a").await.unwrap();
        let e = f.exec("a", ExecRequest::new(["true"])).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::Conflict);
        f.resume("a").await.unwrap();

        let snap_dir = tempfile::tempdir().unwrap();
        let target = SnapshotTarget {
            snapshot_id: "s".into(),
            dir: snap_dir.path().to_path_buf(),
        };
        f.snapshot("a", &SnapshotRequest::default(), &target)
            .await
            .unwrap();
        let info: SnapshotInfo = serde_json::from_value(serde_json::json!({
            "id": "s", "runtime_id": "a", "runtime": "fake", "team": "t",
            "created_at": "2024-01-01T00:00:00Z", "size_bytes": 0, "kind": "workspace",
            "dir": snap_dir.path(),
        }))
        .unwrap();
        f.restore("b", &info, &spec).await.unwrap();
        assert_eq!(&f.read_file("b", "d/x").await.unwrap()[..], b"yes\n");

        // A new instance adopts a runtime whose directory is still there.
        let g = FakeRuntime::new("fake");
        assert!(g.adopt("a", &spec, &sp).await.unwrap().is_some());
        assert_eq!(g.dir("a").unwrap(), f.dir("a").unwrap());
    }
}
