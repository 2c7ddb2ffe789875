//! godel-bench: every benchmark behind `godel bench`, kept out of the
//! runtime crates, and the one latency summary they all report.
//!
//! - [`LatencySummary`]: P50/P95/P99/min/max/mean of a list of durations
//! - [`spawn`]: `godel bench spawn`, worktree runtimes through the API vs `git worktree add`
//! - [`sandbox`]: `godel bench sandbox`, the process sandbox vs bwrap vs no isolation
//! - [`microvm`]: `godel bench microvm`, boot, restore, claims, forks, density vs plain QEMU
//! - [`microvm_restore`]: its restore breakdown, snapshot of a restored VM, fork of N
//! - [`kube`]: `godel bench kube`, godel's overhead per pod against the fake API server
//! - [`chaos`], [`chaos_faults`]: `godel chaos`, faults under load and the tally
//! - [`report`]: `godel bench report`, Markdown and SVG plots of the latest results
//! - [`daemon`]: a real `godel serve` child process and a small client of its socket
//! - [`load`]: `godel bench exec|files|api` and the mixed API load generator
//! - [`scale`]: `godel bench scale`, N agents alive at once under API load
//! - [`replicas`], [`replicas_report`]: `godel bench replicas`, forwarding between replicas and take-over after SIGKILL
//! - [`results`]: the latest result of each suite, for `godel bench report`
//! - [`template`]: `godel bench template`, template builds cold and cached vs the same RUNs as one exec
//! - [`usage`]: `godel bench usage`, usage reports over 1,000 agents × 30 days of history
//!
//! The numbers are printed, never asserted.

pub mod chaos;
pub mod chaos_faults;
pub mod daemon;
pub mod kube;
pub mod load;
pub mod microvm;
pub mod microvm_restore;
pub mod ports;
pub mod replicas;
pub mod replicas_report;
pub mod report;
pub mod results;
pub mod sandbox;
pub mod scale;
pub mod spawn;
mod summary;
pub mod template;
pub mod usage;

pub use summary::{LatencySummary, ms};
