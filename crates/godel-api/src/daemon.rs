//! The daemon's life from start to stop, in order, so `godel serve` (and any
//! embedder) only parses its flags and names its runtimes:
//!
//! 1. open the control plane on `$GODEL_HOME` and register the runtimes;
//! 2. make the teams of the config file exist, reconcile what survived the
//!    last run (re-adopt or report lost), restore what `--preserve` parked,
//!    release warm sandboxes of the last run;
//! 3. start health monitors, warm pools, the time-to-live reaper and the
//!    metering tick (usage flush, budgets, rollout steps);
//! 4. serve the native API on the Unix socket (and TCP), and the E2B API
//!    when asked, until the shutdown future resolves;
//! 5. optionally park every running sandbox (`--preserve`), stop the pools,
//!    let in-flight requests finish (10 s at most), remove the socket, and
//!    let each runtime stop its own warm jails, VMs and helpers (sandboxes
//!    keep running for the next start to adopt).

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use godel_control::{Control, ReplicaConfig, ReplicaRegistration, Settings, Store, event_channel};
use godel_core::{Error, EventSink, Result};
use tokio::sync::watch;

/// What the daemon serves and how.
pub struct DaemonConfig {
    pub home: PathBuf,
    pub settings: Settings,
    /// TCP address of the native API (bearer tokens required).
    pub listen: Option<String>,
    /// TCP address of the E2B-compatible API.
    pub e2b_listen: Option<String>,
    /// Domain of sandbox hosts on the E2B listener (`<port>-<id>.<domain>`
    /// port URLs, returned as `domain` by create); `None` = `localhost`.
    pub e2b_domain: Option<String>,
    /// Park every running sandbox at shutdown and restore it at the next start.
    pub preserve: bool,
    /// How often the reaper looks for sandboxes whose time to live ran out.
    pub reaper_interval: Duration,
    /// The store's URL (`postgres://…` or a SQLite path); `None`: SQLite
    /// at `$GODEL_HOME/godel.db`.
    pub database: Option<String>,
    /// Native API address peers forward to (`None`: derived from `listen`).
    pub advertise: Option<String>,
    /// E2B API address peers forward to (`None`: derived from `e2b_listen`).
    pub advertise_e2b: Option<String>,
    /// How long this replica's lease lasts without renewal.
    pub lease: Duration,
    /// This replica's id (`None`: `$GODEL_HOME/replica-id`, made once).
    pub replica_id: Option<String>,
}

/// Registers the runtimes on a fresh control plane; providers report events into the sink.
pub type Registrar<'a> = Box<
    dyn FnOnce(Arc<Control>, EventSink) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>
        + Send
        + 'a,
>;

