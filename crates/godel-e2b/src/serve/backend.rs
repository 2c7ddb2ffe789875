//! [`E2bBackend`]: what the E2B-compatible server needs from godel, in godel
//! terms. The daemon implements it as a thin delegation to its control plane,
//! which checks that `team` owns `id` on every call; the exec and file
//! methods mirror [`godel_core::RuntimeProvider`] with a `team` added.
//!
//! E2B bookkeeping travels in `SpawnSpec::labels` so it survives a daemon
//! restart: `e2b.meta.<key>` (user metadata), `e2b.template`, `e2b.end_at`
//! (RFC 3339 deadline) and `e2b.on_timeout` (`kill` or `pause`). See
//! [`crate::serve::labels`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use godel_core::{ExecHandle, ExecRequest, FileEntry, Result, RuntimeInfo, SpawnSpec};

/// The daemon side of the E2B surface.
#[async_trait]
pub trait E2bBackend: Send + Sync + 'static {
    /// Map an E2B API key (a godel team token) to its team.
    /// A bad key is `UNAUTHENTICATED` (answered as HTTP 401).
    async fn authenticate(&self, api_key: &str) -> Result<String>;

    /// Create and start a runtime for `team`. `spec.runtime` is `None` for the
    /// `base` template (the team's default runtime); the returned record's
    /// `id` becomes the E2B `sandboxID`.
    async fn create(&self, team: &str, spec: SpawnSpec) -> Result<RuntimeInfo>;

    /// One runtime of `team` (`NOT_FOUND` when absent or owned by another team).
    async fn get(&self, team: &str, id: &str) -> Result<RuntimeInfo>;

    /// A runtime by id whatever its team. Used for envd calls, which carry a
    /// per-sandbox access token instead of an API key.
    async fn locate(&self, id: &str) -> Result<RuntimeInfo>;

    /// The live (running or paused) runtimes of `team`.
    async fn list(&self, team: &str) -> Result<Vec<RuntimeInfo>>;

    /// Every live runtime: read once at start so sandbox deadlines outlive a restart.
    async fn list_all(&self) -> Result<Vec<RuntimeInfo>>;

    /// Terminate a runtime. `NOT_FOUND` when it does not exist.
    async fn kill(&self, team: &str, id: &str) -> Result<()>;

    /// Snapshot then stop, keeping the id (E2B pause).
    async fn pause(&self, team: &str, id: &str) -> Result<()>;

    /// Restore a paused runtime under the same id (E2B connect / resume).
    async fn resume(&self, team: &str, id: &str) -> Result<RuntimeInfo>;

    /// Merge these labels into the runtime's record (persisting a new
    /// `e2b.end_at`). The default keeps them in memory only.
    async fn set_labels(
        &self,
        team: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let _ = (team, id, labels);
        Ok(())
    }

    // ---- exec and files, as in RuntimeProvider ----

    async fn exec(&self, team: &str, id: &str, req: ExecRequest) -> Result<ExecHandle>;
    async fn read_file(&self, team: &str, id: &str, path: &str) -> Result<Bytes>;
    /// Write a file, creating parent directories.
    async fn write_file(&self, team: &str, id: &str, path: &str, data: Bytes) -> Result<()>;
    async fn list_dir(&self, team: &str, id: &str, path: &str) -> Result<Vec<FileEntry>>;
    async fn stat(&self, team: &str, id: &str, path: &str) -> Result<FileEntry>;
    /// Create a directory and its parents.
    async fn make_dir(&self, team: &str, id: &str, path: &str) -> Result<()>;
    async fn rename(&self, team: &str, id: &str, from: &str, to: &str) -> Result<()>;
    async fn remove(&self, team: &str, id: &str, path: &str, recursive: bool) -> Result<()>;
}
