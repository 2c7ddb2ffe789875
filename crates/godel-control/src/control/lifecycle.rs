//! Spawn, terminate, status, list, pause/resume and waiting: the record is
//! written before each side effect and confirmed after it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use std::collections::HashMap;

use godel_core::{
    Error, ErrorCode, Event, Result, RuntimeProvider, SandboxInfo, SandboxState, SpawnSpec,
    Spawned, new_sandbox_id,
};
use godel_policy::{Admission, PlanInput};
use serde_json::json;

use super::{Caller, Control, SpawnOptions};
use crate::store::Reservation;

/// The runtime that makes workspaces from git repositories.
const REPO_RUNTIME: &str = "worktree";

/// What a spec reserves against the team quota.
pub fn reservation(spec: &SpawnSpec) -> Reservation {
    Reservation {
        cpu_millis: spec.resources.cpu.map(|c| c.millis()).unwrap_or(0),
        memory_bytes: spec.resources.memory.map(|m| m.get()).unwrap_or(0),
        disk_bytes: spec.resources.disk.map(|d| d.get()).unwrap_or(0),
    }
}

impl Control {
    /// Spawn a runtime with the default options (fail at once when over quota).
    pub async fn spawn(&self, caller: &Caller, spec: SpawnSpec) -> Result<SandboxInfo> {
        self.spawn_with(caller, spec, SpawnOptions::default()).await
    }

    /// Spawn a runtime: team policy and per-agent limits, then the quota
    /// reservation (written with the record, through the fair queue when the
    /// request may wait), then the fallback plan with retries and circuit
    /// breakers. Every decision is an event and a metric.
    pub async fn spawn_with(
        &self,
        caller: &Caller,
        mut spec: SpawnSpec,
        opts: SpawnOptions,
    ) -> Result<SandboxInfo> {
        spec.validate()?;
        let request = spec.clone();
        let team = caller.spawn_team(spec.team.as_deref(), &self.settings.default_team)?;
        godel_core::validate_name("team", &team)?;
        let (tp, quota) = self.team_policy(&team)?;
        if let Some(r) = &spec.runtime
            && !tp.allows(r)
        {
            return Err(Error::denied(format!(
                "team {team} may not use runtime {r} (allowed: {})",
                tp.allowed_runtimes.join(", ")
            )));
        }
        spec.resources = tp.limits.apply(&spec.resources)?;
        spec.team = Some(team.clone());
        self.check_template(&team, &tp.runtime, &mut spec)?;
        if let Some(iso) = self.settings.isolation_override {
            spec.isolation = iso;
        }
        self.check_budget(&team)?;

        // A canary rollout of the team may route this spawn.
        let route = self.route_spawn(&team, &spec);
        let out = self
            .spawn_planned(&team, &tp, quota, &request, spec, opts, route.as_ref())
            .await;
        if let Some(r) = &route {
            match &out {
                Ok(info) => self.observe_route(&team, r, Ok(&info.runtime)),
                Err(e) => self.observe_route(&team, r, Err(e.code)),
            }
        }
        out
    }

