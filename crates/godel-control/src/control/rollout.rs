//! Canary rollouts of a team's new spawns to another runtime: the share
//! routed to the target follows the plan's steps (`1,5,25,100` every
//! `interval`), counted per step with `godel_policy::rollout`'s
//! deterministic spread; a spawn routed to the target that fails (or ends
//! on another runtime) is an error, and past `max_error_rate` the rollout
//! rolls back on its own: routing returns to the previous runtime and a
//! `rollout_rolled_back` event says why. Only spawns that name no runtime
//! (and bring no git repo, unless the target takes one) are routed. State
//! lives in memory and in the store's `rollouts` table (written on every
//! change), so it survives restarts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use godel_core::{Error, ErrorCode, Event, EventKind, Result, SpawnSpec};
use godel_policy::RolloutPlan;
use godel_policy::rollout::routes_to_target;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Caller, Control};
use crate::store::Store;

/// `godel rollout start` / `POST /v1/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub to: String,
    /// The runtime routing returns to on rollback (default: the team's runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// e.g. `1,5,25,100`.
    pub steps: String,
    /// e.g. `10m`.
    pub interval: String,
    /// e.g. `2%`.
    pub max_error_rate: String,
    /// Spawns on the target in a step before its error rate counts (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    RolledBack,
    Completed,
}

/// Counters of one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub percent: u32,
    /// Spawns routed by the rollout during this step.
    pub spawns: u64,
    /// Of those, sent to the target.
    pub target: u64,
    /// Of those, failed (or ended elsewhere).
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

/// A rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub team: String,
    pub from: String,
    pub to: String,
    pub plan: RolloutPlan,
    pub state: RolloutState,
    /// Index of the current step.
    pub step: usize,
    pub started_at: DateTime<Utc>,
    /// Running time before the last pause (ms).
    pub elapsed_ms: i64,
    /// When it last started or resumed running.
    pub running_since: Option<DateTime<Utc>>,
    pub steps: Vec<StepStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Rollout {
    fn elapsed_ms(&self, now: DateTime<Utc>) -> i64 {
        self.elapsed_ms
            + self
                .running_since
                .map(|t| (now - t).num_milliseconds().max(0))
                .unwrap_or(0)
    }

    /// Percent of new spawns going to the target now.
    pub fn share(&self) -> u32 {
        match self.state {
            RolloutState::RolledBack => 0,
            _ => self.plan.steps[self.step],
        }
    }
}

/// Where one spawn is routed.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub to_target: bool,
    /// Where this spawn goes.
    pub runtime: String,
    /// The rollout's target.
    pub target: String,
    pub step: usize,
}

pub(crate) fn load(store: &Store) -> Result<BTreeMap<String, Rollout>> {
    let mut out = BTreeMap::new();
    for r in store.list_rollouts()? {
        match serde_json::from_value::<Rollout>(r.data) {
            Ok(ro) => {
                out.insert(r.team, ro);
            }
            Err(e) => {
                tracing::warn!(team = %r.team, error = %e, "rollout record unreadable; ignored")
            }
        }
    }
    Ok(out)
}

