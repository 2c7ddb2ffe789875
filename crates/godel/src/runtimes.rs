//! Which runtimes this binary registers and how each is built from the
//! daemon's options. A runtime that cannot be built is noted with the reason
//! so `godel doctor` can say why it is unavailable.

use std::path::Path;

use godel_control::Control;
use godel_core::{Error, EventSink, Isolation, Result};

use crate::cli::ServeArgs;

/// Options that shape the runtimes.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Default process isolation of local runtimes.
    pub isolation: Isolation,
}

impl RuntimeOptions {
    pub fn from_args(args: &ServeArgs) -> Result<Self> {
        let isolation = match args.isolation.as_deref() {
            None | Some("sandbox") => Isolation::Sandbox,
            Some("none") => {
                tracing::warn!(
                    "ISOLATION IS OFF: agents run as the daemon's user with full access to this host; use only for trusted local work"
                );
                Isolation::None
            }
            Some(other) => {
                return Err(Error::invalid(format!(
                    "--isolation {other:?}: use sandbox or none"
                )));
            }
        };
        Ok(RuntimeOptions { isolation })
    }
}

/// Work that must happen before anything else in `main` (e.g. a sandbox init re-exec).
pub fn early_init() {
    godel_sandbox::maybe_run_init();
}

/// Build and register every runtime this machine can offer.
pub async fn register_all(
    control: &Control,
    home: &Path,
    opts: &RuntimeOptions,
    events: EventSink,
) {
    let _ = opts;
    register_worktree(control, home, events.clone());
    for name in ["microvm", "kata", "e2b"] {
        control.note_unregistered(name, "not built into this binary yet");
    }
}

fn register_worktree(control: &Control, home: &Path, events: EventSink) {
    let sandbox = godel_sandbox::NamespaceIsolator::new(godel_sandbox::NamespaceOptions {
        init: Some(godel_sandbox::InitProgram::SelfExe),
        events: events.clone(),
        ..Default::default()
    });
    let cfg = godel_worktree::WorktreeConfig::new(home)
        .with_events(events)
        .with_sandbox(std::sync::Arc::new(sandbox));
    match godel_worktree::WorktreeProvider::new(cfg) {
        Ok(p) => control.register(std::sync::Arc::new(p)),
        Err(e) => control.note_unregistered("worktree", e.message),
    }
}

/// Extra listeners (E2B) started by `godel serve`.
pub async fn serve_extra<F, Fut>(
    control: &std::sync::Arc<Control>,
    args: &ServeArgs,
    tasks: &mut tokio::task::JoinSet<std::io::Result<()>>,
    stopped: &F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = (control, tasks, stopped);
    if args.e2b_listen.is_some() {
        return Err(Error::unavailable(
            "the E2B-compatible API is not built into this binary yet",
        ));
    }
    Ok(())
}