    /// The spawn path after the team's policy: warm pool, plan, quota, fallback.
    #[allow(clippy::too_many_arguments)]
    async fn spawn_planned(
        &self,
        team: &str,
        tp: &godel_policy::TeamPolicy,
        quota: crate::store::Quota,
        request: &SpawnSpec,
        mut spec: SpawnSpec,
        opts: SpawnOptions,
        route: Option<&super::rollout::Route>,
    ) -> Result<SandboxInfo> {
        let team = team.to_string();
        // A matching warm pool answers at once.
        let pool_runtime = route
            .map(|r| r.runtime.clone())
            .or_else(|| spec.runtime.clone())
            .unwrap_or_else(|| tp.runtime.clone());
        if let Some(info) = self
            .claim_warm(request, &pool_runtime, &spec, quota)
            .await?
        {
            return Ok(info);
        }

        // Plan: the requested runtime only, or the team's chain (its own
        // runtime first when one is set for the team).
        let mut chain = Vec::new();
        if self.team_runtime_is_set(&team)? {
            chain.push(tp.runtime.clone());
        }
        for r in &tp.fallback {
            if !chain.contains(r) {
                chain.push(r.clone());
            }
        }
        if chain.is_empty() {
            chain.push(tp.runtime.clone());
        }
        if let Some(r) = route {
            // The routed runtime first; the target only when routed to it.
            chain.retain(|c| *c != r.runtime && *c != r.target);
            chain.insert(0, r.runtime.clone());
        }
        // A workspace from a git repo is what the worktree runtime offers; the
        // others would silently ignore the repo.
        if spec.repo.is_some() {
            if let Some(r) = spec.runtime.as_deref().filter(|r| *r != REPO_RUNTIME) {
                return Err(Error::invalid(format!(
                    "runtime {r} does not take --repo (workspaces from git repos are the {REPO_RUNTIME} runtime's); copy files in with `godel cp` instead"
                )));
            }
            chain.retain(|r| r == REPO_RUNTIME);
            if chain.is_empty() {
                chain.push(REPO_RUNTIME.to_string());
            }
        }
        // A network asked for goes where it is given: egress rules only to
        // runtimes that enforce them, plain egress not to microVMs (no
        // network device yet, they refuse it), so the plan skips them.
        if spec.network.mode == godel_core::NetworkMode::Nat && spec.runtime.is_none() {
            let n = &spec.network;
            let rules = !n.allow.is_empty() || !n.deny.is_empty() || !n.internet;
            chain.retain(|r| {
                let policy = self
                    .provider(r)
                    .is_ok_and(|p| p.capabilities().network_policy);
                policy || (!rules && r != "microvm")
            });
        }
        let names: Vec<String> = match &spec.runtime {
            Some(r) => vec![r.clone()],
            None => chain.clone(),
        };
        let mut avail = HashMap::new();
        for n in &names {
            // A runtime the caller named is attempted even when its probe says
            // no: its own error (a rejected key, a missing image) is the answer.
            let a = if spec.runtime.is_some() {
                self.provider(n)
                    .ok()
                    .map(|_| godel_core::Availability::yes("requested"))
            } else {
                self.cached_availability(n).await
            };
            if let Some(a) = a {
                avail.insert(n.clone(), a);
            }
        }
        let input = PlanInput {
            chain: &chain,
            requested: spec.runtime.as_deref(),
            allowed: &tp.allowed_runtimes,
        };
        let plan = godel_policy::plan(input, |n| avail.get(n).cloned(), &self.policy.circuits)
            .require_candidates()?;

        // Reserve quota with the record, waiting in the fair queue if asked.
        let id = new_sandbox_id();
        spec.runtime = Some(plan.candidates[0].clone());
        let info = self.new_record(&id, &spec, None);
        let want = reservation(&spec);
        let try_reserve = || match self.store.insert_sandbox(&info, want, quota) {
            Ok(()) => Ok(Admission::Granted),
            Err(e) if e.code == ErrorCode::ResourceExhausted => Ok(Admission::Wait(e.message)),
            Err(e) => Err(e),
        };
        // The request decides whether to wait; the team's queue timeout caps it.
        let queue_wait = opts
            .queue_wait
            .map(|w| w.min(tp.queue_timeout))
            .filter(|w| !w.is_zero());
        match queue_wait {
            Some(wait) => {
                self.policy
                    .metrics
                    .set_queue_depth(&team, self.policy.queue.depth(&team) + 1);
                let r = self
                    .policy
                    .queue
                    .acquire(&team, try_reserve, tokio::time::Instant::now() + wait)
                    .await;
                self.policy
                    .metrics
                    .set_queue_depth(&team, self.policy.queue.depth(&team));
                r?;
            }
            None => {
                if let Admission::Wait(why) = try_reserve()? {
                    return Err(Error::exhausted(why));
                }
            }
        }
        for s in &plan.skipped {
            self.emit(Event::new(godel_core::EventKind::SpawnFallback).runtime(&id).team(&team).data(
                json!({"runtime": s.runtime, "outcome": "skipped", "reason": s.reason.to_string()}),
            ));
        }
        self.emit(Event::new(godel_core::EventKind::StateChanged).runtime(&id).team(&team).data(
            json!({"state": "creating", "runtime": info.runtime, "candidates": plan.candidates}),
        ));

        let timeout = spec
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(self.settings.spawn_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let started = std::time::Instant::now();
        let retry = self.policy.config.retry.policy();
        let on_decision = |d: &godel_policy::FallbackDecision| {
            self.policy.metrics.record_decision(d);
            self.emit(d.to_event().runtime(&id).team(&team));
        };
        let attempt = |rt: &str| {
            let rt = rt.to_string();
            let mut spec = spec.clone();
            spec.runtime = Some(rt.clone());
            let id = id.clone();
            async move {
                let p = self.provider(&rt)?;
                self.store.set_runtime_kind(&id, &rt, &spec)?;
                match p.spawn(&id, &spec).await {
                    Ok(s) => Ok(s),
                    Err(e) => {
                        // Leave nothing behind before the next attempt.
                        let _ = p.terminate(&id).await;
                        Err(e)
                    }
                }
            }
        };
        let res = godel_policy::spawn_with_fallback(
            &plan,
            &retry,
            Some(deadline),
            &self.policy.circuits,
            on_decision,
            attempt,
        )
        .await;
        match res {
            Ok((rt, spawned)) => {
                let p = self.provider(&rt)?;
                let out = self
                    .confirm_spawn(&id, p.as_ref(), Ok(spawned), started)
                    .await;
                self.policy.metrics.observe_spawn(&rt, started.elapsed());
                self.policy.metrics.observe_boot(&rt, started.elapsed());
                self.policy
                    .metrics
                    .inc_spawn(&rt, if out.is_ok() { "ok" } else { "error" });
                self.activity.spawned(&team, out.is_ok());
                out
            }
            Err(e) => {
                let rt = self
                    .store
                    .get_sandbox(&id)?
                    .map(|r| r.runtime)
                    .unwrap_or_default();
                self.policy.metrics.inc_spawn(&rt, "error");
                self.activity.spawned(&team, false);
                let out = match self.provider(&rt) {
                    Ok(p) => self.confirm_spawn(&id, p.as_ref(), Err(e), started).await,
                    Err(_) => Err(e),
                };
                self.released();
                out
            }
        }
    }

    /// A fresh `creating` record for `spec` (not yet stored).
    fn new_record(&self, id: &str, spec: &SpawnSpec, restored_from: Option<&str>) -> SandboxInfo {
        let now = Utc::now();
        SandboxInfo {
            id: id.to_string(),
            runtime: spec.runtime.clone().unwrap_or_default(),
            team: spec
                .team
                .clone()
                .unwrap_or_else(|| self.settings.default_team.clone()),
            state: SandboxState::Creating,
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
            reason: None,
            restored_from: restored_from.map(String::from),
            handle: Default::default(),
            usage: None,
            pid: None,
            expires_at: spec
                .ttl_secs
                .map(|s| now + chrono::Duration::seconds(s.min(i64::MAX as u64) as i64)),
            parked: None,
            owner: self.settings.replica_id.clone(),
        }
    }

    /// Write a `creating` record for a new runtime, reserving quota atomically.
    pub(crate) fn create_record(
        &self,
        id: &str,
        spec: &SpawnSpec,
        restored_from: Option<&str>,
    ) -> Result<SandboxInfo> {
        let info = self.new_record(id, spec, restored_from);
        self.check_budget(&info.team)?;
        let (_, quota) = self.team_policy(&info.team)?;
        self.store.insert_sandbox(&info, reservation(spec), quota)?;
        self.emit_state(
            id,
            &info.team,
            json!({"state": "creating", "runtime": info.runtime, "restored_from": restored_from}),
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
    ) -> Result<SandboxInfo> {
        match res {
            Ok(sp) => {
                self.store.set_handle(id, &sp.handle, sp.pid)?;
                let info = self.store.transition(id, SandboxState::Running, None)?;
                self.watch(id);
                self.emit_state(
                    id,
                    &info.team,
                    json!({"state": "running", "runtime": info.runtime,
                                     "duration_ms": started.elapsed().as_millis() as u64}),
                );
                Ok(info)
            }
            Err(e) if matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::NotFound) => {
                // The caller's input was bad (unknown ref, missing repo): leave no record behind.
                let _ = provider.terminate(id).await;
                if let Ok(Some(rec)) = self.store.get_sandbox(id) {
                    self.store.delete_sandbox(id)?;
                    self.emit(
                        Event::new(godel_core::EventKind::SpawnRejected)
                            .runtime(id)
                            .team(&rec.team)
                            .data(json!({"code": e.code, "message": e.message})),
                    );
                }
                Err(e)
            }
            Err(e) => {
                let reason = format!("spawn failed: {}", e.message);
                match self
                    .store
                    .transition(id, SandboxState::Error, Some(&reason))
                {
                    Ok(info) => self.emit_state(
                        id,
                        &info.team,
                        json!({"state": "error", "reason": reason, "code": e.code}),
                    ),
                    // Not left `creating` for good: the reaper retries.
                    Err(_) => {
                        self.unrecorded.lock().insert(id.to_string(), reason);
                    }
                }
                // Best effort: release whatever the provider may have created.
                let _ = provider.terminate(id).await;
                Err(e.with_runtime(id))
            }
        }
    }

    /// Stop a runtime and release it. Idempotent for runtimes already
    /// stopped; a parked runtime loses its snapshot and stays stopped; a
    /// failed one (`error`) has what its runtime still holds released.
    pub async fn terminate(&self, caller: &Caller, id: &str) -> Result<SandboxInfo> {
        let rec = self.visible_sandbox(caller, id)?;
        if rec.state.is_terminal() {
            if rec.parked.is_some() {
                return self.discard_parked(caller, rec).await;
            }
            if rec.state == SandboxState::Error
                && let Ok(p) = self.provider(&rec.runtime)
                && let Err(e) = p.terminate(id).await
            {
                // A sandbox that died or failed may still hold what its
                // runtime made (workspace, jail directories, a VM's files).
                tracing::warn!(runtime = %id, error = %e, "releasing a failed sandbox");
            }
            return Ok(rec);
        }
        self.unwatch(id);
        let rec = self.store.transition(id, SandboxState::Terminating, None)?;
        self.emit_state(id, &rec.team, json!({"state": "terminating"}));
        let res = match self.provider(&rec.runtime) {
            Ok(p) => p.terminate(id).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                let rec = self.store.transition(id, SandboxState::Terminated, None)?;
                self.emit_state(id, &rec.team, json!({"state": "terminated"}));
                self.released();
                Ok(rec)
            }
            Err(e) => {
                let reason = format!("terminate failed: {}", e.message);
                let _ = self
                    .store
                    .transition(id, SandboxState::Error, Some(&reason));
                self.emit_state(id, &rec.team, json!({"state": "error", "reason": reason}));
                self.released();
                Err(e.with_runtime(id))
            }
        }
    }

