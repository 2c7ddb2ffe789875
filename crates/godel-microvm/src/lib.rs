//! godel-microvm: the `microvm` runtime, one QEMU VM per agent.
//!
//! - [`provider`]: [`MicrovmProvider`] implements `godel_core::RuntimeProvider`
//! - [`machine`]: cold boot, snapshot (migrate to file + RAM file + disk), restore
//! - [`pool`]: the warm pool of restored VMs
//! - [`vmm`]: pre-started QEMU processes waiting for a snapshot's restore
//! - [`vm`]: one live VM (process, QMP, guest channel, supervision)
//! - [`launch`]: the QEMU command line and launcher; [`qmp`]: the QMP client
//! - [`accel`]: KVM probe with TCG fallback; [`tsc`]: host TSC frequency
//! - [`disk`]: qcow2 overlays and sparse copies
//!
//! How the daemon registers it (inside the Tokio runtime, so the warm pool
//! can refill in the background), and what `godel doctor` calls:
//!
//! ```no_run
//! # async fn f(home: std::path::PathBuf, events: godel_core::EventSink) -> godel_core::Result<()> {
//! use godel_core::RuntimeProvider;
//! use godel_microvm::{MicrovmConfig, MicrovmProvider};
//! let cfg = MicrovmConfig::new(&home).with_events(events).with_warm_pool(2);
//! let provider = MicrovmProvider::new(cfg)?; // cheap to clone; keep one for shutdown
//! let _registered: std::sync::Arc<dyn RuntimeProvider> = std::sync::Arc::new(provider.clone());
//! let availability = provider.available().await; // says `godel image build` when needed
//! let verdict = provider.accel_verdict().await?; // kvm|tcg and why (godel doctor)
//! provider.shutdown(false).await; // daemon exit: stop pool VMs, leave runtimes for adopt
//! # let _ = (availability, verdict); Ok(()) }
//! ```

pub mod accel;
pub mod disk;
pub mod launch;
pub mod machine;
pub mod pool;
pub mod provider;
pub mod qmp;
pub mod tsc;
pub mod vm;
pub mod vmm;

pub use accel::{AccelVerdict, detect_accel};
pub use launch::Accel;
pub use pool::{PoolShape, PoolStats, WarmPool};
pub use provider::{MicrovmConfig, MicrovmProvider};
