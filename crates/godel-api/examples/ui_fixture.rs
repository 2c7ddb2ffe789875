//! A daemon for measuring the dashboard with many agents: the real control
//! plane and the real TCP app (`/v1` and `/ui`) over godel-testkit's
//! `FakeRuntime` (registered as `worktree`; its sandboxes are host
//! directories), with N agents spawned across four teams, each with one
//! command run and a budget. Prints one JSON line `{"url", "token",
//! "agents"}` and serves until stdin closes.
//!
//! `cargo run -p godel-api --example ui_fixture -- 1000` (used by
//! scripts/bench-ui.sh).

use std::sync::Arc;

use godel_control::control::BudgetRequest;
use godel_control::{Caller, Control, Settings, event_channel};
use godel_core::{ExecRequest, SpawnSpec};
use godel_testkit::FakeRuntime;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let home = tempfile::tempdir()?;
    let settings = Settings {
        config: godel_policy::config::from_toml_str_with(
            "[defaults]\nfallback = [\"worktree\"]\n[prices.worktree]\nvcpu_second = 0.001\ngib_second = 0.001\n",
            &Default::default(),
            &["worktree"],
        )?,
        ..Settings::default()
    };
    let control = Control::open(home.path(), settings)?;
    let (_sink, rx) = event_channel();
    control.attach_event_receiver(rx);
    control.register(Arc::new(FakeRuntime::new("worktree")));
    let teams = ["alpha", "beta", "gamma", "delta"];
    for t in teams {
        control.set_budget(
            &Caller::Admin,
            BudgetRequest {
                team: t.into(),
                agent: None,
                limit_usd: 50.0,
                period: None,
                policy: None,
            },
        )?;
    }
    for i in 0..n {
        let spec = SpawnSpec {
            team: Some(teams[i % teams.len()].into()),
            ..Default::default()
        };
        let info = control.spawn(&Caller::Admin, spec).await?;
        if i % 50 == 0 {
            control
                .exec_collect(&Caller::Admin, &info.id, ExecRequest::new(["true"]))
                .await?;
        }
    }
    let token = control.create_token(&Caller::Admin, None, true)?.token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!(
        "{}",
        serde_json::json!({"url": url, "token": token, "agents": n})
    );
    let stop = async {
        let mut buf = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut buf)).await;
    };
    godel_api::serve_tcp(listener, control, stop).await?;
    drop(home);
    Ok(())
}