    /// The record merged with what the provider reports now (usage, pid).
    pub async fn status(&self, caller: &Caller, id: &str) -> Result<SandboxInfo> {
        let mut rec = self.visible_sandbox(caller, id)?;
        // Another replica's sandbox (its owner did not answer): the stored
        // record is all this replica knows; its runtime is not ours to ask.
        if rec.state.is_terminal() || !self.owns(&rec) {
            return Ok(rec);
        }
        let provider = self.provider(&rec.runtime)?;
        match provider.status(id).await {
            Ok(st) => {
                if matches!(rec.state, SandboxState::Running | SandboxState::Paused)
                    && st.state == SandboxState::Error
                {
                    let reason = st.reason.clone().unwrap_or_else(|| "runtime died".into());
                    rec = self.mark_dead(id, &reason)?;
                } else {
                    if let Some(u) = &st.usage {
                        self.activity.sample(id, self.now(), u);
                    }
                    rec.usage = st.usage;
                    rec.pid = st.pid.or(rec.pid);
                    for (k, v) in st.details {
                        rec.handle.entry(k).or_insert(v);
                    }
                }
            }
            Err(e) if e.code == ErrorCode::NotFound && rec.state == SandboxState::Running => {
                rec = self.mark_dead(id, "the provider no longer knows this runtime")?;
            }
            // Mid-transition (being created or terminated): the record says it.
            Err(e)
                if e.code == ErrorCode::NotFound
                    && matches!(
                        rec.state,
                        SandboxState::Creating | SandboxState::Terminating
                    ) => {}
            Err(e) => return Err(e),
        }
        Ok(rec)
    }

