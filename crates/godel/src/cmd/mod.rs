//! One function per CLI command; each maps to one or a few API calls.

pub mod admin;
pub mod bench;
pub mod costs;
pub mod extra;
pub mod files;
pub mod ports;
pub mod replicas;
pub mod runtime;
pub mod serve;
pub mod snapshot;
pub mod suites;
pub mod template;

use godel_core::Result;

use crate::Ctx;
use crate::cli::Command;

/// Run a client command; returns the process exit code.
pub async fn dispatch(ctx: &Ctx, cmd: Command) -> Result<i32> {
    match cmd {
        Command::Serve(_) => unreachable_serve(),
        Command::Spawn(a) => runtime::spawn(ctx, *a).await,
        Command::Exec(a) => runtime::exec(ctx, a).await,
        Command::Read { id, path } => files::read(ctx, &id, &path).await,
        Command::Write { id, path } => files::write(ctx, &id, &path).await,
        Command::Cp { src, dst } => files::cp(ctx, &src, &dst).await,
        Command::Ls { all } => runtime::ls(ctx, all).await,
        Command::Status { id } => runtime::status(ctx, &id).await,
        Command::Rm { id, snapshot } => runtime::rm(ctx, &id, snapshot).await,
        Command::Pause { id } => runtime::pause_resume(ctx, &id, "pause").await,
        Command::Resume { id } => runtime::pause_resume(ctx, &id, "resume").await,
        Command::Ttl { id, secs } => runtime::ttl(ctx, &id, &secs).await,
        Command::Snapshot(s) => snapshot::run(ctx, s).await,
        Command::Template(t) => template::run(ctx, t).await,
        Command::Restore { snapshot } => snapshot::restore(ctx, &snapshot).await,
        Command::Fork { snapshot, count } => snapshot::fork(ctx, &snapshot, count).await,
        Command::Port { id, port } => ports::port(ctx, &id, port).await,
        Command::Forward { id, port, local } => {
            ports::forward(ctx, &id, port, local.as_deref()).await
        }
        Command::Token(t) => admin::token(ctx, t).await,
        Command::Team(t) => admin::team(ctx, t).await,
        Command::Events {
            since,
            limit,
            team,
            kind,
            follow,
        } => costs::events(ctx, since, limit, team, kind, follow).await,
        Command::Usage(a) => costs::usage(ctx, a).await,
        Command::Budget(b) => costs::budget(ctx, b).await,
        Command::Migrate(a) => costs::migrate(ctx, a).await,
        Command::Rollout(r) => costs::rollout(ctx, r).await,
        Command::Doctor => admin::doctor(ctx).await,
        Command::Replicas => replicas::run(ctx).await,
        Command::Bench(b) => bench::run(ctx, b).await,
        Command::Chaos(a) => suites::chaos(ctx, a).await,
        Command::Image(i) => extra::image(ctx, i).await,
        Command::Kube(k) => extra::kube(ctx, k),
        Command::Config(crate::cli::ConfigCmd::Check { config }) => {
            admin::config_check(ctx, config.as_deref())
        }
    }
}

fn unreachable_serve() -> Result<i32> {
    Err(godel_core::Error::internal(
        "serve is handled before dispatch",
    ))
}