/// Run the daemon until `shutdown` resolves (or a listener fails).
pub async fn run(
    cfg: DaemonConfig,
    register: Registrar<'_>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let home = &cfg.home;
    std::fs::create_dir_all(home)
        .map_err(|e| Error::io(format!("create {}", home.display()), &e))?;
    let _ = std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700));
    let store = match &cfg.database {
        Some(url) => Store::open_url(url)?,
        None => Store::open(&home.join("godel.db"))?,
    };
    let replica_id = match &cfg.replica_id {
        Some(id) => crate::replica::check_id(id)?,
        None => crate::replica::home_id(home)?,
    };
    let mut settings = cfg.settings.clone();
    settings.replica_id = Some(replica_id.clone());
    let control = Control::with_store(home, store, settings)?;
    let (sink, rx) = event_channel();
    control.attach_event_receiver(rx);
    register(control.clone(), sink).await;
    // Bind first: the addresses peers forward to are registered with the lease.
    let tcp = match &cfg.listen {
        Some(addr) => Some(bind_tcp(addr, "native API").await?),
        None => None,
    };
    let e2b_tcp = match &cfg.e2b_listen {
        Some(addr) => Some(bind_tcp(addr, "E2B API").await?),
        None => None,
    };
    let registration = ReplicaRegistration {
        id: replica_id,
        advertise: crate::replica::advertise(cfg.advertise.as_deref(), tcp.as_ref())?,
        advertise_e2b: crate::replica::advertise(cfg.advertise_e2b.as_deref(), e2b_tcp.as_ref())?,
        host: crate::replica::host_name(),
    };
    let info = control.store_info();
    tracing::info!(
        replica = %registration.id,
        store = %info.engine,
        at = %info.location,
        advertise = %registration.advertise,
        "joining"
    );
    control.join_replicas(&ReplicaConfig {
        registration,
        lease: cfg.lease,
    })?;
    start(&control).await?;
    control.start_lease();
    control.start_reaper(cfg.reaper_interval);
    control.start_metering();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let sock = home.join("godel.sock");
    let unix = crate::bind_unix(&sock)
        .map_err(|e| Error::io(format!("listen on {}", sock.display()), &e))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::serve_unix(unix, control.clone(), stopped()));
    tracing::info!(socket = %sock.display(), "godel API listening");
    if let Some(tcp) = tcp {
        tracing::info!(addr = %local(&tcp), "godel API listening on TCP (bearer token required)");
        tasks.spawn(crate::serve_tcp(tcp, control.clone(), stopped()));
    }
    if let Some(tcp) = e2b_tcp {
        let e2b = crate::e2b::ServeConfig {
            token_secret: e2b_secret(home)?,
            domain: Some(
                cfg.e2b_domain
                    .clone()
                    .unwrap_or_else(|| "localhost".to_string()),
            ),
            ..Default::default()
        };
        tracing::info!(
            addr = %local(&tcp),
            "E2B-compatible API listening (E2B_API_URL=E2B_SANDBOX_URL=http://ADDR, E2B_API_KEY=<godel team token>)"
        );
        tasks.spawn(crate::e2b::serve(tcp, control.clone(), e2b, stopped()));
    }
    eprintln!("godel is serving on {} (Ctrl-C to stop)", sock.display());

    tokio::select! {
        _ = shutdown => {}
        Some(r) = tasks.join_next() => {
            if let Ok(Err(e)) = r { tracing::error!(error = %e, "a listener failed"); }
        }
    }
    if cfg.preserve {
        match control.preserve_all().await {
            Ok(r) => tracing::info!(
                preserved = r.done.len(),
                failed = r.failed.len(),
                "snapshotted and stopped running sandboxes"
            ),
            Err(e) => tracing::error!(error = %e, "preserving sandboxes failed"),
        }
    }
    control.stop_pools().await;
    if let Err(e) = control.flush_usage() {
        tracing::warn!(error = %e, "could not write usage at shutdown");
    }
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within 10 s; exiting anyway");
    }
    let _ = std::fs::remove_file(&sock);
    control.shutdown_runtimes().await;
    drop(control);
    tracing::info!("stopped; live sandboxes keep running and are re-adopted on the next start");
    Ok(())
}

/// Steps 2 and 3 (without the reaper): bring the state of the last run back.
async fn start(control: &Arc<Control>) -> Result<()> {
    control.ensure_config_teams()?;
    let report = control.reconcile().await?;
    tracing::info!(
        adopted = report.adopted.len(),
        lost = report.lost.len(),
        snapshots_reimported = report.snapshots_reimported.len(),
        "reconciled state from the last run"
    );
    for (id, why) in &report.lost {
        tracing::warn!(runtime = %id, reason = %why, "sandbox lost");
    }
    let released = control.release_lost_while_away().await;
    if !released.is_empty() {
        tracing::info!(
            released = released.len(),
            "released sandboxes reported lost while this replica was away"
        );
    }
    let restored = control.restore_preserved().await?;
    if !restored.done.is_empty() || !restored.failed.is_empty() {
        tracing::info!(
            restored = restored.done.len(),
            failed = restored.failed.len(),
            "restored sandboxes preserved at the last shutdown"
        );
    }
    control.start_health();
    control.release_stale_pool_sandboxes().await;
    control.start_pools()
}

async fn bind_tcp(addr: &str, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listen on {addr} ({what})"), &e))
}

fn local(l: &tokio::net::TcpListener) -> String {
    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// The secret envd access tokens derive from, kept in `$GODEL_HOME` so
/// tokens stay valid across restarts.
fn e2b_secret(home: &Path) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join("e2b-secret");
    if let Ok(s) = std::fs::read(&path)
        && s.len() >= 32
    {
        return Ok(s);
    }
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| Error::io("read /dev/urandom", &e))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
    f.write_all(&secret)
        .map_err(|e| Error::io("write e2b secret", &e))?;
    Ok(secret)
}
