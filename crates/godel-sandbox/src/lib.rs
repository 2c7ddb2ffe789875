//! godel-sandbox: process isolation for godel's local runtimes.
//!
//! [`launcher`] defines the interface a runtime uses ([`Isolator`] makes a
//! [`Sandbox`] per agent; a sandbox launches processes). [`host`] is the
//! `none` isolator for trusted use.

pub mod host;
pub mod launcher;

pub use host::HostIsolator;
pub use launcher::{
    Isolator, Process, ProcessExit, ProcessSpec, Sandbox, SandboxConfig, SandboxLimits, Signaller,
};
