//! `RuntimeProvider`: the one contract every backend implements
//! (SPEC-002 §3.1 in Rust terms).
//!
//! Division of labour with the control plane:
//! 1. The control plane assigns the runtime id and writes the record
//!    (`pending`/`creating`) *before* calling `spawn`; it confirms `running`
//!    after, storing the returned `Spawned::handle`.
//! 2. After a daemon restart it calls `adopt` with that handle for every
//!    non-terminal record; the provider re-attaches or says the runtime is gone.
//! 3. Snapshots are written by the provider into a staging directory and
//!    published by the control plane with an atomic rename.
//! 4. `list` and `wait_for_state` over *records* live in the control plane;
//!    the provider's `list` reports what it has in memory (for reconciliation).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::exec::{ExecHandle, ExecOutput, ExecRequest};
use crate::files::FileEntry;
use crate::port::PortStream;
use crate::runtime::{Availability, Capabilities, SandboxStatus, Spawned};
use crate::snapshot::{SnapshotArtifact, SnapshotInfo, SnapshotRequest, SnapshotTarget};
use crate::spec::{NetworkConfig, SpawnSpec};
use crate::state::SandboxState;

/// The runtime contract. Object safe: the control plane holds `Arc<dyn RuntimeProvider>`.
#[async_trait]
pub trait RuntimeProvider: Send + Sync + 'static {
    /// The provider's name as used in `SpawnSpec::runtime` (`worktree`, `microvm`, ...).
    fn name(&self) -> &str;

    /// What this provider can do.
    fn capabilities(&self) -> Capabilities;

    /// Whether it can run on this machine now, and why not.
    async fn available(&self) -> Availability;

    // ---- lifecycle ----

    /// Create and start a runtime with the given id.
    async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned>;

    /// Re-attach to a runtime after a daemon restart. `Ok(Some(_))` when it is
    /// alive (possibly with an updated handle), `Ok(None)` when it is gone.
    async fn adopt(&self, id: &str, spec: &SpawnSpec, handle: &Spawned) -> Result<Option<Spawned>>;

    /// Stop a runtime and free everything it holds. Idempotent.
    async fn terminate(&self, id: &str) -> Result<()>;

    /// Current state and usage.
    async fn status(&self, id: &str) -> Result<SandboxStatus>;

    /// Ids of the runtimes this provider holds.
    async fn list(&self) -> Result<Vec<String>>;

    /// Pause a runtime (freeze its processes or VM).
    async fn pause(&self, id: &str) -> Result<()> {
        Err(Error::invalid(format!(
            "runtime {} cannot pause {id}",
            self.name()
        )))
    }

    /// Resume a paused runtime.
    async fn resume(&self, id: &str) -> Result<()> {
        Err(Error::invalid(format!(
            "runtime {} cannot resume {id}",
            self.name()
        )))
    }

    // ---- execution ----

    /// Start a command; output streams through the returned handle.
    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecHandle>;

    /// Run a command and buffer its output.
    async fn exec_collect(&self, id: &str, req: ExecRequest) -> Result<ExecOutput> {
        self.exec(id, req).await?.collect().await
    }

    // ---- files (paths relative to the workspace or under /home/user) ----

    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes>;
    /// Write a file, creating parent directories.
    async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()>;
    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>>;
    async fn stat(&self, id: &str, path: &str) -> Result<FileEntry>;
    async fn make_dir(&self, id: &str, path: &str) -> Result<()>;
    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()>;
    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()>;
    /// Unpack a tar archive into a directory (created if missing).
    async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()>;
    /// Pack a directory (or a single file) into a tar archive.
    async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes>;

    // ---- ports ----

    /// Open a TCP connection to `port` on the sandbox's own loopback, as a
    /// process inside would (no host port is opened). A closed port is
    /// `UNAVAILABLE` with a message saying so; a runtime that cannot reach
    /// sandbox ports refuses with its name.
    async fn connect_port(&self, id: &str, port: u16) -> Result<PortStream> {
        Err(Error::invalid(format!(
            "runtime {} cannot reach ports inside its sandboxes (sandbox {id}, port {port})",
            self.name()
        )))
    }

    /// Replace the egress rules of a running sandbox (its network mode
    /// stays). Runtimes that cannot change them live refuse with their name.
    async fn update_network(&self, id: &str, network: &NetworkConfig) -> Result<()> {
        let _ = network;
        Err(Error::invalid(format!(
            "runtime {} cannot change the network rules of a running sandbox ({id})",
            self.name()
        )))
    }

    // ---- snapshots ----

    /// Write a snapshot of the runtime into `target.dir`.
    async fn snapshot(
        &self,
        id: &str,
        req: &SnapshotRequest,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact>;

    /// Create a new runtime with id `id` from a published snapshot.
    async fn restore(&self, id: &str, snapshot: &SnapshotInfo, spec: &SpawnSpec)
    -> Result<Spawned>;

    /// Release what the provider holds for a snapshot outside its directory
    /// (git refs, base images). The control plane deletes the directory.
    async fn delete_snapshot(&self, snapshot: &SnapshotInfo) -> Result<()> {
        let _ = snapshot;
        Ok(())
    }

    // ---- lifetime ----

    /// The daemon is stopping: stop what the provider made for itself
    /// (warm pools, pre-started helpers) and leave sandboxes running, to be
    /// adopted by the next start.
    async fn shutdown(&self) {}

    // ---- waiting ----

    /// Poll `status` until the runtime reaches `state` or the timeout passes.
    async fn wait_for_state(&self, id: &str, state: SandboxState, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.status(id).await?;
            if st.state == state {
                return Ok(());
            }
            if st.state.is_terminal() {
                return Err(Error::conflict(format!(
                    "runtime {id} reached {} while waiting for {}",
                    st.state, state
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "runtime {id} still {} after {} ms waiting for {}",
                    st.state,
                    timeout.as_millis(),
                    state
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
