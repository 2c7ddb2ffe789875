//! Graceful shutdown with state preservation (`godel serve --preserve`):
//! on SIGTERM every running runtime is snapshotted and stopped, the snapshot
//! remembered in its record (`godel.preserved_snapshot`); on the next start
//! each is restored under its old id and the label cleared.

use godel_core::{Event, Result, RuntimeState, SnapshotRequest};
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
            let res = async {
                let snap = self.snapshot(&Caller::Admin, &r.id, req).await?;
                let mut spec = r.spec.clone();
                spec.labels.insert(PRESERVED_LABEL.into(), snap.id.clone());
                self.store.set_spec(&r.id, &spec)?;
                self.terminate(&Caller::Admin, &r.id).await?;
                Ok::<_, godel_core::Error>(snap.id)
            }
            .await;
            match res {
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
            self.store.delete_runtime(&r.id)?;
            match self.restore_as(&Caller::Admin, &snap, r.id.clone()).await {
                Ok(info) => {
                    let mut spec = info.spec.clone();
                    spec.labels.remove(PRESERVED_LABEL);
                    self.store.set_spec(&r.id, &spec)?;
                    let _ = self.delete_snapshot(&Caller::Admin, &snap).await;
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
