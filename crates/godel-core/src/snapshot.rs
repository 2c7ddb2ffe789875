//! Snapshot types. A provider writes its artifact into a staging directory
//! the control plane gives it; the control plane publishes the snapshot by
//! an atomic rename of that directory and its manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the caller asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where and under which id a provider writes a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTarget {
    pub snapshot_id: String,
    /// An empty staging directory owned by this snapshot; published atomically afterwards.
    pub dir: PathBuf,
}

/// What a provider reports after writing a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotArtifact {
    pub size_bytes: u64,
    /// `workspace` (files) or `vm` (memory + disk).
    pub kind: String,
    /// Provider-specific data needed to restore (commit id, file names ...).
    #[serde(default)]
    pub data: BTreeMap<String, serde_json::Value>,
}

/// A published snapshot, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub runtime_id: String,
    /// Provider name that made it (restore goes to the same provider).
    pub runtime: String,
    pub team: String,
    pub created_at: DateTime<Utc>,
    pub size_bytes: u64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The published directory holding the artifact.
    pub dir: PathBuf,
    #[serde(default)]
    pub data: BTreeMap<String, serde_json::Value>,
}
