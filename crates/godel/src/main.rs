//! The `godel` binary: `godel serve` runs the daemon; every other command is
//! a thin client of its API. Errors print `CODE: message` on stderr and exit
//! non-zero with a code-specific status.

mod cli;
mod client;
mod cmd;
mod output;
mod runtimes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::Client;

/// What every client command gets.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
    pub home: PathBuf,
}

/// `$GODEL_HOME`, defaulting to `~/.godel`.
pub fn resolve_home(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        let base = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        base.join(".godel")
    })
}

fn main() -> ExitCode {
    runtimes::early_init();
    let cli = Cli::parse();
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("INTERNAL: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            output::print_error(&e, json);
            ExitCode::from(e.code.exit_code().clamp(1, 255) as u8)
        }
    }
}

async fn run(cli: Cli) -> godel_core::Result<i32> {
    let home = resolve_home(cli.home.clone());
    if let Command::Serve(args) = cli.command {
        return cmd::serve::run(home, args).await.map(|_| 0);
    }
    let client = Client::new(
        cli.url.as_deref(),
        cli.token.clone(),
        home.join("godel.sock"),
    )?;
    let ctx = Ctx {
        client,
        json: cli.json,
        home,
    };
    cmd::dispatch(&ctx, cli.command).await
}
