//! Parking: snapshot a sandbox and stop it, keeping its id, so it can be
//! brought back later under the same id. Three surfaces use it:
//! - E2B pause / connect (`ParkReason::Paused`, resumed by `resume`);
//! - `on_timeout: pause` when a sandbox's time to live runs out (the reaper);
//! - `godel serve --preserve`: every running sandbox is parked at shutdown
//!   (`ParkReason::Preserved`) and restored at the next start.
//!
//! A parked sandbox's record is `terminated` (it holds no resources and no
//! quota) with `parked` naming the snapshot.

use godel_core::{
    Error, Event, ParkReason, Parked, Result, SandboxInfo, SandboxState, SnapshotRequest,
};
use serde::Serialize;
use serde_json::json;

use super::{Caller, Control};

/// What preservation or restoration did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PreserveReport {
    pub done: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl Control {
    /// Snapshot a running sandbox and stop it, remembering the snapshot in
    /// its record. Parking a parked sandbox is a no-op. Returns the snapshot id.
    pub async fn park(
        &self,
        caller: &Caller,
        id: &str,
        reason: ParkReason,
        req: SnapshotRequest,
    ) -> Result<String> {
        let rec = self.visible_sandbox(caller, id)?;
        if let Some(p) = rec.parked {
            return Ok(p.snapshot_id);
        }
        let snap = self.snapshot(caller, id, req).await?;
        let parked = Parked {
            snapshot_id: snap.id.clone(),
            reason,
        };
        self.store.set_parked(id, Some(&parked))?;
        if let Err(e) = self.terminate(caller, id).await {
            // Still running: it is not parked after all.
            let _ = self.store.set_parked(id, None);
            return Err(e);
        }
        self.emit(
            Event::new(godel_core::EventKind::Parked)
                .runtime(id)
                .team(&rec.team)
                .data(json!({"snapshot_id": snap.id, "reason": reason.as_str()})),
        );
        Ok(snap.id)
    }

    /// Bring a parked sandbox back under its own id: its stopped record
    /// makes way for the restored one and the snapshot is deleted.
    pub async fn unpark(&self, caller: &Caller, id: &str) -> Result<SandboxInfo> {
        let rec = self.visible_sandbox(caller, id)?;
        let parked = rec
            .parked
            .clone()
            .ok_or_else(|| Error::conflict(format!("runtime {id} is not parked")))?;
        self.store.delete_sandbox(id)?;
        let restored = self
            .restore_as(caller, &parked.snapshot_id, id.to_string())
            .await;
        if let Err(e) = restored {
            // Put the parked record back (it holds no quota) so the sandbox
            // can be resumed again once the cause is fixed.
            let _ = self.store.delete_sandbox(id);
            self.store
                .insert_sandbox(&rec, Default::default(), Default::default())?;
            self.store.set_parked(id, Some(&parked))?;
            return Err(e);
        }
        let _ = self.delete_snapshot(caller, &parked.snapshot_id).await;
        self.emit(
            Event::new(godel_core::EventKind::Unparked)
                .runtime(id)
                .team(&rec.team)
                .data(json!({"snapshot_id": parked.snapshot_id, "reason": parked.reason.as_str()})),
        );
        self.visible_sandbox(caller, id)
    }

    /// Forget a parked sandbox for good: delete its snapshot, clear the mark.
    pub(crate) async fn discard_parked(
        &self,
        caller: &Caller,
        rec: SandboxInfo,
    ) -> Result<SandboxInfo> {
        if let Some(p) = &rec.parked {
            self.store.set_parked(&rec.id, None)?;
            let _ = self.delete_snapshot(caller, &p.snapshot_id).await;
        }
        self.visible_sandbox(caller, &rec.id)
    }

    /// Snapshot and stop every running sandbox.
    pub async fn preserve_all(&self) -> Result<PreserveReport> {
        let mut report = PreserveReport::default();
        for r in self.store.list_sandboxes(None, false)? {
            if r.state != SandboxState::Running || !self.owns(&r) {
                continue;
            }
            let req = SnapshotRequest {
                description: Some("preserved at daemon shutdown".into()),
                ..Default::default()
            };
            match self
                .park(&Caller::Admin, &r.id, ParkReason::Preserved, req)
                .await
            {
                Ok(_) => report.done.push(r.id),
                Err(e) => report.failed.push((r.id, e.message)),
            }
        }
        Ok(report)
    }

    /// Restore every sandbox preserved by the last shutdown, under its old id.
    pub async fn restore_preserved(&self) -> Result<PreserveReport> {
        let mut report = PreserveReport::default();
        for r in self.store.list_sandboxes(None, true)? {
            let preserved = r
                .parked
                .as_ref()
                .is_some_and(|p| p.reason == ParkReason::Preserved);
            if !preserved || r.state != SandboxState::Terminated || !self.owns(&r) {
                continue;
            }
            match self.unpark(&Caller::Admin, &r.id).await {
                Ok(_) => report.done.push(r.id),
                Err(e) => report.failed.push((r.id, e.message)),
            }
        }
        Ok(report)
    }
}
