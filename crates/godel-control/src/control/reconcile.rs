//! Reconciliation after a daemon start: every non-terminal record is matched
//! against reality. Live runtimes are re-adopted; the rest are marked `error`
//! with a reason. Snapshots published but not yet recorded are re-imported.

use godel_core::{Event, Result, SandboxState, Spawned};
use serde::Serialize;
use serde_json::json;

use super::Control;

/// What reconciliation did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReconcileReport {
    pub adopted: Vec<String>,
    pub lost: Vec<(String, String)>,
    pub finished_terminating: Vec<String>,
    pub snapshots_reimported: Vec<String>,
}

impl Control {
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        for info in self.snapshots.recover()? {
            if self.store.get_snapshot(&info.id)?.is_none() {
                self.store.insert_snapshot(&info)?;
                report.snapshots_reimported.push(info.id.clone());
            }
        }
        for rec in self.store.non_terminal_sandboxes()? {
            if !self.owns(&rec) {
                continue;
            }
            self.adopt_record(rec, "a daemon restart", &mut report)
                .await?;
        }
        Ok(report)
    }

    /// Whether this daemon acts on `rec`: it owns it, or it is the only
    /// daemon (no replica id) and nobody does.
    pub(crate) fn owns(&self, rec: &godel_core::SandboxInfo) -> bool {
        match (&self.settings.replica_id, &rec.owner) {
            (Some(me), Some(owner)) => me == owner,
            (None, None) => true,
            (Some(_), None) => false,
            (None, Some(_)) => true,
        }
    }

    /// Match one non-terminal record against its runtime after `after`
    /// (a restart, a take-over): re-adopt it, finish what it was doing, or
    /// mark it lost with the reason.
    pub(crate) async fn adopt_record(
        &self,
        rec: godel_core::SandboxInfo,
        after: &str,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let id = rec.id.clone();
        let provider = match self.provider(&rec.runtime) {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("lost after {after}: {}", e.message);
                self.lose(&id, &rec.team, &reason, report);
                return Ok(());
            }
        };
        match rec.state {
            SandboxState::Pending | SandboxState::Creating => {
                let _ = provider.terminate(&id).await;
                self.lose(
                    &id,
                    &rec.team,
                    &format!("spawn interrupted by {after}"),
                    report,
                );
            }
            SandboxState::Terminating => {
                let _ = provider.terminate(&id).await;
                if self
                    .store
                    .transition(&id, SandboxState::Terminated, None)
                    .is_ok()
                {
                    self.emit_state(&id, &rec.team, json!({"state": "terminated"}));
                }
                report.finished_terminating.push(id);
            }
            SandboxState::Running | SandboxState::Paused => {
                let handle = Spawned {
                    handle: rec.handle.clone(),
                    pid: rec.pid,
                };
                match provider.adopt(&id, &rec.spec, &handle).await {
                    Ok(Some(sp)) => {
                        // Adoption may thaw (a frozen init cannot
                        // answer): a paused sandbox is frozen again.
                        if rec.state == SandboxState::Paused
                            && let Err(e) = provider.pause(&id).await
                        {
                            tracing::warn!(runtime = %id, error = %e, "cannot pause an adopted paused sandbox again");
                        }
                        self.store.set_handle(&id, &sp.handle, sp.pid)?;
                        self.emit(
                            Event::new(godel_core::EventKind::Adopted)
                                .runtime(&id)
                                .team(&rec.team)
                                .data(json!({"pid": sp.pid, "after": after, "replica": self.settings.replica_id})),
                        );
                        report.adopted.push(id);
                    }
                    Ok(None) => self.lose(
                        &id,
                        &rec.team,
                        &format!("lost: the runtime was gone after {after}"),
                        report,
                    ),
                    Err(e) => {
                        let reason = format!("lost: re-adoption failed: {}", e.message);
                        self.lose(&id, &rec.team, &reason, report);
                    }
                }
            }
            SandboxState::Terminated | SandboxState::Error => {}
        }
        Ok(())
    }

    pub(crate) fn lose(&self, id: &str, team: &str, reason: &str, report: &mut ReconcileReport) {
        if self
            .store
            .transition(id, SandboxState::Error, Some(reason))
            .is_ok()
        {
            self.emit(
                Event::new(godel_core::EventKind::Lost)
                    .runtime(id)
                    .team(team)
                    .data(json!({"reason": reason})),
            );
        }
        report.lost.push((id.to_string(), reason.to_string()));
    }
}
