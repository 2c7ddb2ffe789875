//! Read-only views the dashboard (`/ui`) draws and scripts can read too:
//! `/v1/overview` (agents by team, runtime and state; spawn and error rates;
//! circuit breakers; warm-pool fill; queue depth), `/v1/runtimes/{id}/activity`
//! (one agent's status, state history, recent commands, usage samples and
//! events) and `/v1/benchmarks` (the latest `godel bench` results on disk).
//! Each is scoped like every other route: a team token sees its own agents.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use chrono::{DateTime, Utc};
use godel_control::control::{ExecRecord, PoolFill, SpawnRates, UsageSample};
use godel_control::{Caller, Control};
use godel_core::{Error, Event, SandboxInfo};
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;

/// Agents of one team, runtime and state.
#[derive(Debug, Serialize)]
pub struct AgentCount {
    pub team: String,
    pub runtime: String,
    pub state: String,
    pub count: u64,
}

/// A runtime's circuit breaker.
#[derive(Debug, Serialize)]
pub struct CircuitView {
    pub runtime: String,
    pub state: &'static str,
}

/// Spawns waiting for a team's quota.
#[derive(Debug, Serialize)]
pub struct QueueView {
    pub team: String,
    pub depth: usize,
}

/// Use against a limit (`limit` unset: unlimited).
#[derive(Debug, Serialize)]
pub struct Gauge {
    pub used: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
}

/// A team's quota use.
#[derive(Debug, Serialize)]
pub struct TeamQuotaView {
    pub team: String,
    pub agents: Gauge,
    /// vCPUs.
    pub cpu: Gauge,
    pub memory_bytes: Gauge,
    pub disk_bytes: Gauge,
}

/// `GET /v1/overview`.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub at: DateTime<Utc>,
    /// Live (not stopped) agents.
    pub agents: Vec<AgentCount>,
    pub total: u64,
    /// Spawns of the last five minutes.
    pub spawns: SpawnRates,
    pub circuits: Vec<CircuitView>,
    pub pools: Vec<PoolFill>,
    pub queues: Vec<QueueView>,
    /// Quota use of each team the caller sees.
    pub teams: Vec<TeamQuotaView>,
    /// Registered runtimes.
    pub runtimes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// Window of the spawn rates, seconds (default 300, at most 3600).
    #[serde(default)]
    window_secs: Option<u64>,
}

pub async fn overview(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<OverviewQuery>,
) -> ApiResult<Json<Overview>> {
    let window = q.window_secs.unwrap_or(300);
    if !(1..=3600).contains(&window) {
        return Err(
            Error::invalid(format!("window_secs: {window} is not between 1 and 3600")).into(),
        );
    }
    let mut by: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let list = c.list(&caller, false)?;
    for r in &list {
        *by.entry((r.team.clone(), r.runtime.clone(), r.state.to_string()))
            .or_default() += 1;
    }
    let mut names: Vec<String> = c
        .list_teams(&caller)?
        .into_iter()
        .map(|t| t.name)
        .chain(list.iter().map(|r| r.team.clone()))
        .chain(caller.team_filter().map(String::from))
        .filter(|t| t != godel_control::POOL_TEAM)
        .collect();
    names.sort();
    names.dedup();
    let mut teams = Vec::new();
    for team in names {
        teams.push(team_quota(&c, team)?);
    }
    let agents = by
        .into_iter()
        .map(|((team, runtime, state), count)| AgentCount {
            team,
            runtime,
            state,
            count,
        })
        .collect();
    Ok(Json(Overview {
        at: c.now(),
        agents,
        total: list.len() as u64,
        spawns: c
            .activity()
            .spawn_rates(Duration::from_secs(window), caller.team_filter()),
        circuits: c
            .circuit_states()
            .into_iter()
            .map(|(runtime, state)| CircuitView { runtime, state })
            .collect(),
        pools: c.pool_fill(&caller),
        queues: c
            .queue_depths(&caller)
            .into_iter()
            .map(|(team, depth)| QueueView { team, depth })
            .collect(),
        teams,
        runtimes: c.provider_names(),
    }))
}

fn team_quota(c: &Control, team: String) -> godel_core::Result<TeamQuotaView> {
    let (_, q) = c.team_policy(&team)?;
    let u = c.store().team_usage(&team)?;
    let g = |used: u64, limit: Option<u64>, scale: f64| Gauge {
        used: used as f64 / scale,
        limit: limit.map(|l| l as f64 / scale),
    };
    Ok(TeamQuotaView {
        agents: g(u.agents, q.max_agents, 1.0),
        cpu: g(u.cpu_millis, q.max_cpu_millis, 1000.0),
        memory_bytes: g(u.memory_bytes, q.max_memory_bytes, 1.0),
        disk_bytes: g(u.disk_bytes, q.max_disk_bytes, 1.0),
        team,
    })
}

/// `GET /v1/runtimes/{id}/activity`.
#[derive(Debug, Serialize)]
pub struct AgentActivity {
    /// The status now, with usage when the runtime reports it.
    pub runtime: SandboxInfo,
    /// `state_changed` events of this agent, oldest first.
    pub states: Vec<Event>,
    /// Recent commands, newest first.
    pub execs: Vec<ExecRecord>,
    /// Usage samples, oldest first (one per status read).
    pub samples: Vec<UsageSample>,
    /// The agent's latest events, oldest first.
    pub events: Vec<Event>,
}

/// Events of one agent returned at most.
const AGENT_EVENTS: usize = 200;

pub async fn activity(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentActivity>> {
    let runtime = c.status(&caller, &id).await?;
    let all = c
        .store()
        .list_events(0, Some(&runtime.team), Some(&id), 100_000)?;
    let states = all
        .iter()
        .filter(|e| e.kind == godel_core::EventKind::StateChanged)
        .cloned()
        .collect();
    let events = all[all.len().saturating_sub(AGENT_EVENTS)..].to_vec();
    Ok(Json(AgentActivity {
        execs: c.activity().execs(&id),
        samples: c.activity().samples(&id),
        runtime,
        states,
        events,
    }))
}

/// One suite's latest result.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// The suite (the file's name without `.json`).
    pub suite: String,
    pub modified: Option<DateTime<Utc>>,
    pub result: serde_json::Value,
}

/// Where `godel bench` keeps its latest results: `$GODEL_BENCH_RESULTS`, or
/// `$GODEL_HOME/bench-results` (the same rule as `godel bench report`).
fn bench_dir(c: &Control) -> PathBuf {
    std::env::var_os("GODEL_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| c.home().join("bench-results"))
}

/// Result files larger than this are skipped (a listing, not a download).
const BENCH_FILE_LIMIT: u64 = 4 * 1024 * 1024;

pub async fn benchmarks(State(c): State<Arc<Control>>) -> ApiResult<Json<Vec<BenchResult>>> {
    let dir = bench_dir(&c);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Json(Vec::new()));
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let Some(suite) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() || meta.len() > BENCH_FILE_LIMIT {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(result) = serde_json::from_str(&text) else {
            tracing::warn!(file = %p.display(), "benchmark result is not JSON; skipped");
            continue;
        };
        out.push(BenchResult {
            suite: suite.to_string(),
            modified: meta.modified().ok().map(DateTime::<Utc>::from),
            result,
        });
    }
    out.sort_by(|a, b| a.suite.cmp(&b.suite));
    Ok(Json(out))
}
