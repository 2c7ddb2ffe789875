//! Costs and moves: usage reports, budgets, migrations between runtimes,
//! canary rollouts, and the stored event log as one JSON answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use godel_control::control::{
    BudgetRequest, BudgetStatus, MigrateRequest, MigrationReport, Rollout, RolloutRequest,
    UsageReport, UsageRequest,
};
use godel_control::{Caller, Control};
use godel_core::{Error, Event};
use serde::Deserialize;

use crate::error::ApiResult;

pub async fn usage(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UsageRequest>,
) -> ApiResult<Json<UsageReport>> {
    Ok(Json(c.usage(&caller, &q)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamQuery {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    agent: Option<String>,
}

pub async fn list_budgets(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<TeamQuery>,
) -> ApiResult<Json<Vec<BudgetStatus>>> {
    if q.agent.is_some() {
        return Err(Error::invalid("agent: not a filter of this listing; use team").into());
    }
    Ok(Json(c.budgets(&caller, q.team.as_deref())?))
}

pub async fn set_budget(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<BudgetRequest>,
) -> ApiResult<Json<BudgetStatus>> {
    Ok(Json(c.set_budget(&caller, req)?))
}

pub async fn delete_budget(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(team): Path<String>,
    Query(q): Query<TeamQuery>,
) -> ApiResult<StatusCode> {
    if q.team.is_some() {
        return Err(Error::invalid("team: given in the path already").into());
    }
    c.delete_budget(&caller, &team, q.agent.as_deref())?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn migrate(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<MigrateRequest>,
) -> ApiResult<Json<MigrationReport>> {
    Ok(Json(c.migrate(&caller, req).await?))
}

pub async fn list_rollouts(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<Rollout>> {
    Json(c.rollouts(&caller))
}

pub async fn start_rollout(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RolloutRequest>,
) -> ApiResult<(StatusCode, Json<Rollout>)> {
    Ok((StatusCode::CREATED, Json(c.start_rollout(&caller, req)?)))
}

pub async fn control_rollout(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path((team, action)): Path<(String, String)>,
) -> ApiResult<Json<Rollout>> {
    Ok(Json(c.control_rollout(&caller, &team, &action)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    since: Option<i64>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn event_log(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    Ok(Json(c.event_log(
        &caller,
        q.since.unwrap_or(0),
        q.team.as_deref(),
        q.kind.as_deref(),
        q.limit.unwrap_or(10_000),
    )?))
}
