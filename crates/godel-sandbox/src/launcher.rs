//! The interface between a runtime and process isolation: an [`Isolator`]
//! creates one [`Jail`] per agent; a sandbox launches processes inside it.
//! The worktree runtime only speaks these traits, so isolation can be swapped
//! (`none` for trusted use, namespaces + cgroups + seccomp by default).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use godel_core::{Availability, NetworkConfig, ResourceUsage, Result};
use tokio::io::{AsyncRead, AsyncWrite};

/// Limits applied to a whole sandbox (all its processes together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailLimits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    pub disk_bytes: Option<u64>,
}

/// What a sandbox is made from.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The agent (runtime) id; names cgroups and namespaces.
    pub id: String,
    /// Host path of the workspace: the only writable tree inside.
    pub workspace: PathBuf,
    /// Directory the isolator may use for its own state (pid files, mounts).
    pub state_dir: PathBuf,
    pub limits: JailLimits,
    pub network: NetworkConfig,
    /// Environment every process starts with (before the exec's own env).
    pub env: BTreeMap<String, String>,
    /// Host directories mounted read-write at their targets (volumes).
    pub volumes: Vec<JailVolume>,
}

/// A host directory mounted read-write into a jail, owned there by the agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JailVolume {
    pub source: PathBuf,
    /// Absolute path inside the jail, outside the workspace and system dirs.
    pub target: PathBuf,
}

/// A root made of template layers instead of the host's system directories
/// alone (see [`crate::mounts::RootPlan`]). Each layer directory holds
/// `root/` (its files outside the system directories) and `sys/<dir>` (its
/// copy of each system directory, e.g. `sys/usr`), laid over the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JailRoot {
    /// Layer directories, top first; mounted read-only.
    pub layers: Vec<PathBuf>,
    /// Build mode: a directory holding `layer/` (`root/`, `sys/<dir>`: the
    /// new layer, written through overlayfs) and `work/` (overlayfs' work
    /// dirs). Processes then run as root of the jail's user namespace (with
    /// its capabilities there, none on the host) and the root stays writable.
    pub upper: Option<PathBuf>,
}

/// One process to start inside a sandbox.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Working directory in the agent's view: relative to the workspace, or absolute
    /// (`/home/user/...`). `None` = the workspace root. The namespace sandbox
    /// also accepts any other absolute path of its own view (e.g. `/tmp`).
    pub cwd: Option<String>,
    /// Pipe stdin (otherwise it is `/dev/null`).
    pub stdin: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    /// Exit code, or `128 + signal` when killed.
    pub code: i32,
    pub signal: Option<i32>,
}

/// Sends a signal to a launched process's whole process group.
pub type Signaller = Arc<dyn Fn(i32) -> std::io::Result<()> + Send + Sync>;

/// A launched process: pipes, its exit, and a way to signal its process group.
pub struct Process {
    /// Host pid of the process (the group leader).
    pub pid: u32,
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    pub exit: BoxFuture<'static, std::io::Result<ProcessExit>>,
    pub signal: Signaller,
}

/// One agent's isolated environment.
#[async_trait]
pub trait Jail: Send + Sync {
    fn id(&self) -> &str;
    /// Host pid of the sandbox's long-lived init, if it has one.
    fn init_pid(&self) -> Option<u32>;
    /// The workspace path as processes inside see it (`/home/user` when isolated).
    fn workspace_view(&self) -> String;
    /// Start a process inside.
    async fn launch(&self, spec: ProcessSpec) -> Result<Process>;
    /// Whether the sandbox (its init) is still alive.
    async fn alive(&self) -> bool;
    /// Usage of the whole sandbox.
    async fn usage(&self) -> Result<ResourceUsage>;
    /// Freeze / thaw every process (pause / resume).
    async fn freeze(&self, frozen: bool) -> Result<()>;
    /// Kill everything and release namespaces and cgroups. Idempotent.
    async fn destroy(&self) -> Result<()>;
    /// What `Isolator::adopt` needs to re-attach after a daemon restart.
    fn handle(&self) -> serde_json::Value;
    /// Host uid/gid that files written into the workspace on the agent's
    /// behalf must be chowned to, so the agent can modify them. `None` (the
    /// default, and the sandbox's answer when its workspace is an idmapped
    /// mount) means files owned by the daemon's user are already the agent's.
    fn workspace_owner(&self) -> Option<(u32, u32)> {
        None
    }
    /// A TCP connection to `port` on the sandbox's loopback, made from
    /// inside its network namespace (`crate::portfwd`).
    async fn connect_port(&self, port: u16) -> Result<tokio::net::TcpStream> {
        Err(godel_core::Error::invalid(format!(
            "sandbox {}: this isolation cannot reach sandbox ports (port {port})",
            self.id()
        )))
    }
    /// Replace the egress rules (allow/deny lists) of a running sandbox.
    async fn update_network(&self, network: &NetworkConfig) -> Result<()> {
        let _ = network;
        Err(godel_core::Error::invalid(format!(
            "sandbox {}: network rules can only change with isolation 'sandbox' and network mode 'nat'",
            self.id()
        )))
    }
}

/// Creates sandboxes of one kind.
#[async_trait]
pub trait Isolator: Send + Sync {
    /// `none` or `sandbox`.
    fn name(&self) -> &str;
    async fn available(&self) -> Availability;
    async fn create(&self, cfg: JailConfig) -> Result<Arc<dyn Jail>>;
    /// The host uid/gid every sandbox of this isolator runs its agent as, when
    /// it is the same for all: a runtime can then prepare shared, read-only
    /// trees (checkouts) owned by the agent once. `None`: per sandbox.
    fn agent_owner(&self) -> Option<(u32, u32)> {
        None
    }
    /// Create a jail whose root comes from template layers (see [`JailRoot`]).
    /// Isolators that cannot refuse with `INVALID_ARGUMENT`.
    async fn create_rooted(&self, cfg: JailConfig, root: JailRoot) -> Result<Arc<dyn Jail>> {
        let _ = (cfg, root);
        Err(godel_core::Error::invalid(format!(
            "isolation '{}' cannot start a sandbox from a built template: use isolation 'sandbox'",
            self.name()
        )))
    }
    /// Re-attach to a sandbox after a daemon restart; `None` when it is gone.
    async fn adopt(
        &self,
        cfg: JailConfig,
        handle: &serde_json::Value,
    ) -> Result<Option<Arc<dyn Jail>>>;
    /// The daemon is stopping: remove what the isolator made for itself
    /// (warm jails); sandboxes keep running.
    async fn stop(&self) {}
}
