//! godel-kube: the `kata` runtime. Agents run as Kubernetes pods with a
//! Kata `runtimeClassName`, one namespace per team (ResourceQuota,
//! LimitRange, default-deny NetworkPolicy, RBAC, all by server-side apply),
//! exec and tar file copy over the WebSocket exec API, and workspace
//! snapshots as tars in godel's snapshot store.
//!
//! - [`KubeProvider`]: the `RuntimeProvider` (`provider`, `exec`, `files`, `snapshot`, `watch`)
//! - [`KubeConfig`], [`TeamQuota`]: configuration (`[kube]` in the daemon's TOML)
//! - [`render_team_manifests`], [`render_pod_template`]: `godel kube render`

pub mod config;
pub mod errors;
mod exec;
mod files;
pub mod manifests;
pub mod names;
mod provider;
pub mod render;
mod runtime;
mod snapshot;
mod wait;
mod watch;

pub use config::{KubeConfig, TeamQuota};
pub use provider::{KubeProvider, SpawnTiming};
pub use render::{render_pod_template, render_team_manifests};
pub use snapshot::WORKSPACE_TAR;
