//! godel-testkit: what godel's tests share. It depends only on `godel-core`
//! and external crates, so every crate can dev-depend on it without a cycle.
//!
//! | item | for |
//! |---|---|
//! | [`FakeRuntime`] | a fake `RuntimeProvider` over host directories: real exec, real files, snapshots as copies, plus injectable faults, availability and call recording ([`fake`]) |
//! | [`local_exec`] | run an `ExecRequest` as a local process, streamed as an `ExecHandle` ([`exec`]) |
//! | [`require!`] / [`skip::check`] | skip a test visibly and countably when the machine lacks something ([`Need`]); fail instead when `GODEL_REQUIRE` demands it ([`skip`]) |
//!
//! ```ignore
//! let rt = Arc::new(godel_testkit::FakeRuntime::new("worktree"));
//! control.register(rt.clone());
//! rt.fail(godel_testkit::Op::Spawn, ErrorCode::Unavailable, 2);
//! // ... drive the control plane ...
//! assert_eq!(rt.count("spawn"), 3);
//! let dir = rt.dir(&info.id).unwrap(); // the runtime's workspace on the host
//! ```

pub mod exec;
pub mod fake;
mod fs;
pub mod skip;

pub use exec::{kill_group, local_exec};
pub use fake::{Behaviour, Call, FakeRuntime, Op};
pub use fs::copy_tree;
pub use skip::{Need, postgres_schema_url, postgres_url};
