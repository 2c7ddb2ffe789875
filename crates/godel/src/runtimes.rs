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
    let Some(addr) = &args.e2b_listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listen on {addr} (E2B API)"), &e))?;
    let cfg = godel_e2b::ServeConfig {
        token_secret: e2b_secret(control.home())?,
        ..Default::default()
    };
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "E2B-compatible API listening (E2B_API_URL=E2B_SANDBOX_URL=http://ADDR, E2B_API_KEY=<godel team token>)"
    );
    tasks.spawn(godel_api::e2b::serve_e2b(
        listener,
        control.clone(),
        cfg,
        stopped(),
    ));
    Ok(())
}

/// The secret envd access tokens derive from, kept in `$GODEL_HOME` so
/// tokens stay valid across restarts.
fn e2b_secret(home: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join("e2b-secret");
    if let Ok(s) = std::fs::read(&path)
        && s.len() >= 32
    {
        return Ok(s);
    }
    let secret: Vec<u8> = (0..2).flat_map(|_| *uuid_bytes()).collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
    std::io::Write::write_all(&mut f, &secret).map_err(|e| Error::io("write e2b secret", &e))?;
    Ok(secret)
}

fn uuid_bytes() -> Box<[u8; 16]> {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    Box::new(b)
}
