//! godel-core: the runtime contract and the types every other godel crate
//! speaks. It performs no I/O: providers, the control plane and the API build
//! on these types.
//!
//! - [`provider::RuntimeProvider`]: the contract (spawn, exec, files, snapshots ...)
//! - [`spec`]: what to spawn; [`quantity`]: `0.5` CPUs, `512Mi`
//! - [`state::SandboxState`]: the state machine
//! - [`error`]: one error type with stable codes and `retryable`
//! - [`port`]: a connected stream to a port inside a sandbox
//! - [`exec`], [`files`], [`snapshot`], [`event`], [`runtime`]: the rest of the vocabulary

pub mod error;
pub mod event;
pub mod exec;
pub mod files;
pub mod netrule;
pub mod port;
pub mod port_exec;
pub mod provider;
pub mod quantity;
pub mod runtime;
pub mod snapshot;
pub mod spec;
pub mod state;
pub mod template;

pub use error::{Error, ErrorCode, Result};
pub use event::{Event, EventKind, EventSink, null_sink};
pub use exec::{ExecEvent, ExecHandle, ExecOutput, ExecRequest, ExitStatus};
pub use files::{FileEntry, FileKind, WORKSPACE_MOUNT, workspace_relative};
pub use netrule::{NetRule, parse_net_rule, parse_net_rules};
pub use port::{PortIo, PortStream};
pub use provider::RuntimeProvider;
pub use quantity::{Bytes as ByteQuantity, Cpu, parse_bytes, parse_cpu};
pub use runtime::{
    Availability, Capabilities, ParkReason, Parked, ResourceUsage, SandboxInfo, SandboxStatus,
    Spawned, new_sandbox_id, new_snapshot_id,
};
pub use snapshot::{SnapshotArtifact, SnapshotInfo, SnapshotRequest, SnapshotTarget};
pub use spec::{
    Isolation, NetworkConfig, NetworkMode, OnTimeout, ResourceLimits, RestartPolicy, SpawnSpec,
    VolumeMount, WorkspaceMode, parse_key_values, validate_name,
};
pub use state::SandboxState;
pub use template::{
    BUILTIN_TEMPLATES, TemplateBuild, TemplateBuildRequest, TemplateBuilder, TemplateInfo,
    TemplateResolver, TemplateStep,
};
