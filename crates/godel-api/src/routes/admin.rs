//! Health, doctor, teams, tokens, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use godel_control::control::CreatedToken;
use godel_control::{Caller, Control, RuntimeReport, TeamRecord, TokenFormat, TokenRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiResult;

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn doctor(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<RuntimeReport>> {
    Json(c.doctor_for(&caller).await)
}

pub async fn list_teams(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<TeamRecord>>> {
    Ok(Json(c.list_teams(&caller)?))
}

pub async fn create_team(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Json(team): Json<TeamRecord>,
) -> ApiResult<(StatusCode, Json<TeamRecord>)> {
    Ok((StatusCode::CREATED, Json(c.create_team(&caller, team)?)))
}

pub async fn delete_team(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.delete_team(&caller, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_tokens(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<TokenRecord>>> {
    Ok(Json(c.list_tokens(&caller)?))
}

/// Body of a token request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    admin: bool,
    /// `e2b` or `gdl`; unset: `e2b` for team tokens, `gdl` for admin tokens.
    #[serde(default)]
    format: Option<TokenFormat>,
}

pub async fn create_token(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    Ok((
        StatusCode::CREATED,
        Json(c.create_token_as(&caller, req.team.as_deref(), req.admin, req.format)?),
    ))
}

pub async fn revoke_token(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenRecord>> {
    Ok(Json(c.revoke_token(&caller, &id)?))
}

pub async fn metrics(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<impl IntoResponse> {
    let text = crate::metrics::render(&c, &caller)?;
    Ok((
        [(header::CONTENT_TYPE, godel_policy::metrics::CONTENT_TYPE)],
        text,
    ))
}

pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
