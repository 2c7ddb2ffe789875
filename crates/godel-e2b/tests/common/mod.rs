//! A real [`E2bBackend`] for tests and the local example: every sandbox is a
//! directory on the host and commands are real processes (their own process
//! group, cwd and `HOME` = the workspace), like godel's `none` isolation.
//! Pause copies the workspace aside and kills its processes; resume restores
//! the copy under the same id. Nothing here is a mock of the E2B surface.

#![allow(dead_code)]

pub mod chain;
pub mod client;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use godel_core::{
    Error, ExecEvent, ExecHandle, ExecRequest, ExitStatus, FileEntry, FileKind, Result,
    RuntimeInfo, RuntimeState, SpawnSpec, new_runtime_id, workspace_relative,
};
use godel_e2b::E2bBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

struct Rt {
    info: RuntimeInfo,
    /// Process groups of running commands.
    pgids: Arc<Mutex<Vec<i32>>>,
}

/// Host-directory sandboxes keyed by team API keys.
pub struct HostBackend {
    root: PathBuf,
    keys: HashMap<String, String>,
    rts: Mutex<HashMap<String, Rt>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn killpg(pgid: i32, sig: i32) {
    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), s);
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let ft = e.file_type()?;
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

impl HostBackend {
    /// Sandboxes under `root`; `keys` maps API keys to teams.
    pub fn new(root: impl Into<PathBuf>, keys: &[(&str, &str)]) -> Self {
        HostBackend {
            root: root.into(),
            keys: keys
                .iter()
                .map(|(k, t)| (k.to_string(), t.to_string()))
                .collect(),
            rts: Mutex::new(HashMap::new()),
        }
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.root.join("ws").join(id)
    }

    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snap").join(id)
    }

    fn owned(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        lock(&self.rts)
            .get(id)
            .filter(|r| r.info.team == team)
            .map(|r| r.info.clone())
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))
    }

    fn running(&self, team: &str, id: &str) -> Result<PathBuf> {
        let info = self.owned(team, id)?;
        if info.state != RuntimeState::Running {
            return Err(Error::conflict(format!("runtime {id} is {}", info.state)));
        }
        Ok(self.workspace(id))
    }

    fn path(&self, team: &str, id: &str, path: &str) -> Result<PathBuf> {
        let ws = self.running(team, id)?;
        Ok(ws.join(workspace_relative(path)?))
    }

    fn kill_procs(&self, id: &str) {
        if let Some(rt) = lock(&self.rts).get(id) {
            for pg in lock(&rt.pgids).drain(..) {
                killpg(pg, 9);
            }
        }
    }

    fn set_state(&self, id: &str, st: RuntimeState) {
        if let Some(rt) = lock(&self.rts).get_mut(id) {
            rt.info.state = st;
            rt.info.updated_at = Utc::now();
        }
    }

    /// Number of runtimes alive (running or paused).
    pub fn live(&self) -> usize {
        lock(&self.rts).len()
    }
}

impl Drop for HostBackend {
    /// No process outlives its test.
    fn drop(&mut self) {
        for rt in lock(&self.rts).values() {
            for pg in lock(&rt.pgids).drain(..) {
                killpg(pg, 9);
            }
        }
    }
}

fn entry(ws: &Path, p: &Path) -> Result<FileEntry> {
    let md =
        std::fs::symlink_metadata(p).map_err(|e| Error::io(format!("stat {}", p.display()), &e))?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let rel = p
        .strip_prefix(ws)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned();
    Ok(FileEntry {
        name: p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: rel,
        kind,
        size: md.len(),
        mode: md.permissions().mode(),
        modified: md.modified().ok().map(chrono::DateTime::<Utc>::from),
        symlink_target: std::fs::read_link(p)
            .ok()
            .map(|t| t.to_string_lossy().into_owned()),
    })
}

#[async_trait]
impl E2bBackend for HostBackend {
    async fn authenticate(&self, api_key: &str) -> Result<String> {
        self.keys
            .get(api_key)
            .cloned()
            .ok_or_else(|| Error::unauthenticated("unknown API key"))
    }

    async fn create(&self, team: &str, spec: SpawnSpec) -> Result<RuntimeInfo> {
        let id = new_runtime_id();
        let ws = self.workspace(&id);
        std::fs::create_dir_all(&ws).map_err(|e| Error::io("create workspace", &e))?;
        let now = Utc::now();
        let info = RuntimeInfo {
            id: id.clone(),
            runtime: "host".into(),
            team: team.to_string(),
            state: RuntimeState::Running,
            spec,
            created_at: now,
            updated_at: now,
            reason: None,
            restored_from: None,
            handle: BTreeMap::new(),
            usage: None,
            pid: None,
        };
        lock(&self.rts).insert(
            id,
            Rt {
                info: info.clone(),
                pgids: Arc::default(),
            },
        );
        Ok(info)
    }

