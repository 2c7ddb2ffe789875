//! godel-microvm: the `microvm` runtime, one QEMU VM per agent.
//!
//! - [`provider`]: [`MicrovmProvider`] implements `godel_core::RuntimeProvider`
//! - [`machine`]: cold boot, snapshot (migrate to file + RAM file + disk), restore
//! - [`pool`]: the warm pool of restored VMs
//! - [`vm`]: one live VM (process, QMP, guest channel, supervision)
//! - [`launch`]: the QEMU command line and launcher; [`qmp`]: the QMP client
//! - [`accel`]: KVM probe with TCG fallback; [`tsc`]: host TSC frequency
//! - [`disk`]: qcow2 overlays and sparse copies; [`bench`]: the benchmark

pub mod accel;
pub mod bench;
pub mod disk;
pub mod launch;
pub mod machine;
pub mod pool;
pub mod provider;
pub mod qmp;
pub mod tsc;
pub mod vm;

pub use accel::{AccelVerdict, detect_accel};
pub use bench::{BenchOptions, BenchReport, run_benchmark};
pub use launch::Accel;
pub use pool::{PoolShape, PoolStats, WarmPool};
pub use provider::{MicrovmConfig, MicrovmProvider};
