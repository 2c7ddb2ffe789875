//! godel-worktree: godel's embedded runtime. An agent's workspace comes from
//! a git repository and ref, in one of two modes:
//!
//! - `cow` (default): an overlayfs mount whose lower layer is a shared,
//!   cached checkout of the commit, so spawning does not grow with the repo
//!   once that checkout exists (the first spawn of a commit pays for it);
//! - `git-worktree`: `git worktree add --detach` (the seed system's way).
//!
//! Processes run through a `godel_sandbox::Jail` (the isolator is picked
//! per spawn), file operations are confined to the workspace with cap-std,
//! and a snapshot is a git commit of the whole tree (untracked and ignored
//! files included) in a godel-owned store; restore and fork materialise it
//! again.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn f() -> godel_core::Result<()> {
//! use godel_worktree::{WorktreeConfig, WorktreeProvider};
//! let provider = WorktreeProvider::new(WorktreeConfig::new("/var/lib/godel"))?;
//! let provider: Arc<dyn godel_core::RuntimeProvider> = Arc::new(provider);
//! # Ok(()) }
//! ```

pub mod delta;
pub mod dockerfile;
pub mod exec;
pub mod files;
pub mod git;
pub mod layout;
pub mod loopfs;
pub mod lower;
pub mod objects;
pub mod overlay;
pub mod provider;
pub mod snapshot;
pub mod tarball;
pub mod template;
pub mod workspace;

pub use provider::{WorktreeConfig, WorktreeProvider};
