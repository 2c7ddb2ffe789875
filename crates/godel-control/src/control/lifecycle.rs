//! Spawn, terminate, status, list, pause/resume and waiting: the record is
//! written before each side effect and confirmed after it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use godel_core::{
    Error, ErrorCode, Event, Result, RuntimeInfo, RuntimeProvider, RuntimeState, SpawnSpec, Spawned,
    new_runtime_id,
};
use serde_json::json;

use super::{Caller, Control};
use crate::store::Reservation;

/// What a spec reserves against the team quota.
pub fn reservation(spec: &SpawnSpec) -> Reservation {
    Reservation {
        cpu_millis: spec.resources.cpu.map(|c| c.millis()).unwrap_or(0),
        memory_bytes: spec.resources.memory.map(|m| m.get()).unwrap_or(0),
        disk_bytes: spec.resources.disk.map(|d| d.get()).unwrap_or(0),
    }
}

impl Control {
    /// Resolve team and runtime for a spawn request; fills `spec.team` and `spec.runtime`.
    pub fn prepare_spawn(&self, caller: &Caller, spec: &mut SpawnSpec) -> Result<Arc<dyn RuntimeProvider>> {
        spec.validate()?;
        let team = caller.spawn_team(spec.team.as_deref(), &self.settings.default_team)?;
        godel_core::validate_name("team", &team)?;
        let rec = self.team_or_default(&team)?;
        let runtime = spec
            .runtime
            .clone()
            .or(rec.runtime.clone())
            .unwrap_or_else(|| self.settings.default_runtime.clone());
        let provider = self.provider(&runtime)?;
        spec.team = Some(team);
        spec.runtime = Some(runtime);
        if let Some(iso) = self.settings.isolation_override {
            spec.isolation = iso;
        }
        Ok(provider)
    }

    /// Spawn a runtime. The record (with its quota reservation) is written first.
    pub async fn spawn(&self, caller: &Caller, mut spec: SpawnSpec) -> Result<RuntimeInfo> {
        let provider = self.prepare_spawn(caller, &mut spec)?;
        let id = new_runtime_id();
        self.create_record(&id, &spec, None)?;
        let timeout = spec
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(self.settings.spawn_timeout);
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(timeout, provider.spawn(&id, &spec)).await;
        let res = res.unwrap_or_else(|_| {
            Err(Error::timeout(format!("spawn did not finish within {} s", timeout.as_secs())))
        });
        self.confirm_spawn(&id, provider.as_ref(), res, started).await
    }

    /// Write a `creating` record for a new runtime, reserving quota atomically.
    pub(crate) fn create_record(&self, id: &str, spec: &SpawnSpec, restored_from: Option<&str>) -> Result<RuntimeInfo> {
        let team = spec.team.clone().unwrap_or_else(|| self.settings.default_team.clone());
        let now = Utc::now();
        let info = RuntimeInfo {
            id: id.to_string(),
            runtime: spec.runtime.clone().unwrap_or_default(),
            team: team.clone(),
            state: RuntimeState::Creating,
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
            reason: None,
            restored_from: restored_from.map(String::from),
            handle: Default::default(),
            usage: None,
            pid: None,
        };
        let quota = self.team_or_default(&team)?.quota();
        self.store.insert_runtime(&info, reservation(spec), quota)?;
        self.emit(
            Event::new("state_changed")
                .runtime(id)
                .team(&team)
                .data(json!({"state": "creating", "runtime": info.runtime, "restored_from": restored_from})),
        );
        Ok(info)
    }