    async fn get(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        self.owned(team, id)
    }

    async fn locate(&self, id: &str) -> Result<RuntimeInfo> {
        lock(&self.rts)
            .get(id)
            .map(|r| r.info.clone())
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))
    }

    async fn list(&self, team: &str) -> Result<Vec<RuntimeInfo>> {
        Ok(lock(&self.rts)
            .values()
            .filter(|r| r.info.team == team)
            .map(|r| r.info.clone())
            .collect())
    }

    async fn list_all(&self) -> Result<Vec<RuntimeInfo>> {
        Ok(lock(&self.rts).values().map(|r| r.info.clone()).collect())
    }

    async fn kill(&self, team: &str, id: &str) -> Result<()> {
        self.owned(team, id)?;
        self.kill_procs(id);
        lock(&self.rts).remove(id);
        let _ = std::fs::remove_dir_all(self.workspace(id));
        let _ = std::fs::remove_dir_all(self.snapshot_dir(id));
        Ok(())
    }

    async fn pause(&self, team: &str, id: &str) -> Result<()> {
        self.running(team, id)?;
        self.kill_procs(id);
        let snap = self.snapshot_dir(id);
        let _ = std::fs::remove_dir_all(&snap);
        copy_tree(&self.workspace(id), &snap).map_err(|e| Error::io("snapshot", &e))?;
        std::fs::remove_dir_all(self.workspace(id)).map_err(|e| Error::io("stop", &e))?;
        self.set_state(id, RuntimeState::Paused);
        Ok(())
    }

    async fn resume(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        let info = self.owned(team, id)?;
        if info.state != RuntimeState::Paused {
            return Err(Error::conflict(format!("runtime {id} is not paused")));
        }
        std::fs::rename(self.snapshot_dir(id), self.workspace(id))
            .map_err(|e| Error::io("restore", &e))?;
        self.set_state(id, RuntimeState::Running);
        self.owned(team, id)
    }

    async fn set_labels(
        &self,
        team: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.owned(team, id)?;
        if let Some(rt) = lock(&self.rts).get_mut(id) {
            rt.info.spec.labels.extend(labels);
        }
        Ok(())
    }

    async fn exec(&self, team: &str, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        req.validate()?;
        let ws = self.running(team, id)?;
        let info = self.owned(team, id)?;
        let cwd = match &req.cwd {
            Some(c) => ws.join(workspace_relative(c)?),
            None => ws.clone(),
        };
        let mut cmd = tokio::process::Command::new(&req.cmd[0]);
        cmd.args(&req.cmd[1..])
            .current_dir(&cwd)
            .env("HOME", &ws)
            // No real user switch here; the name shows which user was asked for.
            .env("USER", req.user.as_deref().unwrap_or("user"))
            .envs(&info.spec.env)
            .envs(&req.env)
            .stdin(if req.interactive || req.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("start {:?}", req.cmd[0]), &e))?;
        let pid = child.id().ok_or_else(|| Error::exec("process vanished"))?;
        let pgids = lock(&self.rts)
            .get(id)
            .map(|r| r.pgids.clone())
            .unwrap_or_default();
        lock(&pgids).push(pid as i32);

        let stdin_tx = match child.stdin.take() {
            Some(mut w) => {
                let (tx, mut rx) = mpsc::channel::<Bytes>(16);
                let buffered = req.stdin.clone();
                tokio::spawn(async move {
                    if let Some(s) = buffered {
                        let _ = w.write_all(s.as_bytes()).await;
                    }
                    while let Some(b) = rx.recv().await {
                        if w.write_all(&b).await.is_err() {
                            break;
                        }
                        let _ = w.flush().await;
                    }
                });
                if req.interactive { Some(tx) } else { None }
            }
            None => None,
        };
        let (sig_tx, mut sig_rx) = mpsc::channel::<i32>(4);
        tokio::spawn(async move {
            while let Some(s) = sig_rx.recv().await {
                killpg(pid as i32, s);
            }
        });

        let (tx, rx) = mpsc::channel::<ExecEvent>(256);
        let mut out = child
            .stdout
            .take()
            .ok_or_else(|| Error::exec("no stdout"))?;
        let mut err = child
            .stderr
            .take()
            .ok_or_else(|| Error::exec("no stderr"))?;
        let (otx, etx) = (tx.clone(), tx.clone());
        let readers = [
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(n) = out.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = otx
                        .send(ExecEvent::Stdout {
                            data: Bytes::copy_from_slice(&buf[..n]),
                        })
                        .await;
                }
            }),
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = etx
                        .send(ExecEvent::Stderr {
                            data: Bytes::copy_from_slice(&buf[..n]),
                        })
                        .await;
                }
            }),
        ];
        let timeout = req.timeout();
        let started = Instant::now();
        let _ = tx.send(ExecEvent::Started { pid }).await;
        tokio::spawn(async move {
            let (status, timed_out) = tokio::select! {
                st = child.wait() => (st, false),
                _ = tokio::time::sleep(timeout) => {
                    killpg(pid as i32, 9);
                    (child.wait().await, true)
                }
            };
            // Output of grandchildren that keep the pipes open is not awaited forever.
            for r in readers {
                let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
            }
            lock(&pgids).retain(|p| *p != pid as i32);
            let ev = match status {
                Ok(st) => ExecEvent::Exit(match st.signal() {
                    Some(sig) => ExitStatus {
                        code: 128 + sig,
                        signal: Some(sig),
                        timed_out,
                        duration_ms: started.elapsed().as_millis() as u64,
                    },
                    None => ExitStatus {
                        code: st.code().unwrap_or(-1),
                        signal: None,
                        timed_out,
                        duration_ms: started.elapsed().as_millis() as u64,
                    },
                }),
                Err(e) => ExecEvent::Error(Error::io("wait", &e)),
            };
            let _ = tx.send(ev).await;
        });
        Ok(ExecHandle {
            pid: Some(pid),
            stdin: stdin_tx,
            signal: Some(sig_tx),
            events: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
        })
    }

    async fn read_file(&self, team: &str, id: &str, path: &str) -> Result<Bytes> {
        let p = self.path(team, id, path)?;
        tokio::fs::read(&p)
            .await
            .map(Bytes::from)
            .map_err(|e| Error::io(format!("read {path}"), &e))
    }

    async fn write_file(&self, team: &str, id: &str, path: &str, data: Bytes) -> Result<()> {
        let p = self.path(team, id, path)?;
        if let Some(parent) = p.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("mkdir", &e))?;
        }
        tokio::fs::write(&p, &data)
            .await
            .map_err(|e| Error::io(format!("write {path}"), &e))
    }

    async fn list_dir(&self, team: &str, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        let ws = self.running(team, id)?;
        let p = self.path(team, id, path)?;
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&p).map_err(|e| Error::io(format!("list {path}"), &e))?;
        for e in rd.flatten() {
            out.push(entry(&ws, &e.path())?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn stat(&self, team: &str, id: &str, path: &str) -> Result<FileEntry> {
        let ws = self.running(team, id)?;
        entry(&ws, &self.path(team, id, path)?)
    }

    async fn make_dir(&self, team: &str, id: &str, path: &str) -> Result<()> {
        let p = self.path(team, id, path)?;
        tokio::fs::create_dir_all(&p)
            .await
            .map_err(|e| Error::io(format!("mkdir {path}"), &e))
    }

    async fn rename(&self, team: &str, id: &str, from: &str, to: &str) -> Result<()> {
        let a = self.path(team, id, from)?;
        let b = self.path(team, id, to)?;
        if let Some(parent) = b.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("mkdir", &e))?;
        }
        tokio::fs::rename(&a, &b)
            .await
            .map_err(|e| Error::io(format!("rename {from}"), &e))
    }

    async fn remove(&self, team: &str, id: &str, path: &str, recursive: bool) -> Result<()> {
        let p = self.path(team, id, path)?;
        let md = tokio::fs::symlink_metadata(&p)
            .await
            .map_err(|e| Error::io(format!("remove {path}"), &e))?;
        let r = if md.is_dir() {
            if recursive {
                tokio::fs::remove_dir_all(&p).await
            } else {
                tokio::fs::remove_dir(&p).await
            }
        } else {
            tokio::fs::remove_file(&p).await
        };
        r.map_err(|e| Error::io(format!("remove {path}"), &e))
    }
}

/// A server on a loopback port over a fresh [`HostBackend`].
pub struct TestServer {
    pub url: String,
    pub backend: Arc<HostBackend>,
    pub server: godel_e2b::E2bServer,
    pub task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// The API key of team `alpha` in test servers.
pub const KEY: &str = "e2b_key_alpha";
/// The API key of team `beta`.
pub const OTHER_KEY: &str = "e2b_key_beta";

impl TestServer {
    /// Serve on 127.0.0.1 (any port). The reaper is not started: tests call
    /// `server.reap_expired` with the time they want.
    pub async fn start(cfg: godel_e2b::ServeConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(HostBackend::new(
            dir.path(),
            &[(KEY, "alpha"), (OTHER_KEY, "beta")],
        ));
        let server = godel_e2b::E2bServer::new(backend.clone(), cfg);
        let app = server.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            url: format!("http://{addr}"),
            backend,
            server,
            task,
            _dir: dir,
        }
    }
}
