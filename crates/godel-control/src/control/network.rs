//! The network of a live sandbox: connecting to a port inside it (the E2B
//! port URLs, `GET /v1/runtimes/{id}/ports/{port}`, `godel forward`) and
//! replacing its egress rules. Transports only copy bytes over the stream
//! this returns; the team check, the state check and the provider's way in
//! are here.

use godel_core::{Error, NetworkConfig, NetworkMode, PortStream, Result, SandboxInfo};

use super::{Caller, Control};

impl Control {
    /// A connected stream to `port` on the sandbox's own loopback. A
    /// missing (or another team's) sandbox is `NOT_FOUND`, one that is not
    /// running `CONFLICT`, a closed port `UNAVAILABLE`.
    pub async fn connect_port(&self, caller: &Caller, id: &str, port: u16) -> Result<PortStream> {
        if port == 0 {
            return Err(Error::invalid("port 0: expected 1-65535"));
        }
        let (_, p) = self.live(caller, id)?;
        p.connect_port(id, port)
            .await
            .map_err(|e| e.with_runtime(id))
    }

    /// [`Control::connect_port`] for a record the caller already read and
    /// checked (the E2B port proxy reads it once for its own checks).
    pub async fn connect_port_of(&self, rec: &SandboxInfo, port: u16) -> Result<PortStream> {
        if rec.state != godel_core::SandboxState::Running {
            return Err(Error::conflict(format!(
                "runtime {} is {}, not running",
                rec.id, rec.state
            ))
            .with_runtime(&rec.id));
        }
        let p = self.provider(&rec.runtime)?;
        p.connect_port(&rec.id, port)
            .await
            .map_err(|e| e.with_runtime(&rec.id))
    }

    /// Replace the egress rules of a running sandbox made in network mode
    /// `nat`; the record keeps the new rules (a restore or adopt reads them).
    pub async fn update_network(
        &self,
        caller: &Caller,
        id: &str,
        network: NetworkConfig,
    ) -> Result<SandboxInfo> {
        network.validate()?;
        let (rec, p) = self.live(caller, id)?;
        if rec.spec.network.mode != NetworkMode::Nat {
            return Err(Error::invalid(format!(
                "sandbox {id} was made without network (mode {:?}); its egress rules cannot change",
                rec.spec.network.mode
            ))
            .with_runtime(id));
        }
        let mut network = network;
        network.mode = NetworkMode::Nat;
        network.dns = rec.spec.network.dns.clone();
        p.update_network(id, &network)
            .await
            .map_err(|e| e.with_runtime(id))?;
        let mut spec = rec.spec.clone();
        spec.network = network;
        self.store.set_spec(id, &spec)?;
        self.visible_sandbox(caller, id)
    }
}
