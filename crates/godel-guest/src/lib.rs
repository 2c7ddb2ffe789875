//! godel-guest: the agent that runs inside a godel microVM, and the
//! host↔guest protocol it speaks.
//!
//! - [`protocol`]: framing ([`protocol::frame`]) and messages, shared by both sides
//! - [`client`]: the host's async client ([`GuestClient`]), used by `godel-microvm`
//! - [`server`]: the agent's request handling (blocking, thread per stream),
//!   testable on the host against a root directory
//! - [`init`]: PID-1 duties in the VM (mounts, modules, root disk, reaping)

pub mod client;
pub mod init;
pub mod protocol;
pub mod server;
pub mod sys;

pub use client::GuestClient;
pub use protocol::{ExecStart, Frame, FrameDecoder, FrameError, GuestUsage, Hello, Message};
pub use server::{Server, ServerConfig};
