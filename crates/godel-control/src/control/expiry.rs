//! Time to live: every sandbox may carry a deadline (`expires_at`, from
//! `SpawnSpec::ttl_secs` or set later); one reaper kills or parks the
//! running sandboxes whose deadline has passed, as their `on_timeout` says.
//! The native API and the E2B surface both set deadlines through here. The
//! same tick stores the `error` state of spawns that failed while the store
//! refused writes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_core::{
    Error, ErrorCode, Event, OnTimeout, ParkReason, Result, SandboxInfo, SandboxState,
    SnapshotRequest,
};
use serde_json::json;

use super::{Caller, Control};

impl Control {
    /// Set (or with `None` clear) the deadline of a live sandbox.
    pub fn set_expiry(
        &self,
        caller: &Caller,
        id: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<SandboxInfo> {
        let rec = self.visible_sandbox(caller, id)?;
        if rec.state.is_terminal() {
            return Err(Error::conflict(format!(
                "runtime {id} is {}, its time to live cannot change",
                rec.state
            ))
            .with_runtime(id));
        }
        self.store.set_expires_at(id, at)?;
        self.visible_sandbox(caller, id)
    }

    /// Kill or park every running sandbox whose deadline is at or before
    /// `now`. Returns the ids acted on; failures are logged and retried on
    /// the next call.
    pub async fn reap_expired(&self, now: DateTime<Utc>) -> Vec<String> {
        self.record_failed_spawns();
        let expired = match self.store.expired_sandboxes(now) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reaper: cannot list expired sandboxes");
                return Vec::new();
            }
        };
        let mut acted = Vec::new();
        for rec in expired.into_iter().filter(|r| self.owns(r)) {
            let action = rec.spec.on_timeout;
            let res = match action {
                OnTimeout::Kill => self.terminate(&Caller::Admin, &rec.id).await.map(|_| ()),
                OnTimeout::Pause => {
                    let req = SnapshotRequest {
                        description: Some("paused when its time to live ran out".into()),
                        ..Default::default()
                    };
                    self.park(&Caller::Admin, &rec.id, ParkReason::Paused, req)
                        .await
                        .map(|_| ())
                }
            };
            match res {
                Ok(()) => {
                    self.emit(
                        Event::new(godel_core::EventKind::Expired)
                            .runtime(&rec.id)
                            .team(&rec.team)
                            .data(json!({"action": action.as_str(), "expires_at": rec.expires_at})),
                    );
                    acted.push(rec.id);
                }
                Err(e) => tracing::warn!(sandbox = %rec.id, error = %e, "reaper: failed"),
            }
        }
        acted
    }

    /// Store the `error` state of failed spawns the store refused before
    /// (a full disk); what it still refuses waits for the next call.
    pub(crate) fn record_failed_spawns(&self) {
        let pending: Vec<(String, String)> = self
            .unrecorded
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, reason) in pending {
            match self
                .store
                .transition(&id, SandboxState::Error, Some(&reason))
            {
                Ok(info) => {
                    self.unrecorded.lock().remove(&id);
                    self.emit_state(&id, &info.team, json!({"state": "error", "reason": reason}));
                }
                // Gone or moved on meanwhile: nothing left to record.
                Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::Conflict) => {
                    self.unrecorded.lock().remove(&id);
                }
                Err(e) => {
                    tracing::debug!(sandbox = %id, error = %e, "failed spawn still unrecorded")
                }
            }
        }
    }

    /// Run [`Control::reap_expired`] every `interval` until the control plane is dropped.
    pub fn start_reaper(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.reap_expired(Utc::now()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use godel_core::{ErrorCode, SandboxState, SpawnSpec};
    use godel_testkit::{Behaviour, FakeRuntime, Op};

    use crate::{Caller, Control, Settings};

    /// A spawn that fails while the store refuses writes is not left
    /// `creating`: the reaper's next tick stores its `error` state.
    #[tokio::test]
    async fn a_failed_spawn_the_store_refused_is_recorded_by_the_reaper() {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::open(dir.path(), Settings::default()).unwrap();
        let fake = Arc::new(FakeRuntime::new("worktree"));
        fake.set(
            Op::Spawn,
            Behaviour {
                latency: Duration::from_millis(300),
                fail: Some((ErrorCode::Internal, None)),
                ..Default::default()
            },
        );
        c.register(fake.clone());
        let spec = SpawnSpec {
            runtime: Some("worktree".into()),
            ..Default::default()
        };
        let c2 = c.clone();
        let spawn = tokio::spawn(async move { c2.spawn(&Caller::Admin, spec).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let set_query_only = |on: bool| c.store.refuse_writes(on);
        set_query_only(true);
        let err = spawn.await.unwrap().unwrap_err();
        let id = err
            .runtime_id
            .clone()
            .expect("the failure names the runtime");
        let rec = c.visible_sandbox(&Caller::Admin, &id).unwrap();
        assert_eq!(
            rec.state,
            SandboxState::Creating,
            "the store took the write after all"
        );

        c.reap_expired(chrono::Utc::now()).await;
        assert_eq!(
            c.visible_sandbox(&Caller::Admin, &id).unwrap().state,
            SandboxState::Creating,
            "still refused: still waiting"
        );
        set_query_only(false);
        c.reap_expired(chrono::Utc::now()).await;
        let rec = c.visible_sandbox(&Caller::Admin, &id).unwrap();
        assert_eq!(rec.state, SandboxState::Error);
        assert!(rec.reason.unwrap_or_default().starts_with("spawn failed"));
        assert!(c.unrecorded.lock().is_empty());
    }
}
