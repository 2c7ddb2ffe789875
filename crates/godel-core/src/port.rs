//! Reaching a port a process listens on inside a sandbox: the stream type
//! [`RuntimeProvider::connect_port`](crate::RuntimeProvider::connect_port)
//! returns. Transports (the E2B port URLs, `GET /v1/runtimes/{id}/ports/{port}`,
//! `godel forward`) only copy bytes over it; how the connection is made
//! (inside the sandbox's network namespace, through a VM's forward) is the
//! provider's.

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a port inside a sandbox.
pub trait PortIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> PortIo for T {}

/// A connected stream to a sandbox port.
pub type PortStream = Box<dyn PortIo>;

/// Whether `port` may be asked for: 1..=65535.
pub fn validate_port(port: u32) -> crate::Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| crate::Error::invalid(format!("port {port}: expected 1-65535")))
}
