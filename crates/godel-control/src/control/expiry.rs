//! Time to live: every sandbox may carry a deadline (`expires_at`, from
//! `SpawnSpec::ttl_secs` or set later); one reaper kills or parks the
//! running sandboxes whose deadline has passed, as their `on_timeout` says.
//! The native API and the E2B surface both set deadlines through here.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_core::{Error, Event, OnTimeout, ParkReason, Result, SandboxInfo, SnapshotRequest};
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
        let expired = match self.store.expired_sandboxes(now) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reaper: cannot list expired sandboxes");
                return Vec::new();
            }
        };
        let mut acted = Vec::new();
        for rec in expired {
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
