//! `godel serve`: open state, register runtimes, reconcile what survived the
//! last run, then serve the API on the Unix socket (and TCP when asked) until
//! SIGTERM or SIGINT, finishing in-flight requests before exiting.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use godel_control::{Control, Settings, event_channel};
use godel_core::{Error, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::ServeArgs;
use crate::runtimes::{RuntimeOptions, register_all};

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GODEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(home: PathBuf, args: ServeArgs) -> Result<()> {
    init_tracing();
    std::fs::create_dir_all(&home)
        .map_err(|e| Error::io(format!("create {}", home.display()), &e))?;
    let _ = std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700));
    let env = crate::cmd::admin::config_env(&home);
    let config = godel_policy::load(args.config.as_deref(), &env)?;
    let mut args = args;
    args.listen = args.listen.or(config.server.listen.clone());
    args.e2b_listen = args.e2b_listen.or(config.server.e2b_listen.clone());
    if args.isolation.is_none() && config.server.isolation == godel_core::Isolation::None {
        args.isolation = Some("none".into());
    }
    let mut opts = RuntimeOptions::from_args(&args)?;
    opts.config = config.clone();
    let settings = Settings {
        isolation_override: (opts.isolation == godel_core::Isolation::None)
            .then_some(godel_core::Isolation::None),
        default_runtime: config.defaults.runtime.clone(),
        config: config.clone(),
        ..Settings::default()
    };
    let control = Control::open(&home, settings)?;
    let (sink, rx) = event_channel();
    control.attach_event_receiver(rx);
    register_all(&control, &home, &opts, sink).await;
    // Teams of the config file exist (quotas and chains stay in the file,
    // merged at each spawn; fields set with `godel team create` win).
    for name in config.teams.keys() {
        if control.store().get_team(name)?.is_none() {
            control.store().upsert_team(&godel_control::TeamRecord {
                name: name.clone(),
                ..Default::default()
            })?;
        }
    }
    let report = control.reconcile().await?;
    tracing::info!(
        adopted = report.adopted.len(),
        lost = report.lost.len(),
        snapshots_reimported = report.snapshots_reimported.len(),
        "reconciled state from the last run"
    );
    for (id, why) in &report.lost {
        tracing::warn!(runtime = %id, reason = %why, "runtime lost");
    }
    let restored = control.restore_preserved().await?;
    if !restored.done.is_empty() || !restored.failed.is_empty() {
        tracing::info!(
            restored = restored.done.len(),
            failed = restored.failed.len(),
            "restored runtimes preserved at the last shutdown"
        );
    }
    control.start_health();
    // Warm runtimes of the last run are not tracked by the new pools: release them.
    for r in control.list(&godel_control::Caller::Admin, false)? {
        if r.team == godel_control::POOL_TEAM {
            let _ = control
                .terminate(&godel_control::Caller::Admin, &r.id)
                .await;
        }
    }
    control.start_pools()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let sock = home.join("godel.sock");
    let unix = godel_api::bind_unix(&sock)
        .map_err(|e| Error::io(format!("listen on {}", sock.display()), &e))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(godel_api::serve_unix(unix, control.clone(), stopped()));
    tracing::info!(socket = %sock.display(), "godel API listening");
    if let Some(addr) = &args.listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen on {addr}"), &e))?;
        tracing::info!(addr = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), "godel API listening on TCP (bearer token required)");
        tasks.spawn(godel_api::serve_tcp(tcp, control.clone(), stopped()));
    }
    crate::runtimes::serve_extra(&control, &args, &mut tasks, &stopped).await?;
    eprintln!("godel is serving on {} (Ctrl-C to stop)", sock.display());

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("install SIGTERM handler", &e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("install SIGINT handler", &e))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        Some(r) = tasks.join_next() => {
            if let Ok(Err(e)) = r { tracing::error!(error = %e, "a listener failed"); }
        }
    }
    if args.preserve {
        match control.preserve_all().await {
            Ok(r) => tracing::info!(
                preserved = r.done.len(),
                failed = r.failed.len(),
                "snapshotted and stopped running runtimes"
            ),
            Err(e) => tracing::error!(error = %e, "preserving runtimes failed"),
        }
    }
    control.stop_pools().await;
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within 10 s; exiting anyway");
    }
    let _ = std::fs::remove_file(&sock);
    drop(control);
    tracing::info!("stopped; live runtimes keep running and are re-adopted on the next start");
    Ok(())
}
