//! Graceful shutdown with state preservation (`godel serve --preserve`):
//! on SIGTERM every running runtime is snapshotted and stopped, the snapshot
//! remembered in its record (`godel.preserved_snapshot`); on the next start
//! each is restored under its old id and the label cleared.

use godel_core::{Event, Result, RuntimeInfo, RuntimeState, SnapshotRequest};
use serde::Serialize;
use serde_json::json;

use super::{Caller, Control};

/// Label holding the snapshot a runtime was preserved in.
pub const PRESERVED_LABEL: &str = "godel.preserved_snapshot";

/// What preservation or restoration did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PreserveReport {
    pub done: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl Control {
    /// Snapshot a runtime and stop it, remembering the snapshot under
    /// `label` in its record (E2B pause, `--preserve`). Returns the snapshot id.
    pub async fn park(
        &self,
        caller: &Caller,
        id: &str,
        label: &str,
        req: SnapshotRequest,
    ) -> Result<String> {
        let snap = self.snapshot(caller, id, req).await?;
        let mut spec = self.visible_runtime(caller, id)?.spec;
        spec.labels.insert(label.into(), snap.id.clone());
        self.store.set_spec(id, &spec)?;
        self.terminate(caller, id).await?;
        Ok(snap.id)
    }

    /// Bring a runtime parked under `label` back under its own id: its
    /// stopped record makes way for the restored one, the label is cleared
    /// and the snapshot deleted.
    pub async fn unpark(&self, caller: &Caller, id: &str, label: &str) -> Result<RuntimeInfo> {
        let rec = self.visible_runtime(caller, id)?;
        let snap = rec.spec.labels.get(label).cloned().ok_or_else(|| {
            godel_core::Error::conflict(format!("runtime {id} is not parked ({label})"))
        })?;
        self.store.delete_runtime(id)?;
        let info = self.restore_as(caller, &snap, id.to_string()).await?;
        let mut spec = info.spec.clone();
        spec.labels.remove(label);
        self.store.set_spec(id, &spec)?;
        let _ = self.delete_snapshot(caller, &snap).await;
        self.visible_runtime(caller, id)
    }

    /// Snapshot and stop every running runtime.
    pub async fn preserve_all(&self) -> Result<PreserveReport> {
        let mut report = PreserveReport::default();
        for r in self.store.list_runtimes(None, false)? {
            if r.state != RuntimeState::Running {
                continue;
            }
            let req = SnapshotRequest {
                description: Some("preserved at daemon shutdown".into()),
                ..Default::default()
            };
            match self.park(&Caller::Admin, &r.id, PRESERVED_LABEL, req).await {
                Ok(snap) => {
                    self.emit(
                        Event::new("preserved")
                            .runtime(&r.id)
                            .team(&r.team)
                            .data(json!({"snapshot_id": snap})),
                    );
                    report.done.push(r.id);
                }
                Err(e) => report.failed.push((r.id, e.message)),
            }
        }
        Ok(report)
    }

    /// Restore every runtime preserved by the last shutdown, under its old id.
    pub async fn restore_preserved(&self) -> Result<PreserveReport> {
        let mut report = PreserveReport::default();
        for r in self.store.list_runtimes(None, true)? {
            let Some(snap) = r.spec.labels.get(PRESERVED_LABEL).cloned() else {
                continue;
            };
            if r.state != RuntimeState::Terminated {
                continue;
            }
            match self.unpark(&Caller::Admin, &r.id, PRESERVED_LABEL).await {
                Ok(_) => {
                    self.emit(
                        Event::new("restored_preserved")
                            .runtime(&r.id)
                            .team(&r.team)
                            .data(json!({"snapshot_id": snap})),
                    );
                    report.done.push(r.id);
                }
                Err(e) => report.failed.push((r.id, e.message)),
            }
        }
        Ok(report)
    }
}
