//! `godel serve`: read the flags and the config file, name this binary's
//! runtimes, and hand over to [`godel_api::daemon::run`], which owns the
//! daemon's start and stop sequence, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use godel_api::daemon::{DaemonConfig, Registrar};
use godel_control::Settings;
use godel_core::{Error, Result};
use tokio::signal::unix::{SignalKind, signal};

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

/// The lease period: `--lease-secs` / `database.lease_secs`, 10 s by default.
fn lease(secs: Option<f64>) -> Result<Duration> {
    match secs {
        None => Ok(Duration::from_secs(10)),
        Some(s) if s.is_finite() && (0.3..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(Error::invalid(format!(
            "lease_secs: {s} is not a lease period (0.3 to 3600 seconds)"
        ))),
    }
}

pub async fn run(home: PathBuf, args: ServeArgs) -> Result<()> {
    init_tracing();
    let env = crate::cmd::admin::config_env(&home);
    let config = godel_policy::load(args.config.as_deref(), &env)?;
    let mut args = args;
    args.listen = args.listen.or(config.server.listen.clone());
    args.e2b_listen = args.e2b_listen.or(config.server.e2b_listen.clone());
    if args.isolation.is_none() && config.server.isolation == godel_core::Isolation::None {
        args.isolation = Some("none".into());
    }
    let db = config.database.clone();
    let mut opts = RuntimeOptions::from_args(&args)?;
    opts.config = config.clone();
    let settings = Settings {
        isolation_override: (opts.isolation == godel_core::Isolation::None)
            .then_some(godel_core::Isolation::None),
        default_runtime: config.defaults.runtime.clone(),
        config,
        ..Settings::default()
    };
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("install SIGTERM handler", &e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("install SIGINT handler", &e))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let cfg = DaemonConfig {
        home: home.clone(),
        settings,
        listen: args.listen.clone(),
        e2b_listen: args.e2b_listen.clone(),
        e2b_domain: Some(args.e2b_domain.clone()),
        preserve: args.preserve,
        reaper_interval: Duration::from_secs(1),
        database: args.database.clone().or(db.url),
        advertise: args.advertise.clone().or(db.advertise),
        advertise_e2b: args.advertise_e2b.clone().or(db.advertise_e2b),
        lease: lease(args.lease_secs.or(db.lease_secs))?,
        replica_id: args.replica_id.clone(),
    };
    let register: Registrar<'_> = Box::new(move |control, sink| {
        Box::pin(async move { register_all(&control, &home, &opts, sink).await })
    });
    godel_api::daemon::run(cfg, register, shutdown).await
}
