//! The E2B-compatible surface over the control plane: `godel-e2b` serves
//! the wire protocol; this adapter turns each call into the same `Control`
//! action the native API uses, scoped to the team of the API key.
//!
//! E2B's pause/resume keep the sandbox id: pause snapshots the runtime and
//! stops it, remembering the snapshot in the record's labels
//! (`e2b.paused_snapshot`); resume restores that snapshot under the same id.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use godel_control::{Caller, Control};
use godel_core::{
    Error, ExecHandle, ExecRequest, FileEntry, Result, RuntimeInfo, RuntimeState, SnapshotRequest,
    SpawnSpec,
};
use godel_e2b::E2bBackend;

/// Label holding the snapshot of a paused E2B sandbox.
pub const PAUSED_LABEL: &str = "e2b.paused_snapshot";

/// `E2bBackend` over `Control`.
pub struct ControlBackend {
    control: Arc<Control>,
}

impl ControlBackend {
    pub fn new(control: Arc<Control>) -> Arc<Self> {
        Arc::new(ControlBackend { control })
    }

    fn team(team: &str) -> Caller {
        Caller::Team(team.to_string())
    }

    /// A stopped record that holds a pause snapshot is shown as `paused`.
    fn present(mut r: RuntimeInfo) -> Option<RuntimeInfo> {
        if !r.state.is_terminal() {
            return Some(r);
        }
        if r.spec.labels.contains_key(PAUSED_LABEL) {
            r.state = RuntimeState::Paused;
            return Some(r);
        }
        None
    }

    /// The caller as a team, after checking the sandbox is live: a stopped
    /// or paused sandbox is `NOT_FOUND` to envd calls, as on E2B.
    fn live(&self, team: &str, id: &str) -> Result<Caller> {
        let caller = Self::team(team);
        let r = self.control.visible_runtime(&caller, id)?;
        if r.state.is_terminal() || r.state == RuntimeState::Paused {
            return Err(Error::not_found(format!(
                "sandbox {id} is not running ({})",
                r.state
            )));
        }
        Ok(caller)
    }

    fn visible(&self, caller: &Caller, id: &str) -> Result<RuntimeInfo> {
        let r = self.control.visible_runtime(caller, id)?;
        Self::present(r).ok_or_else(|| Error::not_found(format!("sandbox {id} not found")))
    }
}

#[async_trait]
impl E2bBackend for ControlBackend {
    async fn authenticate(&self, api_key: &str) -> Result<String> {
        match self.control.authenticate(api_key)? {
            Caller::Team(t) => Ok(t),
            Caller::Admin => Ok(self.control.settings().default_team.clone()),
        }
    }

    async fn create(&self, team: &str, spec: SpawnSpec) -> Result<RuntimeInfo> {
        self.control.spawn(&Self::team(team), spec).await
    }

    async fn get(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        let r = self.visible(&Self::team(team), id)?;
        if r.state.is_terminal() || r.state == RuntimeState::Paused {
            return Ok(r);
        }
        let live = self.control.status(&Self::team(team), id).await?;
        Self::present(live).ok_or_else(|| Error::not_found(format!("sandbox {id} not found")))
    }

    async fn locate(&self, id: &str) -> Result<RuntimeInfo> {
        self.visible(&Caller::Admin, id)
    }

    async fn list(&self, team: &str) -> Result<Vec<RuntimeInfo>> {
        Ok(self
            .control
            .list(&Self::team(team), true)?
            .into_iter()
            .filter_map(Self::present)
            .collect())
    }

    async fn list_all(&self) -> Result<Vec<RuntimeInfo>> {
        Ok(self
            .control
            .list(&Caller::Admin, true)?
            .into_iter()
            .filter_map(Self::present)
            .collect())
    }

    async fn kill(&self, team: &str, id: &str) -> Result<()> {
        let caller = Self::team(team);
        let r = self.visible(&caller, id)?;
        if let Some(snap) = r.spec.labels.get(PAUSED_LABEL).cloned() {
            let mut spec = r.spec.clone();
            spec.labels.remove(PAUSED_LABEL);
            self.control.store().set_spec(id, &spec)?;
            let _ = self.control.delete_snapshot(&caller, &snap).await;
        }
        if !r.state.is_terminal() && r.state != RuntimeState::Paused {
            self.control.terminate(&caller, id).await?;
        }
        Ok(())
    }

    async fn pause(&self, team: &str, id: &str) -> Result<()> {
        let caller = Self::team(team);
        let r = self.visible(&caller, id)?;
        if r.spec.labels.contains_key(PAUSED_LABEL) {
            return Ok(());
        }
        let req = SnapshotRequest {
            name: None,
            description: Some("E2B pause".into()),
            labels: BTreeMap::from([("e2b.pause".to_string(), "true".to_string())]),
        };
        self.control.park(&caller, id, PAUSED_LABEL, req).await?;
        Ok(())
    }

    async fn resume(&self, team: &str, id: &str) -> Result<RuntimeInfo> {
        let caller = Self::team(team);
        let r = self.visible(&caller, id)?;
        if !r.spec.labels.contains_key(PAUSED_LABEL) {
            return self.get(team, id).await;
        }
        self.control.unpark(&caller, id, PAUSED_LABEL).await?;
        self.get(team, id).await
    }

    async fn set_labels(
        &self,
        team: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let r = self.visible(&Self::team(team), id)?;
        let mut spec = r.spec.clone();
        spec.labels.extend(labels);
        self.control.store().set_spec(id, &spec)
    }

    async fn exec(&self, team: &str, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        self.control.exec(&self.live(team, id)?, id, req).await
    }

    async fn read_file(&self, team: &str, id: &str, path: &str) -> Result<Bytes> {
        self.control
            .read_file(&self.live(team, id)?, id, path)
            .await
    }

    async fn write_file(&self, team: &str, id: &str, path: &str, data: Bytes) -> Result<()> {
        self.control
            .write_file(&self.live(team, id)?, id, path, data)
            .await
    }

    async fn list_dir(&self, team: &str, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        self.control.list_dir(&self.live(team, id)?, id, path).await
    }

    async fn stat(&self, team: &str, id: &str, path: &str) -> Result<FileEntry> {
        self.control.stat(&self.live(team, id)?, id, path).await
    }

    async fn make_dir(&self, team: &str, id: &str, path: &str) -> Result<()> {
        self.control.make_dir(&self.live(team, id)?, id, path).await
    }

    async fn rename(&self, team: &str, id: &str, from: &str, to: &str) -> Result<()> {
        self.control
            .rename(&self.live(team, id)?, id, from, to)
            .await
    }

    async fn remove(&self, team: &str, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.control
            .remove(&self.live(team, id)?, id, path, recursive)
            .await
    }
}

/// Serve the E2B-compatible API on a TCP listener until `shutdown` resolves.
pub async fn serve_e2b(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    cfg: godel_e2b::ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = godel_e2b::router(ControlBackend::new(control), cfg);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