    /// Mark a live runtime as failed and emit `died`.
    pub fn mark_dead(&self, id: &str, reason: &str) -> Result<SandboxInfo> {
        let rec = self
            .store
            .transition(id, SandboxState::Error, Some(reason))?;
        self.emit(
            Event::new(godel_core::EventKind::Died)
                .runtime(id)
                .team(&rec.team)
                .data(json!({"reason": reason})),
        );
        self.emit_state(id, &rec.team, json!({"state": "error", "reason": reason}));
        self.released();
        Ok(rec)
    }

    /// React to what a provider reported on its own (a VM or process died).
    pub(crate) async fn on_provider_event(&self, ev: &Event) {
        if ev.kind == "oom" {
            let rt = ev
                .runtime_id
                .as_deref()
                .and_then(|id| self.store.get_sandbox(id).ok().flatten())
                .map(|r| r.runtime)
                .unwrap_or_default();
            self.metrics().inc_oom(&rt, 1);
            return;
        }
        if ev.kind != "died" {
            return;
        }
        let Some(id) = &ev.runtime_id else { return };
        if let Ok(Some(rec)) = self.store.get_sandbox(id)
            && matches!(rec.state, SandboxState::Running | SandboxState::Paused)
        {
            let reason = ev
                .data
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("runtime died");
            let _ = self.store.transition(id, SandboxState::Error, Some(reason));
            self.released();
        }
    }

