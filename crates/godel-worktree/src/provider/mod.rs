//! `WorktreeProvider`: the `RuntimeProvider` of godel's embedded runtime.
//! It wires the parts together: stores and shared checkouts
//! ([`crate::store`], [`crate::lower`]), workspaces ([`crate::workspace`]),
//! one [`Jail`] per runtime from the isolator the spawn asks for (every
//! process goes through `Jail::launch`), streamed exec ([`crate::exec`]),
//! confined files ([`crate::files`], [`crate::tarball`]) and git snapshots
//! ([`crate::snapshot`]). Runtimes live in memory; what `adopt` needs after a
//! daemon restart is in the returned handle (and in
//! `worktree/state/<id>/handle.json`, so `terminate` can clean up a runtime
//! it never adopted).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use cap_std::fs::Dir;
use godel_core::{
    Availability, Capabilities, Error, Event, EventSink, ExecHandle, ExecRequest, FileEntry,
    Isolation, Result, RuntimeProvider, SandboxState, SandboxStatus, SnapshotArtifact,
    SnapshotInfo, SnapshotRequest, SnapshotTarget, SpawnSpec, Spawned, WorkspaceMode, null_sink,
    workspace_relative,
};
use godel_sandbox::{
    HostIsolator, Isolator, Jail, JailConfig, JailLimits, JailVolume, ProcessSpec,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::exec::ProcessTable;
use crate::layout::{Layout, remove_tree, validate_id};
use crate::lower::Lowers;
use crate::objects::{ObjectStore, ObjectStores, source_path};
use crate::workspace::{Materialize, WorkspaceInfo};
use crate::{exec, files, git, overlay, snapshot, tarball, workspace};

mod setup;
use setup::check_volumes;

/// How the daemon configures the worktree runtime.
pub struct WorktreeConfig {
    /// `$GODEL_HOME`.
    pub home: PathBuf,
    /// Isolator for `Isolation::Sandbox`; when `None`, such spawns fail with `UNAVAILABLE`.
    pub sandbox: Option<Arc<dyn Isolator>>,
    /// Isolator for `Isolation::None` (the host isolator by default).
    pub host: Arc<dyn Isolator>,
    pub events: EventSink,
    /// Finds built templates (the control plane's registry) for spawns
    /// that name one; `None`: only built-in template names are accepted.
    pub templates: Option<godel_core::TemplateResolver>,
}

impl WorktreeConfig {
    /// Defaults: no sandbox isolator, the host isolator for `isolation: none`, no events.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        WorktreeConfig {
            home: home.into(),
            sandbox: None,
            host: Arc::new(HostIsolator),
            events: null_sink(),
            templates: None,
        }
    }

    pub fn with_sandbox(mut self, isolator: Arc<dyn Isolator>) -> Self {
        self.sandbox = Some(isolator);
        self
    }

    pub fn with_templates(mut self, resolver: godel_core::TemplateResolver) -> Self {
        self.templates = Some(resolver);
        self
    }

    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }
}

/// What `adopt` needs, persisted by the control plane as `Spawned::handle`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    version: u32,
    workspace: WorkspaceInfo,
    isolation: Isolation,
    #[serde(default)]
    sandbox: serde_json::Value,
}

/// One live runtime.
struct Runtime {
    info: WorkspaceInfo,
    isolation: Isolation,
    isolator: String,
    sandbox: Arc<dyn Jail>,
    root: Arc<Dir>,
    paused: AtomicBool,
    /// Process groups of execs that may still be alive (killed on terminate).
    processes: Arc<ProcessTable>,
}

impl Runtime {
    fn handle(&self) -> Handle {
        Handle {
            version: 1,
            workspace: self.info.clone(),
            isolation: self.isolation,
            sandbox: self.sandbox.handle(),
        }
    }

