//! Descriptions of a live runtime: `SandboxInfo` (the record every surface
//! shows), `SandboxStatus` (what a provider reports), `ResourceUsage`,
//! `Capabilities` and `Availability`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::SpawnSpec;
use crate::state::SandboxState;

/// A new, unique runtime id: `rt-` and 16 hex digits.
pub fn new_sandbox_id() -> String {
    format!("rt-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// A new, unique snapshot id: `snap-` and 16 hex digits.
pub fn new_snapshot_id() -> String {
    format!("snap-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Resource usage of one runtime, read from its cgroup, VM or pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU time consumed, seconds.
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
    pub disk_bytes: u64,
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    /// Times the runtime hit its memory limit and a process was killed.
    #[serde(default)]
    pub oom_kills: u64,
}

/// What a provider reports about one runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxStatus {
    pub state: SandboxState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
    /// Process id of the runtime's main host process (sandbox init, VMM), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why the runtime is in `error`, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Provider-specific details (workspace path, pod name, accelerator ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

impl SandboxStatus {
    pub fn new(state: SandboxState) -> Self {
        SandboxStatus {
            state,
            usage: None,
            pid: None,
            reason: None,
            details: BTreeMap::new(),
        }
    }
}

/// The record of one runtime as the control plane keeps and shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: String,
    /// Provider name (`worktree`, `microvm`, ...).
    pub runtime: String,
    pub team: String,
    pub state: SandboxState,
    pub spec: SpawnSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The snapshot this runtime was restored from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// What the provider needs to re-adopt the runtime after a daemon restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handle: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the time to live runs out (`SpawnSpec::ttl_secs`); the control
    /// plane's reaper then kills or parks the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Set while the sandbox is parked: snapshotted and stopped, to be
    /// brought back under the same id by `resume` (or the next daemon start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
    /// The replica that holds the sandbox's runtime (several daemons share
    /// one PostgreSQL store); requests reaching another replica are
    /// forwarded to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Why a sandbox is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParkReason {
    /// Paused by a client (E2B pause) or by `on_timeout: pause`: resumed on request.
    Paused,
    /// Preserved at a daemon shutdown (`godel serve --preserve`): restored at the next start.
    Preserved,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::Paused => "paused",
            ParkReason::Preserved => "preserved",
        }
    }

    pub fn parse(s: &str) -> Option<ParkReason> {
        match s {
            "paused" => Some(ParkReason::Paused),
            "preserved" => Some(ParkReason::Preserved),
            _ => None,
        }
    }
}

/// The snapshot a parked sandbox comes back from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub snapshot_id: String,
    pub reason: ParkReason,
}

/// What a provider can do. The control plane and `godel doctor` read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Snapshots include process memory (a running process resumes after restore).
    pub memory_snapshots: bool,
    /// Snapshots of the workspace (files) only.
    pub workspace_snapshots: bool,
    /// Many runtimes from one snapshot.
    pub fork: bool,
    pub pause: bool,
    /// Egress allowlists / network policies are enforced.
    pub network_policy: bool,
    /// Output arrives while the command runs.
    pub streaming_exec: bool,
    pub stdin: bool,
    /// Hard CPU/memory limits are enforced.
    pub resource_limits: bool,
    /// `process` (shared kernel), `vm` (own kernel) or `none`.
    pub isolation: String,
    /// Live runtimes survive a daemon restart and are re-adopted.
    pub survives_daemon_restart: bool,
    /// Sandboxes live on the daemon's own machine (worktree, microvm): only
    /// that machine's replica reaches them. `false` for remote runtimes
    /// (kata, e2b), whose sandboxes any replica can take over.
    #[serde(default)]
    pub host_bound: bool,
}

/// Whether a provider can be used on this machine, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub available: bool,
    /// Why it is (not) available, in words a user can act on.
    pub reason: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl Availability {
    pub fn yes(reason: impl Into<String>) -> Self {
        Availability {
            available: true,
            reason: reason.into(),
            details: BTreeMap::new(),
        }
    }
    pub fn no(reason: impl Into<String>) -> Self {
        Availability {
            available: false,
            reason: reason.into(),
            details: BTreeMap::new(),
        }
    }
    pub fn detail(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
}

/// What a provider returns from spawn or restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spawned {
    /// Persisted with the record; handed back to `adopt` after a daemon restart.
    pub handle: BTreeMap<String, serde_json::Value>,
    pub pid: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = new_sandbox_id();
        let b = new_sandbox_id();
        assert_ne!(a, b);
        assert!(a.starts_with("rt-") && a.len() == 19);
        assert!(new_snapshot_id().starts_with("snap-"));
    }
}
