//! The worktree runtime's set-up steps: probing what the host offers, the
//! jail configuration of a spawn (limits, network, volumes, template
//! layers), starting the jail and registering the runtime, and cleaning up
//! a runtime the provider does not hold. Split from `provider` to keep each
//! file small; these are methods of the same `WorktreeProvider`.

use super::*;

impl WorktreeProvider {
    pub(super) async fn probe(&self) -> Arc<Probe> {
        if let Some(p) = self.probe.lock().clone() {
            return p;
        }
        let git = git::version().await.map_err(|e| e.message);
        let scratch = self.layout.tmp();
        let overlay = tokio::task::spawn_blocking(move || overlay::probe(&scratch))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.message));
        let p = Arc::new(Probe { git, overlay });
        // A full $GODEL_HOME says nothing about overlayfs: ask again next time.
        let transient = p.overlay.as_ref().err().is_some_and(|e| {
            e.contains("No space left") || e.contains("Disk quota") || e.contains("os error 28")
        });
        if !transient {
            *self.probe.lock() = Some(p.clone());
        }
        p
    }

    pub(super) async fn require(&self, mode: WorkspaceMode) -> Result<()> {
        let p = self.probe().await;
        if let Err(e) = &p.git {
            return Err(Error::unavailable(e.clone()));
        }
        if mode == WorkspaceMode::Cow
            && let Err(e) = &p.overlay
        {
            return Err(Error::unavailable(format!(
                "copy-on-write workspaces need overlayfs, which does not work here ({e}); \
                 use workspace mode \"git-worktree\""
            )));
        }
        Ok(())
    }

    pub(super) fn sandbox_config(
        &self,
        id: &str,
        spec: &SpawnSpec,
        workspace: &Path,
    ) -> JailConfig {
        let mut env = BTreeMap::new();
        if let Ok(Some((t, _))) = self.template_of(spec) {
            env.extend(t.env);
        }
        env.extend(spec.env.clone());
        JailConfig {
            id: id.to_string(),
            workspace: workspace.to_path_buf(),
            state_dir: self.layout.state(id).join("sandbox"),
            limits: JailLimits {
                cpu_millis: spec.resources.cpu.map(|c| c.millis()),
                memory_bytes: spec.resources.memory.map(|m| m.get()),
                pids: spec.resources.pids,
                disk_bytes: spec.resources.disk.map(|d| d.get()),
            },
            network: spec.network.clone(),
            env,
            volumes: spec
                .volumes
                .iter()
                .map(|v| JailVolume {
                    source: v.source.clone().into(),
                    target: v.destination.clone().into(),
                })
                .collect(),
        }
    }

    /// Give a materialised workspace its sandbox and register it. On failure
    /// the workspace is removed.
    pub(super) async fn start(
        &self,
        id: &str,
        spec: &SpawnSpec,
        info: WorkspaceInfo,
        started: Instant,
    ) -> Result<Spawned> {
        let res = async {
            let isolator = self.isolator(spec.isolation)?;
            let cfg = self.sandbox_config(id, spec, &info.path);
            let sandbox = match self.template_of(spec)? {
                Some((t, layers)) => {
                    crate::template::seed_workspace(&layers, &info.path)?;
                    let root = godel_sandbox::JailRoot {
                        layers,
                        upper: None,
                    };
                    let jail = isolator.create_rooted(cfg, root).await?;
                    if let Err(e) = crate::template::start_command(&*jail, &t).await {
                        let _ = jail.destroy().await;
                        return Err(e);
                    }
                    jail
                }
                None => isolator.create(cfg).await?,
            };
            let root = match open_root(&info.path) {
                Ok(r) => r,
                Err(e) => {
                    let _ = sandbox.destroy().await;
                    return Err(e);
                }
            };
            Ok(Arc::new(Runtime {
                info: info.clone(),
                isolation: spec.isolation,
                isolator: isolator.name().to_string(),
                sandbox,
                root: Arc::new(root),
                paused: AtomicBool::new(false),
                processes: Arc::default(),
            }))
        }
        .await;
        let rt = match res {
            Ok(rt) => rt,
            Err(e) => {
                let _ = workspace::destroy(&self.layout, &info).await;
                return Err(e.with_runtime(id));
            }
        };
        if let Err(e) = self.register(id, rt.clone()) {
            // Unregistered, nothing would find it again: undo it now.
            let _ = rt.sandbox.destroy().await;
            let _ = workspace::destroy(&self.layout, &info).await;
            return Err(e.with_runtime(id));
        }
        self.emit(
            godel_core::EventKind::WorkspaceCreated,
            id,
            serde_json::json!({
                "mode": info.mode,
                "commit": info.commit,
                "isolator": rt.isolator,
                "duration_ms": started.elapsed().as_millis() as u64,
            }),
        );
        rt.spawned()
    }

    pub(super) fn register(&self, id: &str, rt: Arc<Runtime>) -> Result<()> {
        let json = serde_json::to_vec_pretty(&rt.handle())
            .map_err(|e| Error::internal(format!("cannot encode handle: {e}")))?;
        crate::objects::write(
            &self.layout.state(id).join("handle.json"),
            &String::from_utf8_lossy(&json),
        )?;
        let mut map = self.runtimes.write();
        map.insert(id.to_string(), rt);
        Ok(())
    }

    /// Run a blocking file operation against a runtime's workspace root.
    pub(super) async fn with_root<T, F>(&self, id: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Dir, files::Owner) -> Result<T> + Send + 'static,
    {
        let rt = self.get(id)?;
        let (root, owner) = (rt.root.clone(), rt.sandbox.workspace_owner());
        tokio::task::spawn_blocking(move || f(&root, owner))
            .await
            .map_err(|e| Error::internal(format!("file task failed: {e}")))?
            .map_err(|e| e.with_runtime(id))
    }

    /// Clean up a runtime this daemon does not hold, from its persisted handle.
    pub(super) async fn terminate_unheld(&self, id: &str) -> Result<()> {
        let file = self.layout.state(id).join("handle.json");
        let handle: Option<Handle> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match handle {
            Some(h) => {
                if let Ok(iso) = self.isolator(h.isolation) {
                    let cfg = self.sandbox_config(id, &SpawnSpec::default(), &h.workspace.path);
                    if let Ok(Some(sb)) = iso.adopt(cfg, &h.sandbox).await {
                        let _ = sb.destroy().await;
                    }
                }
                workspace::destroy(&self.layout, &h.workspace).await?;
            }
            None => {
                // A spawn cut off before its handle was written may still
                // have made its jail: the isolator's own record of it (the
                // jail config's state dir) finds it, alive or not.
                if let Some(iso) = self.sandbox_isolator.clone() {
                    let path = self.layout.workspace(id);
                    let cfg = self.sandbox_config(id, &SpawnSpec::default(), &path);
                    if let Ok(Some(sb)) = iso.adopt(cfg, &serde_json::Value::Null).await {
                        let _ = sb.destroy().await;
                    }
                }
                let path = self.layout.workspace(id);
                overlay::unmount(&path)?;
                remove_tree(&path)?;
                crate::loopfs::unmount(&self.layout.overlay(id).join("fs"))?;
                remove_tree(&self.layout.overlay(id))?;
            }
        }
        Ok(())
    }
}

/// Volumes are host directories the jail mounts read-write: only the
/// process sandbox can (isolation `none` runs on the host's own view).
pub(super) fn check_volumes(spec: &SpawnSpec) -> Result<()> {
    for v in &spec.volumes {
        if spec.isolation == godel_core::Isolation::None {
            return Err(Error::invalid(format!(
                "volume {:?}: the worktree runtime mounts volumes only with isolation 'sandbox'",
                v.name
            )));
        }
        if v.read_only {
            return Err(Error::invalid(format!(
                "volume {:?}: read_only is not supported by the worktree runtime; volumes are mounted read-write",
                v.name
            )));
        }
        godel_sandbox::mounts::check_volume_target(Path::new(&v.destination))
            .map_err(|e| Error::invalid(format!("volume {:?}: {e}", v.name)))?;
        if !Path::new(&v.source).is_dir() {
            return Err(Error::not_found(format!(
                "volume {:?}: {} is not a directory",
                v.name, v.source
            )));
        }
    }
    Ok(())
}