impl Control {
    fn save_rollout(&self, r: &Rollout) {
        match serde_json::to_value(r) {
            Ok(v) => {
                if let Err(e) = self.store.put_rollout(&r.team, &v) {
                    tracing::warn!(team = %r.team, error = %e, "cannot store rollout");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode rollout"),
        }
    }

    fn rollout_event(&self, kind: EventKind, r: &Rollout, extra: serde_json::Value) {
        let mut data = json!({"from": r.from, "to": r.to, "percent": r.share(), "step": r.step});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        self.emit(Event::new(kind).team(&r.team).data(data));
    }

    /// Start (or restart) a rollout for a team.
    pub fn start_rollout(&self, caller: &Caller, req: RolloutRequest) -> Result<Rollout> {
        let team = caller.spawn_team(req.team.as_deref(), &self.settings.default_team)?;
        godel_core::validate_name("team", &team)?;
        let mut plan = RolloutPlan::parse(&req.steps, &req.interval, &req.max_error_rate)?;
        if let Some(n) = req.min_samples {
            if n == 0 {
                return Err(Error::invalid("min_samples: must be above zero"));
            }
            plan.min_samples = n;
        }
        let (tp, _) = self.team_policy(&team)?;
        let from = req.from.clone().unwrap_or_else(|| tp.runtime.clone());
        for (key, rt) in [("to", &req.to), ("from", &from)] {
            self.provider(rt).map_err(|e| Error {
                message: format!("{key}: {}", e.message),
                ..e
            })?;
            if !tp.allows(rt) {
                return Err(Error::denied(format!(
                    "{key}: team {team} may not use runtime {rt}"
                )));
            }
        }
        if from == req.to {
            return Err(Error::invalid(format!(
                "to: the team already runs on {from}; name another runtime"
            )));
        }
        let now = self.now();
        let r = Rollout {
            team: team.clone(),
            from,
            to: req.to.clone(),
            state: RolloutState::Running,
            step: 0,
            started_at: now,
            elapsed_ms: 0,
            running_since: Some(now),
            steps: plan
                .steps
                .iter()
                .enumerate()
                .map(|(i, p)| StepStats {
                    percent: *p,
                    started_at: (i == 0).then_some(now),
                    ..Default::default()
                })
                .collect(),
            plan,
            reason: None,
        };
        self.save_rollout(&r);
        self.rollout_event(
            EventKind::RolloutStarted,
            &r,
            json!({"steps": r.plan.steps, "interval_secs": r.plan.interval_secs,
                   "max_error_rate": r.plan.max_error_rate}),
        );
        self.rollouts.lock().insert(team, r.clone());
        Ok(r)
    }

    /// Rollouts the caller may see.
    pub fn rollouts(&self, caller: &Caller) -> Vec<Rollout> {
        self.advance_rollouts();
        self.rollouts
            .lock()
            .values()
            .filter(|r| caller.sees(&r.team))
            .cloned()
            .collect()
    }

    /// `pause`, `resume` or `rollback` a team's rollout.
    pub fn control_rollout(&self, caller: &Caller, team: &str, action: &str) -> Result<Rollout> {
        self.advance_rollouts();
        let now = self.now();
        let mut all = self.rollouts.lock();
        let r = all
            .get_mut(team)
            .filter(|r| caller.sees(&r.team))
            .ok_or_else(|| Error::not_found(format!("no rollout for team {team}")))?;
        let kind = match (action, r.state) {
            ("pause", RolloutState::Running) => {
                r.elapsed_ms = r.elapsed_ms(now);
                r.running_since = None;
                r.state = RolloutState::Paused;
                EventKind::RolloutPaused
            }
            ("resume", RolloutState::Paused) => {
                r.running_since = Some(now);
                r.state = RolloutState::Running;
                EventKind::RolloutResumed
            }
            (
                "rollback",
                RolloutState::Running | RolloutState::Paused | RolloutState::Completed,
            ) => {
                r.state = RolloutState::RolledBack;
                r.running_since = None;
                r.reason = Some("rolled back by hand".into());
                EventKind::RolloutRolledBack
            }
            ("pause" | "resume" | "rollback", s) => {
                return Err(Error::conflict(format!(
                    "the rollout of team {team} is {}; cannot {action} it",
                    serde_json::to_value(s)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("?")
                )));
            }
            (other, _) => {
                return Err(Error::invalid(format!(
                    "action: {other:?} is not one of pause, resume, rollback"
                )));
            }
        };
        let r = r.clone();
        drop(all);
        self.save_rollout(&r);
        self.rollout_event(kind, &r, json!({"reason": r.reason}));
        Ok(r)
    }

    /// Move running rollouts to the step their running time calls for.
    pub fn advance_rollouts(&self) {
        let now = self.now();
        let mut changed = Vec::new();
        {
            let mut all = self.rollouts.lock();
            for r in all.values_mut() {
                if r.state != RolloutState::Running {
                    continue;
                }
                let want = r.plan.step_at((r.elapsed_ms(now) / 1000) as u64);
                if want > r.step {
                    r.step = want;
                    r.steps[want].started_at = Some(now);
                    let last = want + 1 == r.plan.steps.len() && r.plan.steps[want] == 100;
                    if last {
                        r.state = RolloutState::Completed;
                        r.running_since = None;
                    }
                    changed.push((r.clone(), last));
                }
            }
        }
        for (r, last) in changed {
            self.save_rollout(&r);
            self.rollout_event(EventKind::RolloutStep, &r, json!({}));
            if last {
                self.rollout_event(EventKind::RolloutCompleted, &r, json!({}));
            }
        }
    }

    /// Where a team's new spawn goes, when a rollout routes it.
    pub(crate) fn route_spawn(&self, team: &str, spec: &SpawnSpec) -> Option<Route> {
        if spec.runtime.is_some() {
            return None;
        }
        self.advance_rollouts();
        let mut all = self.rollouts.lock();
        let r = all.get_mut(team)?;
        if r.state == RolloutState::RolledBack {
            return None;
        }
        if spec.repo.is_some() && r.to != "worktree" {
            return None;
        }
        let step = r.step;
        let st = &mut r.steps[step];
        let to_target = routes_to_target(st.spawns, st.percent);
        st.spawns += 1;
        if to_target {
            st.target += 1;
        }
        Some(Route {
            to_target,
            runtime: if to_target {
                r.to.clone()
            } else {
                r.from.clone()
            },
            target: r.to.clone(),
            step,
        })
    }

    /// Record how a routed spawn ended; roll back past the error threshold.
    /// Errors of the caller or of the team's limits (`INVALID_ARGUMENT`,
    /// quota, budget ...) say nothing about the target: such a spawn is not counted.
    pub(crate) fn observe_route(
        &self,
        team: &str,
        route: &Route,
        ended_on: std::result::Result<&str, ErrorCode>,
    ) {
        let mut all = self.rollouts.lock();
        let Some(r) = all.get_mut(team) else { return };
        if route.step >= r.steps.len() {
            return;
        }
        if let Err(code) = ended_on
            && matches!(
                code,
                ErrorCode::InvalidArgument
                    | ErrorCode::NotFound
                    | ErrorCode::PermissionDenied
                    | ErrorCode::ResourceExhausted
                    | ErrorCode::BudgetExceeded
            )
        {
            let st = &mut r.steps[route.step];
            st.spawns = st.spawns.saturating_sub(1);
            if route.to_target {
                st.target = st.target.saturating_sub(1);
            }
            return;
        }
        let failed = route.to_target && ended_on != Ok(route.runtime.as_str());
        if failed {
            r.steps[route.step].errors += 1;
        }
        let st = &r.steps[route.step];
        let roll_back = matches!(
            r.state,
            RolloutState::Running | RolloutState::Paused | RolloutState::Completed
        ) && route.step == r.step
            && r.plan.should_roll_back(st.errors, st.target);
        if roll_back {
            r.state = RolloutState::RolledBack;
            r.running_since = None;
            r.reason = Some(format!(
                "error rate {:.1}% ({} of {} spawns on {}) is above {:.1}% at the {}% step",
                st.errors as f64 * 100.0 / st.target.max(1) as f64,
                st.errors,
                st.target,
                r.to,
                r.plan.max_error_rate * 100.0,
                st.percent
            ));
        }
        let snapshot = r.clone();
        drop(all);
        self.save_rollout(&snapshot);
        if roll_back {
            self.rollout_event(
                EventKind::RolloutRolledBack,
                &snapshot,
                json!({"reason": snapshot.reason, "automatic": true}),
            );
        }
    }
}
