//! Health checks and auto-restart. Two `HealthMonitor`s probe every live
//! runtime on the configured interval (provider status, then the exec probe):
//! one restarts on failure, one only reports. A runtime uses the restarting
//! monitor when its spec says `restart: on-failure`
//! (`godel spawn --restart on-failure`) or `[health] restart = "on-failure"`.
//! A restart brings it back under the same id: from its latest snapshot when
//! it has one, else re-created from its spec.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::FutureExt;
use godel_core::{Error, ExecRequest, Result, SandboxState};
use godel_policy::health::{
    HealthAction, HealthEvent, HealthMonitor, Probe, ProbeFn, RestartPolicy, RestartSource,
};
use tokio::sync::mpsc;

use super::{Caller, Control};

/// The monitors (index 0: report only, 1: restart on failure).
pub struct HealthMonitors {
    monitors: [HealthMonitor; 2],
}

fn probe_fn(me: Weak<Control>) -> ProbeFn {
    Arc::new(move |id: String| {
        let me = me.clone();
        async move {
            let Some(c) = me.upgrade() else {
                return Probe::dead("daemon stopping");
            };
            c.probe(&id).await
        }
        .boxed()
    })
}

impl Control {
    /// Start the health monitors and watch every live runtime.
    pub fn start_health(self: &Arc<Self>) {
        let cfg = &self.policy.config.health;
        let mut policies = [cfg.policy(), cfg.policy()];
        policies[0].restart = RestartPolicy::Never;
        policies[1].restart = RestartPolicy::OnFailure;
        let (m0, rx0) = HealthMonitor::new(policies[0], probe_fn(Arc::downgrade(self)));
        let (m1, rx1) = HealthMonitor::new(policies[1], probe_fn(Arc::downgrade(self)));
        if self
            .health
            .set(HealthMonitors { monitors: [m0, m1] })
            .is_err()
        {
            return;
        }
        for rx in [rx0, rx1] {
            self.drain_health(rx);
        }
        if let Ok(list) = self.store.list_sandboxes(None, false) {
            for r in list
                .into_iter()
                .filter(|r| r.state == SandboxState::Running && self.owns(r))
            {
                self.watch(&r.id);
            }
        }
    }

    fn drain_health(self: &Arc<Self>, mut rx: mpsc::UnboundedReceiver<HealthEvent>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Some(c) = me.upgrade() else { break };
                c.on_health(ev).await;
            }
        });
    }

    fn wants_restart(&self, id: &str) -> bool {
        let own = self
            .store
            .get_sandbox(id)
            .ok()
            .flatten()
            .and_then(|r| r.spec.restart);
        own.unwrap_or(self.policy.config.health.restart) == RestartPolicy::OnFailure
    }

    /// Start probing a runtime (after spawn, restore, resume).
    pub(crate) fn watch(&self, id: &str) {
        if let Some(h) = self.health.get() {
            let latest = self
                .store
                .list_snapshots(None, Some(id))
                .ok()
                .and_then(|l| l.first().map(|s| s.id.clone()));
            let restart = self.wants_restart(id) as usize;
            h.monitors[1 - restart].unwatch(id);
            h.monitors[restart].watch(id, latest);
        }
    }

    /// Stop probing (terminate, pause).
    pub(crate) fn unwatch(&self, id: &str) {
        if let Some(h) = self.health.get() {
            for m in &h.monitors {
                m.unwatch(id);
            }
        }
    }

    /// Tell the monitor which snapshot a restart would use.
    pub(crate) fn health_snapshot(&self, id: &str, snap: &str) {
        if let Some(h) = self.health.get() {
            for m in &h.monitors {
                m.set_snapshot(id, Some(snap.to_string()));
            }
        }
    }

    /// One probe: the provider's view, then the exec probe.
    async fn probe(&self, id: &str) -> Probe {
        let rec = match self.store.get_sandbox(id) {
            Ok(Some(r)) => r,
            _ => return Probe::dead("record gone"),
        };
        if rec.state.is_terminal() {
            return Probe::dead(rec.reason.unwrap_or_else(|| rec.state.to_string()));
        }
        let Ok(p) = self.provider(&rec.runtime) else {
            return Probe::dead("runtime not registered");
        };
        match p.status(id).await {
            Ok(st) if st.state == SandboxState::Error => {
                return Probe::dead(
                    st.reason
                        .unwrap_or_else(|| "the runtime reports error".into()),
                );
            }
            Ok(_) => {}
            Err(e) => return Probe::dead(e.message),
        }
        let cfg = &self.policy.config.health;
        if cfg.probe.is_empty() {
            return Probe::healthy();
        }
        let mut req = ExecRequest::new(cfg.probe.clone());
        req.timeout_ms = Some(cfg.probe_timeout_secs.max(1) * 1000);
        match p.exec_collect(id, req).await {
            Ok(o) if o.exit_code == 0 => Probe::healthy(),
            Ok(o) => Probe::unresponsive(format!("probe exited {}", o.exit_code)),
            Err(e) => Probe::unresponsive(e.message),
        }
    }

    async fn on_health(&self, ev: HealthEvent) {
        let mut event = ev.to_event();
        if let Ok(Some(r)) = self.store.get_sandbox(&ev.id) {
            event = event.team(r.team);
        }
        self.emit(event);
        match ev.action {
            HealthAction::Died { reason, .. } | HealthAction::GiveUp { reason, .. } => {
                if let Ok(Some(r)) = self.store.get_sandbox(&ev.id)
                    && !r.state.is_terminal()
                {
                    let _ = self.mark_dead(&ev.id, &reason);
                }
            }
            HealthAction::Restart { source, .. } => {
                let res = self.restart(&ev.id, source).await;
                if let Some(h) = self.health.get() {
                    for m in &h.monitors {
                        m.restart_finished(
                            &ev.id,
                            res.as_ref().map(|_| ()).map_err(|e| e.message.clone()),
                        );
                    }
                }
                if res.is_ok() {
                    let rt = self
                        .store
                        .get_sandbox(&ev.id)
                        .ok()
                        .flatten()
                        .map(|r| r.runtime)
                        .unwrap_or_default();
                    self.metrics().inc_restart(&rt);
                }
            }
            HealthAction::Healthy | HealthAction::Unhealthy { .. } => {}
        }
    }

    /// Bring a dead runtime back under the same id.
    async fn restart(&self, id: &str, source: RestartSource) -> Result<()> {
        let rec = self
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::not_found(format!("runtime {id} not found")))?;
        if !rec.state.is_terminal() {
            let _ = self.mark_dead(id, "restarting");
        }
        if let Ok(p) = self.provider(&rec.runtime) {
            let _ = p.terminate(id).await;
        }
        self.store.delete_sandbox(id)?;
        let out = match source {
            RestartSource::Snapshot { snapshot_id } => {
                self.restore_as(&Caller::Admin, &snapshot_id, id.to_string())
                    .await
            }
            RestartSource::Recreate => {
                let provider = self.provider(&rec.runtime)?;
                self.create_record(id, &rec.spec, rec.restored_from.as_deref())?;
                let started = std::time::Instant::now();
                let res =
                    tokio::time::timeout(Duration::from_secs(300), provider.spawn(id, &rec.spec))
                        .await
                        .unwrap_or_else(|_| Err(Error::timeout("restart timed out")));
                self.confirm_spawn(id, provider.as_ref(), res, started)
                    .await
            }
        };
        out.map(|_| ())
    }
}