    fn spawned(&self) -> Result<Spawned> {
        let v = serde_json::to_value(self.handle())
            .map_err(|e| Error::internal(format!("cannot encode handle: {e}")))?;
        let handle = match v {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Ok(Spawned {
            handle,
            pid: self.sandbox.init_pid(),
        })
    }
}

#[derive(Debug, Clone)]
struct Probe {
    git: std::result::Result<String, String>,
    overlay: std::result::Result<(), String>,
}

/// The worktree runtime.
pub struct WorktreeProvider {
    layout: Layout,
    stores: ObjectStores,
    lowers: Lowers,
    sandbox_isolator: Option<Arc<dyn Isolator>>,
    host_isolator: Arc<dyn Isolator>,
    events: EventSink,
    runtimes: RwLock<HashMap<String, Arc<Runtime>>>,
    /// What the host can do, once known (a probe that failed for want of
    /// space is not kept).
    probe: parking_lot::Mutex<Option<Arc<Probe>>>,
    /// Held shared while a workspace is being made, exclusively by `prune_checkouts`.
    making: tokio::sync::RwLock<()>,
    templates: Option<godel_core::TemplateResolver>,
    template_dirs: crate::template::TemplateDirs,
}

impl WorktreeProvider {
    /// Create the provider; makes the directories under `home`.
    pub fn new(cfg: WorktreeConfig) -> Result<Self> {
        let template_dirs = crate::template::TemplateDirs::new(&cfg.home);
        let layout = Layout::new(cfg.home);
        layout.create()?;
        Ok(WorktreeProvider {
            stores: ObjectStores::new(layout.clone()),
            lowers: Lowers::new(layout.clone())
                .with_owner(cfg.sandbox.as_ref().and_then(|s| s.agent_owner())),
            layout,
            sandbox_isolator: cfg.sandbox,
            host_isolator: cfg.host,
            events: cfg.events,
            runtimes: RwLock::new(HashMap::new()),
            probe: parking_lot::Mutex::new(None),
            making: tokio::sync::RwLock::new(()),
            templates: cfg.templates,
            template_dirs,
        })
    }

    /// The built template a spawn names (see [`crate::template::resolve`]).
    fn template_of(
        &self,
        spec: &SpawnSpec,
    ) -> Result<Option<(godel_core::TemplateInfo, Vec<PathBuf>)>> {
        crate::template::resolve(self.templates.as_ref(), &self.template_dirs, spec)
    }

    /// Remove shared checkouts and snapshot deltas that no runtime uses (in
    /// memory or with a persisted handle, so runtimes not adopted yet keep
    /// theirs). Returns how many were removed. The next spawn of a pruned
    /// commit pays its checkout again. Runs exclusively with spawns.
    pub async fn prune_checkouts(&self) -> Result<usize> {
        let _g = self.making.write().await;
        let mut in_use = std::collections::HashSet::new();
        let mut add = |info: &WorkspaceInfo| {
            if let Some(ov) = &info.overlay {
                in_use.insert(ov.lower.clone());
                if let Some(d) = &ov.delta {
                    in_use.insert(d.clone());
                }
            }
        };
        for rt in self.runtimes.read().values() {
            add(&rt.info);
        }
        if let Ok(states) = std::fs::read_dir(self.layout.root().join("state")) {
            for st in states.flatten() {
                let file = st.path().join("handle.json");
                let Ok(bytes) = std::fs::read(&file) else {
                    continue;
                };
                match serde_json::from_slice::<Handle>(&bytes) {
                    Ok(h) => add(&h.workspace),
                    // An unreadable handle could describe anything: keep everything.
                    Err(_) => return Ok(0),
                }
            }
        }
        let removed = self.lowers.prune(&in_use)?;
        for p in &removed {
            tracing::info!(path = %p.display(), "pruned unused checkout");
        }
        Ok(removed.len())
    }

    /// Host path of a runtime's workspace (for tools and tests).
    pub fn workspace_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.get(id)?.info.path.clone())
    }

    fn get(&self, id: &str) -> Result<Arc<Runtime>> {
        let map = self.runtimes.read();
        map.get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")).with_runtime(id))
    }

    fn isolator(&self, isolation: Isolation) -> Result<Arc<dyn Isolator>> {
        match isolation {
            Isolation::None => Ok(self.host_isolator.clone()),
            Isolation::Sandbox => self.sandbox_isolator.clone().ok_or_else(|| {
                Error::unavailable(
                    "the worktree runtime has no process sandbox configured; \
                     spawn with isolation \"none\" (trusted use only) or enable the sandbox",
                )
                .retryable(false)
            }),
        }
    }

    fn emit(&self, kind: godel_core::EventKind, id: &str, data: serde_json::Value) {
        (self.events)(Event::new(kind).runtime(id).data(data));
    }
}

