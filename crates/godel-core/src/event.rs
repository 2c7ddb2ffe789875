//! Events: every state change and policy decision becomes one. Providers
//! report what they see (OOM, a process died) through an `EventSink`.
//! [`EventKind`] names every kind godel emits; on the wire and in the
//! store a kind is its snake_case name.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every kind of event, by who emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    // ---- the control plane: sandbox lifecycle ----
    /// A sandbox moved to another state (`data.state`).
    StateChanged,
    /// A spawn was refused for bad input; its record was removed.
    SpawnRejected,
    /// Re-attached after a daemon restart.
    Adopted,
    /// Gone after a daemon restart (`data.reason`).
    Lost,
    /// A replica took over the sandboxes of one whose lease ran out
    /// (`data.from`, `data.to`, `data.adopted`, `data.lost`).
    ReplicaTakeover,
    /// Its time to live ran out and it was killed or parked (`data.action`).
    Expired,
    /// Snapshotted and stopped, to come back under the same id.
    Parked,
    /// Brought back from its parking snapshot.
    Unparked,
    SnapshotCreated,
    SnapshotDeleted,
    TeamCreated,
    TeamDeleted,
    TokenCreated,
    TokenRevoked,
    // ---- policy decisions ----
    /// A runtime was skipped or failed and the next one is tried.
    SpawnFallback,
    SpawnFailed,
    SpawnAttempt,
    CircuitOpened,
    CircuitHalfOpen,
    CircuitClosed,
    HealthHealthy,
    HealthUnhealthy,
    Restart,
    RestartGaveUp,
    PoolCreated,
    PoolCreateFailed,
    PoolClaimed,
    PoolDestroyed,
    PoolDestroyFailed,
    // ---- costs, budgets, migration, rollouts ----
    /// A team's (or agent's) budget was set or changed (`data.limit_usd`).
    BudgetSet,
    /// Spend crossed the alert threshold (80 % by default) of a budget; once a period.
    BudgetAlert,
    /// Spend reached the budget: new spawns fail with `BUDGET_EXCEEDED`; once a period.
    BudgetExceeded,
    /// The budget's policy acted on a running agent (`data.action`: `snapshot-and-stop`, `stop`).
    BudgetEnforced,
    /// The budget webhook was delivered or gave up (`data.delivered`, `data.attempts`).
    BudgetWebhook,
    /// An agent moved to another runtime (`data.new_id`, `data.from`, `data.to`).
    Migrated,
    /// A move failed; the source keeps running (`data.reason`).
    MigrationFailed,
    /// A canary rollout started (`data.to`, `data.steps`).
    RolloutStarted,
    /// A rollout moved to its next step (`data.percent`).
    RolloutStep,
    RolloutPaused,
    RolloutResumed,
    /// Routing went back to the previous runtime (`data.reason`).
    RolloutRolledBack,
    /// The last step was reached: every new spawn goes to the target.
    RolloutCompleted,
    // ---- providers ----
    /// The sandbox's processes or VM died (`data.reason`).
    Died,
    /// The kernel's OOM killer hit the sandbox.
    Oom,
    DiskLimitExceeded,
    WorkspaceCreated,
    WorkspaceRemounted,
    WorkspaceRemoved,
    SandboxRecreated,
    SnapshotWritten,
    PodPhase,
    ContainerRestarted,
    TeamNamespaceApplied,
    E2bRetry,
    // ---- written by earlier versions, still readable ----
    Preserved,
    RestoredPreserved,
    /// A kind this version does not know (written by a newer one).
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The snake_case name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, s)| *s)
            .unwrap_or("unknown")
    }

    /// The kind named `s` (`Unknown` when none is).
    pub fn parse(s: &str) -> EventKind {
        KINDS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(k, _)| *k)
            .unwrap_or(EventKind::Unknown)
    }
}

