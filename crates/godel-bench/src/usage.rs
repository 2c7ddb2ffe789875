//! `godel bench usage`: how fast usage reports answer with a history of
//! `agents` sandboxes × `days` days of metered rows (1,000 × 30 by
//! default) spread over 10 teams, in-process (`Control::usage`) and
//! through the real API on a scratch Unix socket (`GET /v1/usage`), for
//! every grouping, admin (all teams) and one team, over all time and
//! `since` a month ago (which reads every day row rather than a rollup).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use godel_control::store::UsagePart;
use godel_control::{Caller, Control, Settings};
use godel_core::{Error, Result};
use serde::Serialize;

use crate::LatencySummary;

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub struct UsageBench {
    pub agents: usize,
    pub days: usize,
    pub rows: usize,
    pub seed_ms: f64,
    /// `(case, summary)`: in-process and over the API.
    pub cases: Vec<(String, LatencySummary)>,
}

/// Run it; `api(socket, path)` makes one GET through the daemon's API.
pub async fn run<A>(agents: usize, days: usize, iterations: usize, api: A) -> Result<UsageBench>
where
    A: AsyncFn(&Path, &str) -> Result<serde_json::Value>,
{
    let scratch = tempfile::tempdir().map_err(|e| Error::io("scratch dir", &e))?;
    let home = scratch.path().join("home");
    let control = Control::open(&home, Settings::default())?;
    let t = Instant::now();
    let today = Utc::now().date_naive();
    let mut rows = Vec::with_capacity(agents * days);
    for a in 0..agents {
        for d in 0..days {
            let day = (today - chrono::Duration::days(d as i64))
                .format("%Y-%m-%d")
                .to_string();
            let ms = 3_600_000u64 + (a as u64 * 37 + d as u64 * 11) % 1_000_000;
            let part = UsagePart {
                key: String::new(),
                team: format!("team-{}", a % 10),
                runtime: if a % 3 == 0 { "microvm" } else { "worktree" }.into(),
                run_ms: ms,
                vcpu_milli_ms: ms * 2000,
                mem_kib_ms: ms * 4 * 1024 * 1024,
                execs: (a + d) as u64 % 50,
                bytes: (a * d) as u64 * 1000,
            };
            rows.push((format!("rt-bench{a:05}"), day, part));
        }
    }
    control.store().insert_usage(&rows)?;
    let seed_ms = t.elapsed().as_secs_f64() * 1000.0;

    let sock = home.join("godel.sock");
    let listener = godel_api::bind_unix(&sock).map_err(|e| Error::io("bind bench socket", &e))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(godel_api::serve_unix(
        listener,
        control.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut cases = Vec::new();
    let month_ago = (today - chrono::Duration::days(days as i64))
        .format("%Y-%m-%d")
        .to_string();
    for (name, team, by, since) in [
        ("all teams by agent", None, "agent", None),
        (
            "all teams by agent since",
            None,
            "agent",
            Some(month_ago.as_str()),
        ),
        ("all teams by day", None, "day", None),
        ("all teams by runtime", None, "runtime", None),
        ("one team by agent", Some("team-3"), "agent", None),
    ] {
        let req = godel_control::control::UsageRequest {
            team: team.map(String::from),
            since: since.map(String::from),
            by: Some(by.into()),
        };
        let mut direct = Vec::with_capacity(iterations);
        let mut http = Vec::with_capacity(iterations);
        let mut path = format!("/v1/usage?by={by}");
        if let Some(t) = team {
            path.push_str(&format!("&team={t}"));
        }
        if let Some(s) = since {
            path.push_str(&format!("&since={s}"));
        }
        for _ in 0..iterations {
            let t = Instant::now();
            let r = control.usage(&Caller::Admin, &req)?;
            direct.push(t.elapsed());
            std::hint::black_box(r);
            let t = Instant::now();
            let v = api(&sock, &path).await?;
            http.push(t.elapsed());
            std::hint::black_box(v);
        }
        cases.push((format!("{name} (in-process)"), LatencySummary::of(&direct)));
        cases.push((format!("{name} (GET {path})"), LatencySummary::of(&http)));
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(UsageBench {
        agents,
        days,
        rows: rows.len(),
        seed_ms,
        cases,
    })
}