fn open_root(path: &Path) -> Result<Dir> {
    Dir::open_ambient_dir(path, cap_std::ambient_authority())
        .map_err(|e| Error::io(format!("cannot open workspace {}", path.display()), &e))
}

#[async_trait]
impl RuntimeProvider for WorktreeProvider {
    fn name(&self) -> &str {
        "worktree"
    }

    fn capabilities(&self) -> Capabilities {
        let sandboxed = self.sandbox_isolator.is_some();
        Capabilities {
            memory_snapshots: false,
            workspace_snapshots: true,
            fork: true,
            pause: sandboxed,
            network_policy: sandboxed,
            streaming_exec: true,
            stdin: true,
            resource_limits: sandboxed,
            isolation: if sandboxed { "process" } else { "none" }.into(),
            survives_daemon_restart: true,
            host_bound: true,
        }
    }

    async fn available(&self) -> Availability {
        let p = self.probe().await;
        let mut a = match &p.git {
            Ok(v) => match &p.overlay {
                Ok(()) => Availability::yes(format!(
                    "{v}; overlayfs works (copy-on-write and git-worktree workspaces)"
                )),
                Err(e) => Availability::yes(format!(
                    "{v}; overlayfs does not work here ({e}): only git-worktree workspaces"
                )),
            },
            Err(e) => Availability::no(e.clone()),
        };
        a = a.detail(
            "overlay",
            match &p.overlay {
                Ok(()) => "yes".to_string(),
                Err(e) => format!("no: {e}"),
            },
        );
        a = a.detail("host_isolator", self.host_isolator.name());
        a.detail(
            "sandbox_isolator",
            self.sandbox_isolator
                .as_ref()
                .map(|i| i.name().to_string())
                .unwrap_or_else(|| "none configured".into()),
        )
    }

    async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned> {
        let started = Instant::now();
        let _making = self.making.read().await;
        validate_id(id)?;
        spec.validate()?;
        check_volumes(spec)?;
        self.isolator(spec.isolation)?;
        self.template_of(spec)?;
        if self.get(id).is_ok() {
            return Err(Error::conflict(format!("runtime {id} already exists")));
        }
        self.require(spec.workspace).await?;
        let (store, base): (ObjectStore, String) = match &spec.repo {
            Some(repo) => {
                let src = source_path(repo)?;
                let git_ref = spec.git_ref.as_deref().unwrap_or("HEAD");
                let commit = git::resolve_commit(&src, git_ref).await?;
                let store = self.stores.for_source(&src).await?;
                self.stores.import(&store, &src, &commit).await?;
                (store, commit)
            }
            None if spec.git_ref.is_some() => {
                return Err(Error::invalid("a git ref needs a repository"));
            }
            None => self.stores.empty().await?,
        };
        let info = workspace::create(
            &self.layout,
            &self.lowers,
            &Materialize {
                id,
                mode: spec.workspace,
                store: &store,
                base: &base,
                commit: &base,
                head: &base,
                empty_dirs: &[],
                disk_bytes: spec.resources.disk.map(|d| d.get()),
            },
        )
        .await
        .map_err(|e| e.with_runtime(id))?;
        self.start(id, spec, info, started).await
    }