/// Name of each kind (the serde names, spelled out once for `as_str`).
const KINDS: &[(EventKind, &str)] = &[
    (EventKind::StateChanged, "state_changed"),
    (EventKind::SpawnRejected, "spawn_rejected"),
    (EventKind::Adopted, "adopted"),
    (EventKind::Lost, "lost"),
    (EventKind::ReplicaTakeover, "replica_takeover"),
    (EventKind::Expired, "expired"),
    (EventKind::Parked, "parked"),
    (EventKind::Unparked, "unparked"),
    (EventKind::SnapshotCreated, "snapshot_created"),
    (EventKind::SnapshotDeleted, "snapshot_deleted"),
    (EventKind::TeamCreated, "team_created"),
    (EventKind::TeamDeleted, "team_deleted"),
    (EventKind::TokenCreated, "token_created"),
    (EventKind::TokenRevoked, "token_revoked"),
    (EventKind::SpawnFallback, "spawn_fallback"),
    (EventKind::SpawnFailed, "spawn_failed"),
    (EventKind::SpawnAttempt, "spawn_attempt"),
    (EventKind::CircuitOpened, "circuit_opened"),
    (EventKind::CircuitHalfOpen, "circuit_half_open"),
    (EventKind::CircuitClosed, "circuit_closed"),
    (EventKind::HealthHealthy, "health_healthy"),
    (EventKind::HealthUnhealthy, "health_unhealthy"),
    (EventKind::Restart, "restart"),
    (EventKind::RestartGaveUp, "restart_gave_up"),
    (EventKind::PoolCreated, "pool_created"),
    (EventKind::PoolCreateFailed, "pool_create_failed"),
    (EventKind::PoolClaimed, "pool_claimed"),
    (EventKind::PoolDestroyed, "pool_destroyed"),
    (EventKind::PoolDestroyFailed, "pool_destroy_failed"),
    (EventKind::BudgetSet, "budget_set"),
    (EventKind::BudgetAlert, "budget_alert"),
    (EventKind::BudgetExceeded, "budget_exceeded"),
    (EventKind::BudgetEnforced, "budget_enforced"),
    (EventKind::BudgetWebhook, "budget_webhook"),
    (EventKind::Migrated, "migrated"),
    (EventKind::MigrationFailed, "migration_failed"),
    (EventKind::RolloutStarted, "rollout_started"),
    (EventKind::RolloutStep, "rollout_step"),
    (EventKind::RolloutPaused, "rollout_paused"),
    (EventKind::RolloutResumed, "rollout_resumed"),
    (EventKind::RolloutRolledBack, "rollout_rolled_back"),
    (EventKind::RolloutCompleted, "rollout_completed"),
    (EventKind::Died, "died"),
    (EventKind::Oom, "oom"),
    (EventKind::DiskLimitExceeded, "disk_limit_exceeded"),
    (EventKind::WorkspaceCreated, "workspace_created"),
    (EventKind::WorkspaceRemounted, "workspace_remounted"),
    (EventKind::WorkspaceRemoved, "workspace_removed"),
    (EventKind::SandboxRecreated, "sandbox_recreated"),
    (EventKind::SnapshotWritten, "snapshot_written"),
    (EventKind::PodPhase, "pod_phase"),
    (EventKind::ContainerRestarted, "container_restarted"),
    (EventKind::TeamNamespaceApplied, "team_namespace_applied"),
    (EventKind::E2bRetry, "e2b_retry"),
    (EventKind::Preserved, "preserved"),
    (EventKind::RestoredPreserved, "restored_preserved"),
    (EventKind::Unknown, "unknown"),
];

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic sequence number assigned by the store (0 before it is stored).
    #[serde(default)]
    pub seq: i64,
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Event {
            seq: 0,
            time: Utc::now(),
            kind,
            runtime_id: None,
            team: None,
            data: serde_json::Value::Null,
        }
    }
    pub fn runtime(mut self, id: impl Into<String>) -> Self {
        self.runtime_id = Some(id.into());
        self
    }
    pub fn team(mut self, team: impl Into<String>) -> Self {
        self.team = Some(team.into());
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// Where providers send events. Cheap to clone.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops every event.
pub fn null_sink() -> EventSink {
    Arc::new(|_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde_and_parse_back() {
        for (k, name) in KINDS {
            assert_eq!(serde_json::to_value(k).unwrap(), *name);
            assert_eq!(EventKind::parse(name), *k);
            assert_eq!(k.as_str(), *name);
        }
        assert_eq!(EventKind::parse("from_the_future"), EventKind::Unknown);
        let ev: Event =
            serde_json::from_str(r#"{"time":"2026-01-01T00:00:00Z","kind":"from_the_future"}"#)
                .unwrap();
        assert_eq!(ev.kind, EventKind::Unknown);
        assert!(EventKind::Oom == "oom");
    }
}