    /// Confirm (running) or fail (error) a spawn/restore after the provider returned.
    pub(crate) async fn confirm_spawn(
        &self,
        id: &str,
        provider: &dyn RuntimeProvider,
        res: Result<Spawned>,
        started: std::time::Instant,
    ) -> Result<RuntimeInfo> {
        match res {
            Ok(sp) => {
                self.store.set_handle(id, &sp.handle, sp.pid)?;
                let info = self.store.transition(id, RuntimeState::Running, None)?;
                self.emit(
                    Event::new("state_changed")
                        .runtime(id)
                        .team(&info.team)
                        .data(json!({"state": "running", "runtime": info.runtime,
                                     "duration_ms": started.elapsed().as_millis() as u64})),
                );
                Ok(info)
            }
            Err(e) if matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::NotFound) => {
                // The caller's input was bad (unknown ref, missing repo): leave no record behind.
                let _ = provider.terminate(id).await;
                if let Ok(Some(rec)) = self.store.get_runtime(id) {
                    self.store.delete_runtime(id)?;
                    self.emit(
                        Event::new("spawn_rejected")
                            .runtime(id)
                            .team(&rec.team)
                            .data(json!({"code": e.code, "message": e.message})),
                    );
                }
                Err(e)
            }
            Err(e) => {
                let reason = format!("spawn failed: {}", e.message);
                if let Ok(info) = self.store.transition(id, RuntimeState::Error, Some(&reason)) {
                    self.emit(
                        Event::new("state_changed")
                            .runtime(id)
                            .team(&info.team)
                            .data(json!({"state": "error", "reason": reason, "code": e.code})),
                    );
                }
                // Best effort: release whatever the provider may have created.
                let _ = provider.terminate(id).await;
                Err(e.with_runtime(id))
            }
        }
    }

    /// Stop a runtime and release it. Idempotent for runtimes already stopped.
    pub async fn terminate(&self, caller: &Caller, id: &str) -> Result<RuntimeInfo> {
        let rec = self.visible_runtime(caller, id)?;
        if rec.state.is_terminal() {
            return Ok(rec);
        }
        let rec = self.store.transition(id, RuntimeState::Terminating, None)?;
        self.emit(Event::new("state_changed").runtime(id).team(&rec.team).data(json!({"state": "terminating"})));
        let res = match self.provider(&rec.runtime) {
            Ok(p) => p.terminate(id).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                let rec = self.store.transition(id, RuntimeState::Terminated, None)?;
                self.emit(Event::new("state_changed").runtime(id).team(&rec.team).data(json!({"state": "terminated"})));
                Ok(rec)
            }
            Err(e) => {
                let reason = format!("terminate failed: {}", e.message);
                let _ = self.store.transition(id, RuntimeState::Error, Some(&reason));
                self.emit(Event::new("state_changed").runtime(id).team(&rec.team).data(json!({"state": "error", "reason": reason})));
                Err(e.with_runtime(id))
            }
        }
    }

    /// The record merged with what the provider reports now (usage, pid).
    pub async fn status(&self, caller: &Caller, id: &str) -> Result<RuntimeInfo> {
        let mut rec = self.visible_runtime(caller, id)?;
        if rec.state.is_terminal() {
            return Ok(rec);
        }
        let provider = self.provider(&rec.runtime)?;
        match provider.status(id).await {
            Ok(st) => {
                if matches!(rec.state, RuntimeState::Running | RuntimeState::Paused) && st.state == RuntimeState::Error {
                    let reason = st.reason.clone().unwrap_or_else(|| "runtime died".into());
                    rec = self.mark_dead(id, &reason)?;
                } else {
                    rec.usage = st.usage;
                    rec.pid = st.pid.or(rec.pid);
                    for (k, v) in st.details {
                        rec.handle.entry(k).or_insert(v);
                    }
                }
            }
            Err(e) if e.code == ErrorCode::NotFound && rec.state == RuntimeState::Running => {
                rec = self.mark_dead(id, "the provider no longer knows this runtime")?;
            }
            Err(e) => return Err(e),
        }
        Ok(rec)
    }

    /// Mark a live runtime as failed and emit `died`.
    pub fn mark_dead(&self, id: &str, reason: &str) -> Result<RuntimeInfo> {
        let rec = self.store.transition(id, RuntimeState::Error, Some(reason))?;
        self.emit(Event::new("died").runtime(id).team(&rec.team).data(json!({"reason": reason})));
        self.emit(Event::new("state_changed").runtime(id).team(&rec.team).data(json!({"state": "error", "reason": reason})));
        Ok(rec)
    }

    /// React to what a provider reported on its own (a VM or process died).
    pub(crate) async fn on_provider_event(&self, ev: &Event) {
        if ev.kind != "died" {
            return;
        }
        let Some(id) = &ev.runtime_id else { return };
        if let Ok(Some(rec)) = self.store.get_runtime(id)
            && matches!(rec.state, RuntimeState::Running | RuntimeState::Paused)
        {
            let reason = ev.data.get("reason").and_then(|r| r.as_str()).unwrap_or("runtime died");
            let _ = self.store.transition(id, RuntimeState::Error, Some(reason));
        }
    }

    /// Runtimes the caller may see.
    pub fn list(&self, caller: &Caller, include_terminal: bool) -> Result<Vec<RuntimeInfo>> {
        self.store.list_runtimes(caller.team_filter(), include_terminal)
    }

    pub async fn pause(&self, caller: &Caller, id: &str) -> Result<RuntimeInfo> {
        let rec = self.visible_runtime(caller, id)?;
        rec.state.transition(RuntimeState::Paused).map_err(|e| e.with_runtime(id))?;
        self.provider(&rec.runtime)?.pause(id).await?;
        let rec = self.store.transition(id, RuntimeState::Paused, None)?;
        self.emit(Event::new("state_changed").runtime(id).team(&rec.team).data(json!({"state": "paused"})));
        Ok(rec)
    }

    pub async fn resume(&self, caller: &Caller, id: &str) -> Result<RuntimeInfo> {
        let rec = self.visible_runtime(caller, id)?;
        rec.state.transition(RuntimeState::Running).map_err(|e| e.with_runtime(id))?;
        self.provider(&rec.runtime)?.resume(id).await?;
        let rec = self.store.transition(id, RuntimeState::Running, None)?;
        self.emit(Event::new("state_changed").runtime(id).team(&rec.team).data(json!({"state": "running"})));
        Ok(rec)
    }

    /// Wait until a runtime's record reaches `state`.
    pub async fn wait_for_state(&self, caller: &Caller, id: &str, state: RuntimeState, timeout: Duration) -> Result<RuntimeInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.status(caller, id).await?;
            if rec.state == state {
                return Ok(rec);
            }
            if rec.state.is_terminal() {
                return Err(Error::conflict(format!("runtime {id} is {} and will never be {state}", rec.state)));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!("runtime {id} is still {} after waiting for {state}", rec.state)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A live runtime's record and provider, or a clear error.
    pub(crate) fn live(&self, caller: &Caller, id: &str) -> Result<(RuntimeInfo, Arc<dyn RuntimeProvider>)> {
        let rec = self.visible_runtime(caller, id)?;
        if rec.state != RuntimeState::Running {
            let why = rec.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            return Err(Error::conflict(format!("runtime {id} is {}{why}, not running", rec.state)).with_runtime(id));
        }
        let p = self.provider(&rec.runtime)?;
        Ok((rec, p))
    }
}