    async fn adopt(&self, id: &str, spec: &SpawnSpec, handle: &Spawned) -> Result<Option<Spawned>> {
        validate_id(id)?;
        if let Ok(rt) = self.get(id) {
            return rt.spawned().map(Some);
        }
        let value = serde_json::Value::Object(handle.handle.clone().into_iter().collect());
        let h: Handle = serde_json::from_value(value)
            .map_err(|e| Error::invalid(format!("not a worktree handle: {e}")).with_runtime(id))?;
        if h.workspace.id != id {
            return Err(Error::invalid(format!(
                "handle belongs to runtime {}, not {id}",
                h.workspace.id
            )));
        }
        let remounted = match workspace::ensure_present(&h.workspace)? {
            None => return Ok(None),
            Some(r) => r,
        };
        if remounted {
            self.emit(
                godel_core::EventKind::WorkspaceRemounted,
                id,
                serde_json::json!({ "path": h.workspace.path }),
            );
        }
        let isolator = self.isolator(h.isolation)?;
        let cfg = self.sandbox_config(id, spec, &h.workspace.path);
        let sandbox = match isolator.adopt(cfg.clone(), &h.sandbox).await? {
            Some(s) => s,
            None => {
                self.emit(
                    godel_core::EventKind::SandboxRecreated,
                    id,
                    serde_json::Value::Null,
                );
                isolator.create(cfg).await?
            }
        };
        let root = open_root(&h.workspace.path)?;
        let rt = Arc::new(Runtime {
            info: h.workspace,
            isolation: h.isolation,
            isolator: isolator.name().to_string(),
            sandbox,
            root: Arc::new(root),
            paused: AtomicBool::new(false),
            processes: Arc::default(),
        });
        self.register(id, rt.clone())?;
        rt.spawned().map(Some)
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let held = {
            let mut map = self.runtimes.write();
            map.remove(id)
        };
        match held {
            Some(rt) => {
                rt.processes.kill_all();
                if let Err(e) = rt.sandbox.destroy().await {
                    tracing::warn!(runtime = id, error = %e, "sandbox destroy failed");
                }
                let info = rt.info.clone();
                drop(rt);
                workspace::destroy(&self.layout, &info).await?;
            }
            None => self.terminate_unheld(id).await?,
        }
        remove_tree(&self.layout.state(id))?;
        self.emit(
            godel_core::EventKind::WorkspaceRemoved,
            id,
            serde_json::Value::Null,
        );
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<SandboxStatus> {
        let rt = self.get(id)?;
        let present = match rt.info.mode {
            WorkspaceMode::Cow => overlay::is_mounted(&rt.info.path)?,
            WorkspaceMode::GitWorktree => rt.info.path.is_dir(),
        };
        let mut st = if !present {
            let mut s = SandboxStatus::new(SandboxState::Error);
            s.reason = Some(format!("workspace {} is gone", rt.info.path.display()));
            s
        } else if rt.paused.load(Ordering::SeqCst) {
            SandboxStatus::new(SandboxState::Paused)
        } else if !rt.sandbox.alive().await {
            let mut s = SandboxStatus::new(SandboxState::Error);
            s.reason = Some("the sandbox is no longer alive".into());
            s
        } else {
            SandboxStatus::new(SandboxState::Running)
        };
        st.usage = rt.sandbox.usage().await.ok();
        st.pid = rt.sandbox.init_pid();
        let i = &rt.info;
        st.details = [
            ("workspace", serde_json::json!(i.path)),
            ("mode", serde_json::json!(i.mode)),
            ("base", serde_json::json!(i.base)),
            ("commit", serde_json::json!(i.commit)),
            ("store", serde_json::json!(i.store)),
            ("isolator", serde_json::json!(rt.isolator)),
            (
                "workspace_view",
                serde_json::json!(rt.sandbox.workspace_view()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(st)
    }

    async fn shutdown(&self) {
        if let Some(iso) = &self.sandbox_isolator {
            iso.stop().await;
        }
    }

    async fn list(&self) -> Result<Vec<String>> {
        let map = self.runtimes.read();
        let mut ids: Vec<String> = map.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let rt = self.get(id)?;
        rt.sandbox
            .freeze(true)
            .await
            .map_err(|e| e.with_runtime(id))?;
        rt.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let rt = self.get(id)?;
        rt.sandbox
            .freeze(false)
            .await
            .map_err(|e| e.with_runtime(id))?;
        rt.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        req.validate()?;
        let rt = self.get(id)?;
        if rt.paused.load(Ordering::SeqCst) {
            return Err(Error::conflict(format!("runtime {id} is paused")).with_runtime(id));
        }
        let cwd = match req.cwd.as_deref() {
            Some(c) => Some(workspace_relative(c)?).filter(|c| !c.is_empty()),
            None => None,
        };
        let process = rt
            .sandbox
            .launch(ProcessSpec {
                argv: req.cmd.clone(),
                env: req.env.clone(),
                cwd,
                stdin: req.stdin.is_some() || req.interactive,
            })
            .await
            .map_err(|e| e.with_runtime(id))?;
        Ok(exec::pump(process, &req, rt.processes.clone()))
    }

    async fn connect_port(&self, id: &str, port: u16) -> Result<godel_core::PortStream> {
        let rt = self.get(id)?;
        if rt.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::conflict(format!("runtime {id} is paused")).with_runtime(id));
        }
        Ok(Box::new(rt.sandbox.connect_port(port).await?))
    }

    async fn update_network(&self, id: &str, network: &godel_core::NetworkConfig) -> Result<()> {
        self.get(id)?.sandbox.update_network(network).await
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes> {
        let p = path.to_string();
        self.with_root(id, move |d, _| files::read_file(d, &p).map(Bytes::from))
            .await
    }

    async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()> {
        let p = path.to_string();
        self.with_root(id, move |d, o| files::write_file(d, &p, &data, o))
            .await
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        let p = path.to_string();
        self.with_root(id, move |d, _| files::list_dir(d, &p)).await
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileEntry> {
        let p = path.to_string();
        self.with_root(id, move |d, _| files::stat(d, &p)).await
    }

    async fn make_dir(&self, id: &str, path: &str) -> Result<()> {
        let p = path.to_string();
        self.with_root(id, move |d, o| files::make_dir(d, &p, o))
            .await
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let (f, t) = (from.to_string(), to.to_string());
        self.with_root(id, move |d, o| files::rename(d, &f, &t, o))
            .await
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let p = path.to_string();
        self.with_root(id, move |d, _| files::remove(d, &p, recursive))
            .await
    }

    async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()> {
        let p = path.to_string();
        self.with_root(id, move |d, o| tarball::unpack(d, &p, &tar, o))
            .await
    }

    async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes> {
        let p = path.to_string();
        self.with_root(id, move |d, _| tarball::pack(d, &p).map(Bytes::from))
            .await
    }

    async fn snapshot(
        &self,
        id: &str,
        _req: &SnapshotRequest,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact> {
        let rt = self.get(id)?;
        let started = Instant::now();
        // Freeze the processes (where the sandbox can) so the tree does not
        // change while it is recorded.
        let froze = !rt.paused.load(Ordering::SeqCst) && rt.sandbox.freeze(true).await.is_ok();
        let res = snapshot::take(&self.layout, &rt.info, &target.snapshot_id, &target.dir).await;
        if froze && let Err(e) = rt.sandbox.freeze(false).await {
            tracing::warn!(runtime = id, error = %e, "cannot thaw after snapshot");
        }
        let art = res.map_err(|e| e.with_runtime(id))?;
        self.emit(
            godel_core::EventKind::SnapshotWritten,
            id,
            serde_json::json!({
                "snapshot_id": target.snapshot_id,
                "commit": art.data.get("commit"),
                "duration_ms": started.elapsed().as_millis() as u64,
            }),
        );
        Ok(art)
    }

    async fn restore(&self, id: &str, snap: &SnapshotInfo, spec: &SpawnSpec) -> Result<Spawned> {
        let started = Instant::now();
        let _making = self.making.read().await;
        validate_id(id)?;
        self.isolator(spec.isolation)?;
        if self.get(id).is_ok() {
            return Err(Error::conflict(format!("runtime {id} already exists")));
        }
        let rec = snapshot::load(snap)?;
        self.require(rec.mode).await?;
        let store = ObjectStore {
            key: rec.store_key.clone(),
            path: rec.store.clone(),
        };
        if !store.path.is_dir() || !self.stores.has_commit(&store, &rec.commit).await? {
            return Err(Error::not_found(format!(
                "snapshot {}: commit {} is no longer in store {}",
                snap.id,
                rec.commit,
                store.path.display()
            )));
        }
        let info = workspace::create(
            &self.layout,
            &self.lowers,
            &Materialize {
                id,
                mode: rec.mode,
                store: &store,
                base: &rec.base,
                commit: &rec.commit,
                head: &rec.parent,
                empty_dirs: &rec.empty_dirs,
                disk_bytes: spec.resources.disk.map(|d| d.get()),
            },
        )
        .await
        .map_err(|e| e.with_runtime(id))?;
        self.start(id, spec, info, started).await
    }

    async fn delete_snapshot(&self, snap: &SnapshotInfo) -> Result<()> {
        let rec = snapshot::load(snap)?;
        snapshot::delete(&rec).await
    }
}

#[async_trait]
impl godel_core::TemplateBuilder for WorktreeProvider {
    async fn build(
        &self,
        req: godel_core::TemplateBuildRequest,
    ) -> Result<godel_core::TemplateBuild> {
        let isolator = self.isolator(Isolation::Sandbox)?;
        crate::template::build(&self.template_dirs, isolator, req).await
    }
}