    /// Runtimes the caller may see.
    pub fn list(&self, caller: &Caller, include_terminal: bool) -> Result<Vec<SandboxInfo>> {
        self.store
            .list_sandboxes(caller.team_filter(), include_terminal)
    }

    pub async fn pause(&self, caller: &Caller, id: &str) -> Result<SandboxInfo> {
        let rec = self.visible_sandbox(caller, id)?;
        rec.state
            .transition(SandboxState::Paused)
            .map_err(|e| e.with_runtime(id))?;
        self.provider(&rec.runtime)?.pause(id).await?;
        self.unwatch(id);
        let rec = self.store.transition(id, SandboxState::Paused, None)?;
        self.emit_state(id, &rec.team, json!({"state": "paused"}));
        Ok(rec)
    }

    /// Resume a paused runtime; a parked one is restored under its own id.
    pub async fn resume(&self, caller: &Caller, id: &str) -> Result<SandboxInfo> {
        let rec = self.visible_sandbox(caller, id)?;
        if rec.parked.is_some() {
            return self.unpark(caller, id).await;
        }
        rec.state
            .transition(SandboxState::Running)
            .map_err(|e| e.with_runtime(id))?;
        self.provider(&rec.runtime)?.resume(id).await?;
        let rec = self.store.transition(id, SandboxState::Running, None)?;
        self.watch(id);
        self.emit_state(id, &rec.team, json!({"state": "running"}));
        Ok(rec)
    }

    /// Wait until a runtime's record reaches `state`.
    pub async fn wait_for_state(
        &self,
        caller: &Caller,
        id: &str,
        state: SandboxState,
        timeout: Duration,
    ) -> Result<SandboxInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.status(caller, id).await?;
            if rec.state == state {
                return Ok(rec);
            }
            if rec.state.is_terminal() {
                return Err(Error::conflict(format!(
                    "runtime {id} is {} and will never be {state}",
                    rec.state
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "runtime {id} is still {} after waiting for {state}",
                    rec.state
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A live runtime's record and provider, or a clear error.
    pub(crate) fn live(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(SandboxInfo, Arc<dyn RuntimeProvider>)> {
        let rec = self.visible_sandbox(caller, id)?;
        if rec.state != SandboxState::Running {
            let why = rec
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(Error::conflict(format!(
                "runtime {id} is {}{why}, not running",
                rec.state
            ))
            .with_runtime(id));
        }
        let p = self.provider(&rec.runtime)?;
        Ok((rec, p))
    }
}
